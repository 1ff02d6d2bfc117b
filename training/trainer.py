"""The fine-tuning run: from a catalog and a starting point to a weights file `index`,
`search`, `serve` and `evaluate` accept with `--weights FILE`.

Two modes share one epoch loop (train, validate, checkpoint):
- full: the whole network trains on augmented views of the training products;
- head-only: the backbone is frozen, its features are computed once (a clean view and
  `head_views` augmented views per product, kept on disk for a resume), and only a linear
  projection after pooling trains: minutes on a CPU.
The loss is a cosine classifier's cross-entropy on articleType, plus `aux_weight` times that
of each auxiliary target (gender and masterCategory unless `aux_targets` says otherwise);
with `margin`, each is CosFace's (the true class must win by a margin in cosine).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from catalog import open_image, read_catalog
from catalog.errors import UserError
from embedding.embedders import check_model_name, load_embedder
from embedding.garments import GarmentParser
from embedding.weights_file import weights_payload
from training.augment import ShopperAugment, eval_transform
from training.checkpoint import CheckpointMismatch, atomic_save, cpu_state, load_checkpoint, rng_state, set_rng_state
from training.data import (
    IGNORE,
    AugmentedProducts,
    DecodedImages,
    LabelVocab,
    Split,
    epoch_batches,
    sample_products,
    short_side_size,
    split_products,
)
from training.distill import Teacher, distill_cosine
from training.model import COSINE_SCALE, RetrievalNet, early_layers, starting_backbone
from training.real_photos import (
    ProductsAndPhotos,
    RealPhotos,
    RealValidation,
    decode_photos,
    partial_label_loss,
    real_kind_precision,
)
from training.settings import PRIMARY, FinetuneSettings
from training.validate import ValidationImages, ValidationScores, embed_preprocessed, score


@dataclass
class FinetuneResult:
    out: Path
    history: list[dict]         # one entry per epoch; epoch 0 is the start, before any training
    seconds: float              # this process's wall time, resumed part only
    resumed_from: int           # epochs already done when this process started
    final: ValidationScores
    weights_id: str             # as `load_embedder` names the file: what an index records

    @property
    def before(self) -> dict | None:
        return next((h for h in self.history if h["epoch"] == 0), None)


def resolve_device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {text}: torch sees no CUDA GPU here; use --device cpu (or auto)")
    if not (text == "cpu" or text.startswith("cuda")):
        raise UserError(f"--device {text}: expected auto, cpu or cuda[:N]")
    return torch.device(text)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN's
    bf16 convolutions run about twice as fast as float32 ones; elsewhere they are emulated
    and slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without these probes: assume not
        return False


def choose_precision(setting: str, device: torch.device) -> str:
    """What `--precision auto` means here: bf16 on a GPU that has it (fp16 with a loss scaler
    on older ones) and on a CPU with native bf16; fp32 on any other CPU."""
    if setting != "auto":
        if device.type == "cpu" and setting == "fp16":
            raise UserError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def mixed_precision(device: torch.device, precision: str):
    """Autocast context factory and grad scaler for the chosen precision. Batch norm, the
    losses and the weights stay float32 under autocast; only convolutions and matrix
    products run in the lower precision."""
    if precision == "fp32":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 5% of steps (a random start's first updates are
    violent), then a cosine decay to 1% of `base`. A pure function of the step, so a resume
    continues the same schedule."""
    warmup = max(1, min(500, total // 20))
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def _loss(logits: dict[str, torch.Tensor], targets: torch.Tensor, settings: FinetuneSettings,
          allowed: torch.Tensor | None = None) -> torch.Tensor:
    """The catalog's label losses, and the real photos' partial-label loss on articleType for
    the rows `allowed` marks (training/real_photos.py)."""
    total = None
    if allowed is not None:
        part = partial_label_loss(logits[PRIMARY], allowed)
        total = settings.real_weight * part if part is not None else None
    for column, target in enumerate(settings.targets):
        wanted = targets[:, column]
        if target not in logits or not (wanted != IGNORE).any():
            continue
        weight = 1.0 if column == 0 else settings.aux_weight
        part = weight * nn.functional.cross_entropy(_with_margin(logits[target].float(), wanted, settings.margin),
                                                    wanted, ignore_index=IGNORE,
                                                    label_smoothing=settings.label_smoothing)
        total = part if total is None else total + part
    return total if total is not None else next(iter(logits.values())).sum() * 0


def _with_margin(logits: torch.Tensor, wanted: torch.Tensor, margin: float) -> torch.Tensor:
    """CosFace: the true class must win by `margin` in cosine, not just win. Retrieval ranks
    by cosine, so a margin in cosine is what pulls a product towards its class centre and
    away from the neighbouring classes, tightening the clusters the index searches."""
    if margin <= 0:
        return logits
    known = wanted != IGNORE
    onehot = nn.functional.one_hot(wanted.clamp(min=0), logits.shape[1]).to(logits.dtype)
    return logits - (margin * COSINE_SCALE) * onehot * known[:, None]


def _param_groups(params, weight_decay: float):
    # Decay only matrices and kernels: shrinking biases and batch-norm scales just hurts.
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _workers(settings: FinetuneSettings, device: torch.device) -> int:
    if settings.workers is not None:
        return settings.workers
    if device.type == "cuda":
        # The GPU waits for the views: every spare core makes them (on one H200, 7 loader
        # processes fed about 700 Lite0 views/s at 224 px; 14 fed Lite2's at 260 px as fast).
        return max(0, _cores() - 1)
    return min(4, max(0, _cores() - 1))


def _preparation_workers(settings: FinetuneSettings) -> int:
    """Processes that decode and cut out the images before training: every core, since nothing
    else runs meanwhile (`--workers` caps it as it caps the loaders)."""
    return settings.workers if settings.workers is not None else _cores()


def cpu_threads(settings: FinetuneSettings, device: torch.device, default: int | None = None) -> tuple[int, str]:
    """How many threads torch should compute with on the CPU, and why.

    On a CPU other jobs keep busy, OpenMP threads spend their time waiting for each other at
    every operation's barrier: measured here on 2 shared cores with a load of 5, one ResNet-18
    training step took 0.9 s with one thread and 5 s with two. So: one thread when other work
    already keeps every core busy, torch's default otherwise. What is busy is sampled now, not
    read from the load average, which lags by minutes: a run started right after another one
    ended saw "load 2.2" on an idle machine and trained ResNet-50 on one core of two.
    Asked again at every epoch (`_follow_the_cpu`), with `default` the count torch had before
    the run set one.
    """
    if settings.threads is not None:
        return settings.threads, "--threads"
    cores = _cores()
    if device.type == "cpu":
        busy = busy_cores()
        if busy is not None and busy >= cores - 0.5:
            return 1, f"the CPU is busy ({busy:.1f} of {cores} cores in use by other work)"
    return default or torch.get_num_threads(), "torch's default"


def busy_cores(window_s: float = 0.5) -> float | None:
    """How many cores' worth of work the machine did over the next `window_s` seconds (this
    process is waiting meanwhile, so it is other work); None where /proc/stat is not there."""
    def sample() -> tuple[int, int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                lines = handle.read().splitlines()
            fields = [int(v) for v in lines[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        return sum(fields), idle, cpus

    first = sample()
    if first is None:
        return None
    time.sleep(window_s)
    second = sample()
    total, idle = second[0] - first[0], second[1] - first[1]
    if total <= 0 or not second[2]:
        return None
    return (total - idle) / total * second[2]


@dataclass
class _Run:
    """What the steps of one fine-tuning run share: its settings, where and how it computes,
    and what the first steps make (the split, the labels, the network)."""
    settings: FinetuneSettings
    device: torch.device
    autocast: Callable
    scaler: object
    log: Callable[[str], None]
    decode: Callable
    identity: dict
    split: Split | None = None
    vocab: LabelVocab | None = None
    net: RetrievalNet | None = None
    teacher: Teacher | None = None
    start_kind: str = ""
    photos: RealPhotos | None = None
    default_threads: int = 1              # torch's count before the run set its own


def finetune(settings: FinetuneSettings, *, after_epoch: Callable[[int], None] | None = None,
             log: Callable[[str], None] | None = None, decode: Callable = open_image) -> FinetuneResult:
    """Train, validating and checkpointing after every epoch; resume from the checkpoint
    when one exists for the same settings. `after_epoch(epoch)` runs after each checkpoint
    (a test interrupts the run there)."""
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    started = time.perf_counter()
    check_model_name(settings.model)
    device = resolve_device(settings.device)
    precision = choose_precision(settings.precision, device)
    autocast, scaler = mixed_precision(device, precision)
    threads_before = torch.get_num_threads()
    threads, why = cpu_threads(settings, device)
    torch.set_num_threads(threads)
    run = _Run(settings, device, autocast, scaler, log, decode, settings.identity(),
               default_threads=threads_before)
    try:
        return _finetune(run, after_epoch, started,
                         f"{precision}, {threads} CPU thread{'s' if threads > 1 else ''} ({why})")
    finally:
        torch.set_num_threads(threads_before)


def _finetune(run: _Run, after_epoch, started: float, threads: str) -> FinetuneResult:
    settings = run.settings
    _split_and_label(run, threads)
    _build_network(run)
    optimizer, base_lr = _optimizer(run)
    history, done = _resume(run, optimizer)
    val = ValidationImages.build(run.split.val, eval_transform(settings.model, settings.image_size), settings.seed,
                                 settings.progress, run.decode, workers=_preparation_workers(settings))
    real = RealValidation.build(run.photos.held_out, eval_transform(settings.model, settings.image_size)) \
        if run.photos else None
    runner = _HeadOnly(run, val) if settings.head_only else _Full(run)
    eval_batch = max(settings.batch_size, 64)

    def validate() -> ValidationScores:
        run.net.eval()
        clean, photo = runner.validation_rows(val, eval_batch)
        scores = score(clean, photo, val.products, settings.k)
        if real is not None:
            rows = embed_preprocessed(run.net.features, real.tensors, eval_batch, run.device, run.autocast,
                                      channels_last=True)
            scores.real = real_kind_precision(rows, real.photos, clean, [p.articleType for p in val.products],
                                              settings.k)
            scores.real_queries = len(real.photos)
        return scores

    if not history:
        before = validate()
        history.append({"epoch": 0, "loss": None, "seconds": 0.0, **before.summary()})
        run.log(f"epoch 0 (start): {before.line()}")
    final = _train(run, runner, optimizer, base_lr, history, done, validate, after_epoch)
    if final is None:
        if done > settings.epochs:
            run.log(f"the checkpoint has {done} epochs, more than --epochs {settings.epochs}; writing its weights")
        final = validate()
    weights_id = _write_weights(run, history)
    run.log(f"wrote {settings.out} ({weights_id}); {final.line()}")
    return FinetuneResult(out=settings.out, history=history, seconds=time.perf_counter() - started,
                          resumed_from=done, final=final, weights_id=weights_id)


def _split_and_label(run: _Run, threads: str) -> None:
    settings = run.settings
    catalog = read_catalog(settings.catalog)
    products = sample_products(catalog.products, settings.limit, settings.seed)
    split = split_products(products, settings.val_fraction, settings.seed)
    if len(split.train) < 2 or not split.val:
        raise UserError(f"{settings.catalog}: {len(products)} products leave {len(split.train)} to train on and "
                         f"{len(split.val)} to validate with; a run needs a few products of each articleType")
    run.split, run.vocab = split, LabelVocab.from_products(split.train, settings.targets)
    # Street garments of the photos the shipped parser held out stay out of training:
    # evaluate-look queries with them.
    run.photos = RealPhotos.read(settings.real_photos, GarmentParser.held_out()) if settings.real_photos else None
    run.log(f"{settings.model} from {settings.weights}: {len(split.train)} training and {len(split.val)} held-out "
            f"products; {', '.join(f'{n} {t}' for t, n in run.vocab.sizes().items())} classes; device "
            f"{run.device}, {threads}" + (f"; {run.photos.line()}" if run.photos else ""))


def _build_network(run: _Run) -> None:
    settings = run.settings
    # Seed before the classifiers are made: the same command makes the same run.
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    backbone, dim, run.start_kind = starting_backbone(settings.model, settings.weights)
    run.teacher = Teacher(settings.teacher, settings.model).to(run.device) if settings.teacher else None
    net = RetrievalNet(backbone, dim, run.vocab.sizes(), projection=settings.head_only,
                       frozen=early_layers(backbone, settings.model, settings.freeze),
                       distill_dim=run.teacher.dim if run.teacher else None).to(run.device)
    # Channels-last feeds cuDNN's and oneDNN's fastest kernels alike (on this CPU, one ResNet-18
    # step: fp32 1.13x, bf16 1.23x faster than contiguous; `python -m bench.training_step`).
    run.net = net.to(memory_format=torch.channels_last)
    if settings.head_only:
        run.net.backbone.requires_grad_(False)


def _optimizer(run: _Run) -> tuple[torch.optim.Optimizer, float]:
    trainable = [p for p in run.net.parameters() if p.requires_grad]
    base_lr = run.settings.lr_for(run.start_kind)
    return torch.optim.AdamW(_param_groups(trainable, run.settings.weight_decay), lr=base_lr), base_lr


def _resume(run: _Run, optimizer) -> tuple[list[dict], int]:
    """The history and epochs done, from this run's checkpoint if there is one."""
    settings = run.settings
    state = load_checkpoint(settings.checkpoint_path, run.identity, FinetuneSettings.defaults())
    if state is None:
        return [], 0
    if state["labels"] != run.vocab.as_dict():
        raise CheckpointMismatch(f"{settings.checkpoint_path}: the catalog's labels changed since this "
                                 "checkpoint was made; delete it to start over")
    run.net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    history, done = list(state["history"]), int(state["epoch"])
    run.log(f"resuming from {settings.checkpoint_path}: {done} of {settings.epochs} epochs done")
    return history, done


def _train(run: _Run, runner, optimizer, base_lr: float, history: list[dict], done: int, validate,
           after_epoch) -> ValidationScores | None:
    """The epochs left, each ended by a validation and a checkpoint; the last validation."""
    settings = run.settings
    steps_per_epoch = runner.steps_per_epoch() if done < settings.epochs else 0
    total_steps = settings.epochs * steps_per_epoch
    bar = tqdm(total=total_steps, initial=min(done, settings.epochs) * steps_per_epoch, unit="batch",
               disable=not settings.progress, dynamic_ncols=True, smoothing=0.05, file=sys.stderr)
    final = None
    try:
        for epoch in range(done + 1, settings.epochs + 1):
            bar.set_description(f"epoch {epoch}/{settings.epochs}")
            if epoch > done + 1:
                _follow_the_cpu(run, epoch)
            epoch_started = time.perf_counter()
            run.net.train()
            if settings.head_only:
                run.net.backbone.eval()  # frozen: its batch-norm statistics stay as they are
            losses, cosines = [], []
            for step_in_epoch, (inputs, targets, allowed) in enumerate(runner.batches(epoch)):
                step = (epoch - 1) * steps_per_epoch + step_in_epoch
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, base_lr)
                loss, cosine = _step(run, runner, optimizer, inputs, targets, allowed)
                losses.append(loss)
                if cosine is not None:
                    cosines.append(cosine)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            final = validate()
            seconds = time.perf_counter() - epoch_started
            # How closely the student carries the teacher's embedding, this epoch.
            distilled = {"distill_cosine": round(float(np.mean(cosines)), 4)} if cosines else {}
            history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4) if losses else None,
                            "seconds": round(seconds, 1), **final.summary(), **distilled})
            _checkpoint(run, optimizer, epoch, history)
            distill_note = f", distillation cosine {distilled['distill_cosine']:.3f}" if distilled else ""
            run.log(f"epoch {epoch}/{settings.epochs}: loss {history[-1]['loss']}{distill_note}, {final.line()}, "
                    f"{seconds:.0f} s; checkpoint {settings.checkpoint_path}")
            if after_epoch:
                after_epoch(epoch)
    finally:
        bar.close()
    return final


def _follow_the_cpu(run: _Run, epoch: int) -> None:
    """The thread count chosen again: a run that started beside other work (a fresh shop's
    first index) takes the cores back once that work ends, and gives them up when it starts."""
    threads, why = cpu_threads(run.settings, run.device, run.default_threads)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        run.log(f"epoch {epoch}: {threads} CPU thread{'s' if threads > 1 else ''} from now on ({why})")


def _step(run: _Run, runner, optimizer, inputs, targets, allowed=None) -> tuple[float, float | None]:
    """One optimiser step; its loss, and the distillation cosine when there is a teacher.
    `allowed` marks the real photos' right articleTypes (None: a batch of catalog rows only)."""
    targets = targets.to(run.device, non_blocking=True)
    allowed = allowed.to(run.device, non_blocking=True) if allowed is not None else None
    cosine = None
    with run.autocast():
        if run.teacher is None:
            loss = _loss(runner.forward(inputs), targets, run.settings, allowed)
        else:
            features = run.net.features(inputs)
            loss = _loss(run.net.classify(features), targets, run.settings, allowed)
            cosines = distill_cosine(run.net.distill(features), run.teacher(inputs))
            loss = loss + run.settings.distill_weight * (1 - cosines).mean()
            cosine = cosines.mean().item()
    optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(optimizer)
        run.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.item(), cosine


def _checkpoint(run: _Run, optimizer, epoch: int, history: list[dict]) -> None:
    atomic_save({"identity": run.identity, "epoch": epoch, "model": cpu_state(run.net),
                 "optimizer": optimizer.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else None,
                 "rng": rng_state(), "history": history, "labels": run.vocab.as_dict()},
                run.settings.checkpoint_path)


def _write_weights(run: _Run, history: list[dict]) -> str:
    """The output file; read back the way `index --weights FILE` will (a file it refuses is no
    result), and its identity returned."""
    settings, net = run.settings, run.net
    atomic_save(weights_payload(
        settings.model, cpu_state(net.backbone), image_size=settings.input_size, train_size=settings.image_size,
        head=cpu_state(net.projection) if net.projection is not None else None,
        classifiers=net.classifiers(run.vocab.as_dict()), labels=run.vocab.as_dict(),
        start=settings.weights, history=history, validation_ids=[p.id for p in run.split.val],
        settings=run.identity), settings.out)
    return load_embedder(settings.model, str(settings.out)).weights_id


class _Full:
    """Every layer trains, on augmented views decoded once into memory."""

    def __init__(self, run: _Run):
        self.run = run
        # Decoded on first use: a finished run needs none.
        self.dataset: AugmentedProducts | ProductsAndPhotos | None = None
        self.workers = _workers(run.settings, run.device)

    def _load(self) -> AugmentedProducts | ProductsAndPhotos:
        if self.dataset is None:
            run, settings = self.run, self.run.settings
            images = DecodedImages.load(run.split.train, short_side_size(settings.image_size),
                                        settings.progress, run.decode,
                                        cut_outs=settings.photo_probability > 0,
                                        workers=_preparation_workers(settings))
            for product, why in images.unreadable:
                run.log(f"skipped {product.id}: {why}")
            augment = ShopperAugment.for_settings(settings)
            self.dataset = AugmentedProducts(images, run.vocab, augment, settings.seed)
            if run.photos:
                self.dataset = self._with_photos(self.dataset, augment)
        return self.dataset

    def _with_photos(self, products: AugmentedProducts, augment: ShopperAugment) -> ProductsAndPhotos:
        """The real photos beside the products: their own crops, flips and light, never the
        photo-like staging (they are photos already)."""
        run, settings = self.run, self.run.settings
        photos, arrays, unreadable = decode_photos(run.photos.train, short_side_size(settings.image_size),
                                                   _preparation_workers(settings), settings.progress)
        for photo, why in unreadable:
            run.log(f"skipped {photo.path}: {why}")
        photo_views = dataclasses.replace(augment, photo_probability=0.0)
        return ProductsAndPhotos(products, photos, arrays, run.vocab.values[PRIMARY], photo_views, settings.seed,
                                 share=settings.real_share)

    def _epoch_indices(self, epoch: int) -> int | list[int]:
        dataset = self._load()
        return dataset.epoch_indices(epoch) if isinstance(dataset, ProductsAndPhotos) else len(dataset)

    def steps_per_epoch(self) -> int:
        return len(epoch_batches(self._epoch_indices(1), self.run.settings.batch_size, self.run.settings.seed, 1))

    def batches(self, epoch: int):
        settings, device = self.run.settings, self.run.device
        self._load().set_epoch(epoch)
        loader = DataLoader(self.dataset, batch_sampler=epoch_batches(self._epoch_indices(epoch), settings.batch_size,
                                                                      settings.seed, epoch),
                            num_workers=self.workers, pin_memory=device.type == "cuda")
        for batch in loader:
            images, targets, allowed = batch if len(batch) == 3 else (*batch, None)
            yield images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), targets, allowed

    def forward(self, images):
        return self.run.net(images)

    def validation_rows(self, val: ValidationImages, batch_size: int):
        return tuple(embed_preprocessed(self.run.net.features, tensors, batch_size, self.run.device, self.run.autocast,
                                   channels_last=True) for tensors in (val.clean, val.photo))


