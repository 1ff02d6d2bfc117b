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
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from catalog import open_image, read_catalog
from vectorstore.embedders import check_model_name, load_embedder
from training.augment import ShopperAugment, eval_transform
from training.checkpoint import (CheckpointMismatch, atomic_save, cpu_state, load_checkpoint, rng_state,
                                 set_rng_state)
from vectorstore.weights_file import weights_payload
from training.data import (IGNORE, AugmentedProducts, DecodedImages, LabelVocab, epoch_batches, sample_products,
                           short_side_size, split_products)
from training.distill import Teacher, distill_cosine
from training.model import COSINE_SCALE, RetrievalNet, early_layers, starting_backbone
from training.settings import FinetuneSettings
from training.validate import ValidationImages, ValidationScores, embed_tensors, score


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
        raise ValueError(f"--device {text}: torch sees no CUDA GPU here; use --device cpu (or auto)")
    if not (text == "cpu" or text.startswith("cuda")):
        raise ValueError(f"--device {text}: expected auto, cpu or cuda[:N]")
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
            raise ValueError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
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


def _loss(logits: dict[str, torch.Tensor], targets: torch.Tensor, settings: FinetuneSettings) -> torch.Tensor:
    total = None
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


def _workers(settings: FinetuneSettings) -> int:
    if settings.workers is not None:
        return settings.workers
    return min(4, max(0, _cores() - 1))


def cpu_threads(settings: FinetuneSettings, device: torch.device) -> tuple[int, str]:
    """How many threads torch should compute with on the CPU, and why.

    On a CPU other jobs keep busy, OpenMP threads spend their time waiting for each other at
    every operation's barrier: measured here on 2 shared cores with a load of 5, one ResNet-18
    training step took 0.9 s with one thread and 5 s with two. So: one thread when the load
    average is already at the number of cores, torch's default otherwise.
    """
    if settings.threads is not None:
        return settings.threads, "--threads"
    cores = _cores()
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        if load >= cores:
            return 1, f"the CPU is busy (load {load:.1f} on {cores} cores)"
    return torch.get_num_threads(), "torch's default"


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
    try:
        return _finetune(settings, device, autocast, scaler, after_epoch, log, decode, started,
                         f"{precision}, {threads} CPU thread{'s' if threads > 1 else ''} ({why})")
    finally:
        torch.set_num_threads(threads_before)


