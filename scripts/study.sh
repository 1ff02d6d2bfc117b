#!/usr/bin/env bash
# The study behind the product (docs/study/report.md): trains ResNet-18/34/50 with one recipe
# and one budget, evaluates every row and experiment, and writes the report. Every step is
# skipped when its output exists, and a training run killed half-way resumes from its
# checkpoint: run the same command again after an interruption, in this session or the next.
#
#   bash scripts/study.sh                      # CATALOG=../shared/catalog, WORK=data/study, OUT=docs/study
#   EPOCHS=4 SIZE=112 SAMPLE=1000 bash scripts/study.sh   # the defaults, as docs/study was made
#
# On a GPU machine: DEVICE=cuda SIZE=224 EPOCHS=12 bash scripts/study.sh (the budget the issue asks for there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/scripts/setup.sh")
cd "$root"
export GRADIO_ANALYTICS_ENABLED=False ANONYMIZED_TELEMETRY=False

CATALOG=${CATALOG:-../shared/catalog}
WORK=${WORK:-data/study}
OUT=${OUT:-docs/study}
EPOCHS=${EPOCHS:-4}        # one budget for every depth: epochs ...
SIZE=${SIZE:-112}          # ... at this input size, from random, the Lite0 teacher beside the labels
SAMPLE=${SAMPLE:-1000}     # products indexed by each experiment (the main rows index the whole catalog)
DEVICE=${DEVICE:-auto}
W=$WORK/weights
E=$WORK/eval
mkdir -p "$W/served" "$W/labels" "$E"

app() { "$venv/bin/python" app.py "$@"; }

train() {  # OUT_FILE MODEL [finetune flags]: skipped once the weights file exists
  local out=$1 model=$2; shift 2
  [ -f "$out" ] && return 0
  app finetune --catalog "$CATALOG" --model "$model" --device "$DEVICE" --quiet --out "$out" "$@"
}

evaluate() {  # OUT_DIR [evaluate flags]: skipped once its metrics.json exists
  local out=$1; shift
  [ -f "$out/metrics.json" ] && return 0
  app evaluate --catalog "$CATALOG" --db "$out.db" --held-out "$W/served/resnet18.pt" --quiet --out "$out" "$@"
}

# 1. Training: every depth with one recipe and budget, distilled from the frozen ImageNet Lite0;
#    ResNet-18 also without the teacher (same budget); Lite0 by its own recipe, from ImageNet.
for model in resnet18 resnet34 resnet50; do
  train "$W/served/$model.pt" "$model" --weights random --epochs "$EPOCHS" --image-size "$SIZE" \
    --teacher efficientnet_lite0
done
train "$W/labels/resnet18.pt" resnet18 --weights random --epochs "$EPOCHS" --image-size "$SIZE"
train "$W/served/efficientnet_lite0.pt" efficientnet_lite0

# 2. The rows: held-out products against the whole catalog.
served=(--weights auto --weights-dir "$W/served")
evaluate "$E/untrained" --weights random --models resnet18,resnet34,resnet50
evaluate "$E/trained" "${served[@]}" --models resnet18,resnet34,resnet50,efficientnet_lite0
evaluate "$E/labels-only" --weights "$W/labels/resnet18.pt" --models resnet18
evaluate "$E/lite0-zeroshot" --weights imagenet --models efficientnet_lite0

# 3. Preprocessing compatibility: each trained network under both framings at two input sizes.
pre=()
for framing in crop pad; do
  for size in "$SIZE" 224; do
    evaluate "$E/pre-$framing-$size" "${served[@]}" --models resnet18,resnet34,resnet50,efficientnet_lite0 \
      --catalog-sample "$SAMPLE" --framing "$framing" --input-size "$size"
    pre+=(--preprocessing "$framing@$size=$E/pre-$framing-$size")
  done
done

# 4. Data quality: index and queries degraded alike, on the best model and on each depth.
quality=()
for variant in original 60x80 120x160 jpeg20 jpeg50 jpeg90 textured; do
  case $variant in
    original) flags=() ;;
    jpeg*) flags=(--jpeg-quality "${variant#jpeg}") ;;
    textured) flags=(--background textured) ;;
    *) flags=(--resolution "$variant") ;;
  esac
  evaluate "$E/quality-$variant" "${served[@]}" --models resnet18,resnet34,resnet50,efficientnet_lite0 \
    --catalog-sample "$SAMPLE" "${flags[@]}"
  quality+=(--quality "$variant=$E/quality-$variant")
done

# 5. The report.
app study --out "$OUT" --commands scripts/study.sh \
  --row "resnet18-untrained=$E/untrained:resnet18" \
  --row "resnet34-untrained=$E/untrained:resnet34" \
  --row "resnet50-untrained=$E/untrained:resnet50" \
  --row "resnet18-trained=$E/trained:resnet18" \
  --row "resnet34-trained=$E/trained:resnet34" \
  --row "resnet50-trained=$E/trained:resnet50" \
  --row "resnet18-trained-labels-only=$E/labels-only:resnet18" \
  --row "efficientnet_lite0-zeroshot=$E/lite0-zeroshot:efficientnet_lite0" \
  --row "efficientnet_lite0-finetuned=$E/trained:efficientnet_lite0" \
  --training "resnet18-trained=$W/served/resnet18.pt" \
  --training "resnet34-trained=$W/served/resnet34.pt" \
  --training "resnet50-trained=$W/served/resnet50.pt" \
  --training "resnet18-trained-labels-only=$W/labels/resnet18.pt" \
  --training "efficientnet_lite0-finetuned=$W/served/efficientnet_lite0.pt" \
  "${pre[@]}" "${quality[@]}"