class _HeadOnly:
    """The backbone is frozen: its pooled features are computed once, then only the
    projection (and the classifiers on it) train, on those features."""

    def __init__(self, run: _Run, val: ValidationImages):
        self.run = run
        path = run.settings.features_path
        cached = self._read_cache(run, path)
        if cached is not None:
            run.log(f"frozen features from {path}")
        else:
            cached = self._compute(run, val)
            atomic_save(cached, path)
        self.rows, self.targets = cached["rows"], cached["targets"]
        self.val_clean, self.val_photo = cached["val_clean"], cached["val_photo"]

    @staticmethod
    def _read_cache(run: _Run, path) -> dict | None:
        """The stored features of this run, or None when there are none, they are another
        run's, or the file is damaged (a disk that filled, a copy cut short): they are only a
        cache, so they are computed again rather than stopping the run."""
        if not path.is_file():
            return None
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(cached, dict) or cached.get("identity") != run.identity:
                return None
            rows, targets = cached["rows"], cached["targets"]
            if not (isinstance(rows, torch.Tensor) and isinstance(targets, torch.Tensor) and len(rows) == len(targets)
                    and all(isinstance(cached[k], torch.Tensor) for k in ("val_clean", "val_photo"))):
                raise ValueError("its tensors do not fit together")
            return cached
        except Exception as exc:  # torch.load's errors on a damaged file are of many kinds
            run.log(f"frozen features in {path} unreadable ({type(exc).__name__}: "
                    f"{(str(exc).splitlines() or [''])[0][:120]}); computing them again")
            return None

    @staticmethod
    def _compute(run: _Run, val: ValidationImages) -> dict:
        settings, net = run.settings, run.net
        transform = eval_transform(settings.model, settings.image_size)
        net.eval()
        images = DecodedImages.load(run.split.train, short_side_size(settings.image_size), settings.progress,
                                    run.decode, cut_outs=settings.photo_probability > 0 and settings.head_views > 0,
                                    workers=_preparation_workers(settings))
        for product, why in images.unreadable:
            run.log(f"skipped {product.id}: {why}")
        augment = ShopperAugment.for_settings(settings)
        views_per_product = 1 + settings.head_views
        rows, targets = [], []
        batch_size = max(settings.batch_size, 64)
        pending: list[torch.Tensor] = []

        def features(tensors: torch.Tensor) -> torch.Tensor:
            return _raw_features(net.backbone, tensors, batch_size, run.device, run.autocast)

        def flush():
            if pending:
                rows.append(features(torch.stack(pending)))
                pending.clear()

        with tqdm(total=len(images.products) * views_per_product, desc="frozen features", unit="img",
                  disable=not settings.progress, leave=False) as bar:
            for index, product in enumerate(images.products):
                image = images.image(index)
                code = run.vocab.encode(product)
                pending.append(transform(image))
                targets.append(code)
                for view in range(settings.head_views):
                    pending.append(augment(image, random.Random(f"{settings.seed}:view{view}:{index}"),
                                           images.cut(index)))
                    targets.append(code)
                if len(pending) >= batch_size:
                    flush()
                bar.update(views_per_product)
            flush()
        return {"identity": run.identity, "rows": torch.cat(rows), "targets": torch.tensor(targets, dtype=torch.long),
                "val_clean": features(val.clean), "val_photo": features(val.photo)}

    def steps_per_epoch(self) -> int:
        return len(epoch_batches(len(self.rows), self.run.settings.batch_size, self.run.settings.seed, 1))

    def batches(self, epoch: int):
        settings = self.run.settings
        for batch in epoch_batches(len(self.rows), settings.batch_size, settings.seed, epoch):
            yield self.rows[batch].to(self.run.device), self.targets[batch], None

    def forward(self, rows):
        return self.run.net.classify(self.run.net.project(rows))

    def validation_rows(self, val: ValidationImages, batch_size: int):
        with torch.inference_mode():
            return tuple(nn.functional.normalize(self.run.net.project(rows.to(self.run.device)).float(), dim=1).cpu()
                         for rows in (self.val_clean, self.val_photo))


def _raw_features(backbone: nn.Module, tensors: torch.Tensor, batch_size: int, device, autocast) -> torch.Tensor:
    """Pooled backbone features, not normalised (the projection sees what the backbone gives)."""
    out = []
    backbone.eval()
    # no_grad rather than inference_mode: these rows are later fed to a layer that trains.
    with torch.no_grad():
        for start in range(0, len(tensors), batch_size):
            with autocast():
                out.append(backbone(tensors[start:start + batch_size].to(device, torch.float32)).float().cpu())
    return torch.cat(out)


__all__ = ["FinetuneResult", "finetune", "resolve_device", "choose_precision", "cpu_has_native_bf16",
           "mixed_precision", "lr_at"]