def _finetune(settings, device, autocast, scaler, after_epoch, log, decode, started,
              threads: str) -> FinetuneResult:

    catalog = read_catalog(settings.catalog)
    products = sample_products(catalog.products, settings.limit, settings.seed)
    split = split_products(products, settings.val_fraction, settings.seed)
    if len(split.train) < 2 or not split.val:
        raise ValueError(f"{settings.catalog}: {len(products)} products leave {len(split.train)} to train on and "
                         f"{len(split.val)} to validate with; a run needs a few products of each articleType")
    vocab = LabelVocab.from_products(split.train, settings.targets)
    log(f"{settings.model} from {settings.weights}: {len(split.train)} training and {len(split.val)} held-out "
        f"products; {', '.join(f'{n} {t}' for t, n in vocab.sizes().items())} classes; device {device}, "
        f"{threads}")

    # Seed before the classifiers are made: the same command makes the same run.
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    backbone, dim, start_kind = starting_backbone(settings.model, settings.weights)
    # Channels-last feeds cuDNN's and oneDNN's fastest kernels alike (on this CPU, one ResNet-18
    # step: fp32 1.13x, bf16 1.23x faster than contiguous; `python -m bench.training_step`).
    teacher = Teacher(settings.teacher, settings.model).to(device) if settings.teacher else None
    net = RetrievalNet(backbone, dim, vocab.sizes(), projection=settings.head_only,
                       frozen=early_layers(backbone, settings.model, settings.freeze),
                       distill_dim=teacher.dim if teacher else None).to(device)
    net = net.to(memory_format=torch.channels_last)
    if settings.head_only:
        net.backbone.requires_grad_(False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    base_lr = settings.lr_for(start_kind)
    optimizer = torch.optim.AdamW(_param_groups(trainable, settings.weight_decay), lr=base_lr)

    identity = settings.identity()
    state = load_checkpoint(settings.checkpoint_path, identity, FinetuneSettings.defaults())
    history: list[dict] = []
    done = 0
    if state is not None:
        if state["labels"] != vocab.as_dict():
            raise CheckpointMismatch(f"{settings.checkpoint_path}: the catalog's labels changed since this "
                                     "checkpoint was made; delete it to start over")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history, done = list(state["history"]), int(state["epoch"])
        log(f"resuming from {settings.checkpoint_path}: {done} of {settings.epochs} epochs done")

    transform = eval_transform(settings.model, settings.image_size)
    val = ValidationImages.build(split.val, transform, settings.seed, settings.progress, decode)
    eval_batch = max(settings.batch_size, 64)

    if settings.head_only:
        runner = _HeadOnly(settings, net, split, vocab, val, transform, device, autocast, identity, log, decode)
    else:
        runner = _Full(settings, net, split, vocab, device, autocast, log, decode)

    def validate() -> ValidationScores:
        net.eval()
        clean, photo = runner.validation_rows(val, eval_batch)
        return score(clean, photo, val.products, settings.k)

    if not history:
        before = validate()
        history.append({"epoch": 0, "loss": None, "seconds": 0.0, **before.summary()})
        log(f"epoch 0 (start): {before.line()}")

    steps_per_epoch = runner.steps_per_epoch() if done < settings.epochs else 0
    total_steps = settings.epochs * steps_per_epoch
    bar = tqdm(total=total_steps, initial=min(done, settings.epochs) * steps_per_epoch, unit="batch",
               disable=not settings.progress, dynamic_ncols=True, smoothing=0.05, file=sys.stderr)
    final = None
    try:
        for epoch in range(done + 1, settings.epochs + 1):
            bar.set_description(f"epoch {epoch}/{settings.epochs}")
            epoch_started = time.perf_counter()
            net.train()
            if settings.head_only:
                net.backbone.eval()  # frozen: its batch-norm statistics stay as they are
            losses, cosines = [], []
            for step_in_epoch, (inputs, targets) in enumerate(runner.batches(epoch)):
                step = (epoch - 1) * steps_per_epoch + step_in_epoch
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, base_lr)
                with autocast():
                    if teacher is None:
                        loss = _loss(runner.forward(inputs), targets.to(device, non_blocking=True), settings)
                    else:
                        features = net.features(inputs)
                        loss = _loss(net.classify(features), targets.to(device, non_blocking=True), settings)
                        cosine = distill_cosine(net.distill(features), teacher(inputs))
                        loss = loss + settings.distill_weight * (1 - cosine).mean()
                        cosines.append(cosine.mean().item())
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            final = validate()
            seconds = time.perf_counter() - epoch_started
            # How closely the student carries the teacher's embedding, this epoch.
            distilled = {"distill_cosine": round(float(np.mean(cosines)), 4)} if cosines else {}
            history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4) if losses else None,
                            "seconds": round(seconds, 1), **final.summary(), **distilled})
            atomic_save({"identity": identity, "epoch": epoch, "model": cpu_state(net),
                         "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                         "rng": rng_state(), "history": history, "labels": vocab.as_dict()},
                        settings.checkpoint_path)
            distill_note = f", distillation cosine {distilled['distill_cosine']:.3f}" if distilled else ""
            log(f"epoch {epoch}/{settings.epochs}: loss {history[-1]['loss']}{distill_note}, {final.line()}, "
                f"{seconds:.0f} s; checkpoint {settings.checkpoint_path}")
            if after_epoch:
                after_epoch(epoch)
    finally:
        bar.close()

    if final is None:
        if done > settings.epochs:
            log(f"the checkpoint has {done} epochs, more than --epochs {settings.epochs}; writing its weights")
        final = validate()
    atomic_save(weights_payload(
        settings.model, cpu_state(net.backbone), image_size=settings.image_size,
        head=cpu_state(net.projection) if net.projection is not None else None, labels=vocab.as_dict(),
        start=settings.weights, history=history, validation_ids=[p.id for p in split.val], settings=identity),
        settings.out)
    # Read it back the way `index --weights FILE` will: a file it refuses is no result.
    weights_id = load_embedder(settings.model, str(settings.out)).weights_id
    log(f"wrote {settings.out} ({weights_id}); {final.line()}")
    return FinetuneResult(out=settings.out, history=history, seconds=time.perf_counter() - started,
                          resumed_from=done, final=final, weights_id=weights_id)


class _Full:
    """Every layer trains, on augmented views decoded once into memory."""

    def __init__(self, settings, net, split, vocab, device, autocast, log, decode):
        self.settings, self.net, self.device, self.autocast = settings, net, device, autocast
        self.split, self.vocab, self.log, self.decode = split, vocab, log, decode
        self.dataset: AugmentedProducts | None = None  # decoded on first use: a finished run needs none
        self.workers = _workers(settings)

    def _load(self) -> AugmentedProducts:
        if self.dataset is None:
            images = DecodedImages.load(self.split.train, short_side_size(self.settings.image_size),
                                        self.settings.progress, self.decode,
                                        cut_outs=self.settings.photo_probability > 0)
            for product, why in images.unreadable:
                self.log(f"skipped {product.id}: {why}")
            augment = ShopperAugment.for_settings(self.settings)
            self.dataset = AugmentedProducts(images, self.vocab, augment, self.settings.seed)
        return self.dataset

    def steps_per_epoch(self) -> int:
        return len(epoch_batches(len(self._load()), self.settings.batch_size, self.settings.seed, 1))

    def batches(self, epoch: int):
        self._load().set_epoch(epoch)
        loader = DataLoader(self.dataset, batch_sampler=epoch_batches(len(self.dataset), self.settings.batch_size,
                                                                      self.settings.seed, epoch),
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
        for images, targets in loader:
            yield images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last), targets

    def forward(self, images):
        return self.net(images)

    def validation_rows(self, val: ValidationImages, batch_size: int):
        return tuple(embed_tensors(self.net.features, tensors, batch_size, self.device, self.autocast,
                                   channels_last=True) for tensors in (val.clean, val.photo))


class _HeadOnly:
    """The backbone is frozen: its pooled features are computed once, then only the
    projection (and the classifiers on it) train, on those features."""

    def __init__(self, settings, net, split, vocab, val, transform, device, autocast, identity, log, decode):
        self.settings, self.net, self.device = settings, net, device
        path = settings.features_path
        cached = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
        if cached is not None and cached.get("identity") == identity:
            log(f"frozen features from {path}")
        else:
            cached = self._compute(settings, net, split, vocab, val, transform, device, autocast, identity, log, decode)
            atomic_save(cached, path)
        self.rows, self.targets = cached["rows"], cached["targets"]
        self.val_clean, self.val_photo = cached["val_clean"], cached["val_photo"]

    @staticmethod
    def _compute(settings, net, split, vocab, val, transform, device, autocast, identity, log, decode) -> dict:
        net.eval()
        images = DecodedImages.load(split.train, short_side_size(settings.image_size), settings.progress, decode,
                                    cut_outs=settings.photo_probability > 0 and settings.head_views > 0)
        for product, why in images.unreadable:
            log(f"skipped {product.id}: {why}")
        augment = ShopperAugment.for_settings(settings)
        views_per_product = 1 + settings.head_views
        rows, targets = [], []
        batch_size = max(settings.batch_size, 64)
        pending: list[torch.Tensor] = []

        def flush():
            if pending:
                rows.append(_raw_features(net.backbone, torch.stack(pending), batch_size, device, autocast))
                pending.clear()

        with tqdm(total=len(images.products) * views_per_product, desc="frozen features", unit="img",
                  disable=not settings.progress, leave=False) as bar:
            for index, product in enumerate(images.products):
                image = images.image(index)
                code = vocab.encode(product)
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
        return {"identity": identity, "rows": torch.cat(rows), "targets": torch.tensor(targets, dtype=torch.long),
                "val_clean": _raw_features(net.backbone, val.clean, batch_size, device, autocast),
                "val_photo": _raw_features(net.backbone, val.photo, batch_size, device, autocast)}

    def steps_per_epoch(self) -> int:
        return len(epoch_batches(len(self.rows), self.settings.batch_size, self.settings.seed, 1))

    def batches(self, epoch: int):
        for batch in epoch_batches(len(self.rows), self.settings.batch_size, self.settings.seed, epoch):
            yield self.rows[batch].to(self.device), self.targets[batch]

    def forward(self, rows):
        return self.net.classify(self.net.project(rows))

    def validation_rows(self, val: ValidationImages, batch_size: int):
        with torch.inference_mode():
            return tuple(nn.functional.normalize(self.net.project(rows.to(self.device)).float(), dim=1).cpu()
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
