"""Training the garment parser's members on street photos with every garment outlined.

Each member's backbone is frozen, so its features are computed once per photo (and its mirror
image) and kept in a cache file; its last block and head then train on them for many epochs in
minutes. The members train side by side, each in a process of its own on one core, and are
written together, in half precision, into one file. A seeded share of the photos is held out
and never trained on: per-class IoU and the recall of garments (a found item's box within IoU
0.4 of the labelled one) are measured on them, for each member and for the parser that
averages them. A checkpoint after
every epoch makes a killed run resume with the same command.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from catalog.errors import UserError
from catalog.street import Photo, read_labels, street_photos
from embedding.garments import (
    CLASS_NAMES,
    GARMENT_CLASSES,
    Backbone,
    ParserNetwork,
    box_iou,
    items_from,
    mask_box,
    new_head,
    parser_input,
    street_label_table,
)
from embedding.registry import PARSER_INPUT_SIZE, PARSER_MEMBERS, parser_member
from training.checkpoint import atomic_save, load_checkpoint


@dataclass(frozen=True)
class ParserSettings:
    photos: Path                 # a folder with images/, masks/ and labels.csv (the street photos' layout)
    out: Path = Path("embedding/garment_parser.pt")
    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    block_lr: float = 0.2         # the tuned backbone block's learning rate, as a share of lr
    held_out: float = 0.15       # share of photos never trained on
    seed: int = 0
    limit: int | None = None     # the first N photos only (tests)
    # One thread: the same file from the same command on one machine (the order of a sum
    # changes with the thread count; another CPU's kernels moved the losses a little, session
    # 29), and a head this small gains little from more.
    threads: int = 1
    cache_dir: Path = Path.home() / ".cache" / "visual-shop-assistant" / "parser-features"
    # Catalog cut-outs pasted small onto the training scenes (training/composites.py); None: none.
    catalog: Path | None = None
    composites: int = 728
    # The parser's members (embedding/registry.py PARSER_MEMBERS), in the file in this order.
    members: tuple[str, ...] = tuple(PARSER_MEMBERS)
    # Members trained at once, each in a process of its own with `threads` threads: one per core
    # (three members one after the other took longer than 45 minutes on two cores). A member's
    # weights do not depend on it, so it is not part of the checkpoints' identity.
    workers: int = 2

    def __post_init__(self):
        if not (self.photos / "labels.csv").is_file() or not (self.photos / "masks").is_dir():
            raise UserError(f"{self.photos}: expected labels.csv, images/ and masks/ (the street photos' layout)")
        if self.epochs < 1 or self.batch_size < 1 or not 0 < self.held_out < 1:
            raise UserError("epochs and batch size must be at least 1, held_out between 0 and 1")
        if self.catalog is not None and not (self.catalog / "styles.csv").is_file():
            raise UserError(f"{self.catalog}: no catalog there (styles.csv) to paste products from; "
                            "--catalog none trains on the street photos alone")
        if not self.members:
            raise UserError("the parser needs at least one member")
        if self.workers < 1 or self.threads < 1:
            raise UserError("workers and threads must be at least 1")
        for name in self.members:
            parser_member(name)

    def identity(self) -> dict:
        """What a member's weights depend on (not the other members, nor how many train at once)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "threads": self.threads,
                "composites": self.composites if self.catalog else 0,
                "weight_decay": self.weight_decay, "block_lr": self.block_lr, "held_out": self.held_out, "seed": self.seed,
                "limit": self.limit}


def split(photos: list[Photo], held_out: float, seed: int) -> tuple[list[Photo], list[Photo]]:
    """A seeded split by each photo's name, so a photo added later does not move the others."""
    def draw(photo: Photo) -> float:
        digest = hashlib.sha256(f"{seed}:{photo.stem}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64
    held = [p for p in photos if draw(p) < held_out]
    return [p for p in photos if draw(p) >= held_out], held


def target_of(photo: Photo, table: np.ndarray) -> torch.Tensor:
    """The photo's mask as parser classes at the parser's input size (nearest: labels stay labels)."""
    height, width = PARSER_INPUT_SIZE
    values = np.asarray(Image.open(photo.mask).resize((width, height), Image.Resampling.NEAREST))
    return torch.from_numpy(table[values])


def street_pairs(photos: list[Photo], table: np.ndarray):
    for photo in photos:
        yield Image.open(photo.image), target_of(photo, table)


def composite_pairs(photos: list[Photo], table: np.ndarray, settings: ParserSettings):
    from training.composites import CompositeSettings, eligible_products, make_composites
    train_products, _ = eligible_products(settings.catalog, CompositeSettings.held_out, settings.seed)
    height, width = PARSER_INPUT_SIZE
    made = make_composites(photos, table, train_products, CompositeSettings(count=settings.composites,
                                                                            seed=settings.seed))
    for photo, labels in made:
        target = Image.fromarray(labels.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST)
        yield photo, torch.from_numpy(np.asarray(target).astype(np.int64))


@torch.inference_mode()
def features_of(pairs, count: int, key: str, backbone: Backbone, cache: Path) -> dict:
    """The backbone's features (fp16) and the targets of every (photo, target) and its mirror
    image, cached in one file under `key` (a damaged cache is recomputed)."""
    key = hashlib.sha256((key + str(backbone.spec) + str(PARSER_INPUT_SIZE) + f"threads={torch.get_num_threads()}")
                         .encode()).hexdigest()[:16]
    path = cache / f"{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a run killed while writing, a full disk: compute again
            print(f"parser features cache {path} unreadable ({exc}): computing it again")
    s8, s16, s32, targets = [], [], [], []
    for image, target in tqdm(pairs, total=count, desc="backbone features", unit="photo"):
        pixels = parser_input(image)
        for flip in (False, True):
            x = pixels.flip(-1) if flip else pixels
            a, b, c = backbone(x)
            s8.append(a[0].half()), s16.append(b[0].half()), s32.append(c[0].half())
            targets.append((target.flip(-1) if flip else target).to(torch.uint8))
    data = {"s8": torch.stack(s8), "s16": torch.stack(s16), "s32": torch.stack(s32), "target": torch.stack(targets)}
    cache.mkdir(parents=True, exist_ok=True)
    atomic_save(data, path)
    return data


def training_features(train: list[Photo], table: np.ndarray, backbone: Backbone, settings: ParserSettings) -> dict:
    """The street photos' features, and the composites' beside them when a catalog is given."""
    names = "|".join(p.stem for p in train)
    data = features_of(street_pairs(train, table), len(train), names, backbone, settings.cache_dir)
    if settings.catalog is None or settings.composites <= 0:
        return data
    extra = features_of(composite_pairs(train, table, settings), settings.composites,
                        f"composites:{names}:{settings.catalog.resolve()}:{settings.composites}:{settings.seed}",
                        backbone, settings.cache_dir)
    return {k: torch.cat([data[k], extra[k]]) for k in data}


def class_weights(targets: torch.Tensor) -> torch.Tensor:
    """Median-frequency balancing, clipped: small items (watches, belts) count, without letting
    a class seen in a few pixels dominate the loss."""
    counts = torch.bincount(targets.flatten().long(), minlength=len(GARMENT_CLASSES)).float()
    freq = counts / counts.sum()
    present = freq[freq > 0]
    weights = torch.where(freq > 0, present.median() / freq.clamp_min(1e-12), torch.zeros_like(freq))
    return weights.clamp(0.05, 10.0)


def train_parser(settings: ParserSettings) -> dict:
    """Train (or resume) every member; write `settings.out` with the held-out figures (the
    parser's and each member's). Returns the parser's."""
    torch.set_num_threads(settings.threads)
    table = street_label_table(read_labels(settings.photos))
    train, held = split(street_photos(settings.photos, settings.limit), settings.held_out, settings.seed)
    if not train or not held:
        raise UserError(f"{settings.photos}: too few photos to hold some out ({len(train)} / {len(held)})")
    print(f"garment parser: {len(train)} photos to train on, {len(held)} held out")
    train_members(train, table, settings)
    backbones = [Backbone(parser_member(name)) for name in settings.members]
    heads, histories = [], {}
    for backbone in backbones:
        head, histories[backbone.spec.name] = trained_member(backbone.spec, settings)
        heads.append(head)
    figures = {name: evaluate_parser([b], [h], held, table) for name, b, h in zip(settings.members, backbones, heads)}
    figures["parser"] = evaluate_parser(backbones, heads, held, table)
    # Half precision halves the file; the seconds stay out of it: the same command then writes
    # the same bytes.
    members = [{"name": name, "head": {k: v.half() if v.is_floating_point() else v for k, v in head.state_dict().items()},
                "history": [{"epoch": h["epoch"], "loss": h["loss"]} for h in histories[name]]}
               for name, head in zip(settings.members, heads)]
    atomic_save({"classes": list(CLASS_NAMES), "members": members, "settings": _plain(settings),
                 "held_out": [p.stem for p in held], "figures": figures}, settings.out)
    return figures["parser"]


def train_members(train: list[Photo], table: np.ndarray, settings: ParserSettings) -> None:
    """Every member trained to its last epoch's checkpoint, `settings.workers` at once."""
    if settings.workers == 1 or len(settings.members) == 1:
        for name in settings.members:
            _train_one(name, train, table, settings)
        return
    # Spawned, not forked: a fork copies this process's thread pools mid-state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(settings.workers, len(settings.members)), mp_context=context) as pool:
        for member in [pool.submit(_train_one, name, train, table, settings) for name in settings.members]:
            member.result()


def _train_one(name: str, train: list[Photo], table: np.ndarray, settings: ParserSettings) -> None:
    torch.set_num_threads(settings.threads)  # a spawned process starts with every core's
    train_member(Backbone(parser_member(name)), train, table, settings)


def member_checkpoint(name: str, settings: ParserSettings) -> Path:
    return settings.out.with_suffix(f".{name}.ckpt")


def trained_member(spec, settings: ParserSettings):
    """A member's head and history from its last epoch's checkpoint."""
    state = load_checkpoint(member_checkpoint(spec.name, settings), settings.identity())
    if state is None or state["epoch"] != settings.epochs:
        raise UserError(f"the garment parser's member {spec.name} did not finish training; run the command again "
                        "to resume it")
    head = new_head(spec)
    head.load_state_dict(state["head"])
    return head.eval(), list(state["history"])


def train_member(backbone: Backbone, train: list[Photo], table: np.ndarray, settings: ParserSettings) -> None:
    """One member's last block and head trained to its last epoch's checkpoint (resumed from
    the checkpoint there is; `trained_member` reads the result)."""
    checkpoint = member_checkpoint(backbone.spec.name, settings)
    finished = load_checkpoint(checkpoint, settings.identity())
    if finished is not None and finished["epoch"] == settings.epochs:
        return  # a run killed after this member: its features need not be loaded again
    torch.manual_seed(settings.seed), random.seed(settings.seed), np.random.seed(settings.seed)
    print(f"garment parser member {backbone.spec.name}", flush=True)
    data = training_features(train, table, backbone, settings)
    head = new_head(backbone.spec, backbone).to(memory_format=torch.channels_last)
    # The ImageNet block learns slower than the new head: it starts from something good.
    optimizer = torch.optim.AdamW([{"params": head.head.parameters(), "lr": settings.lr},
                                   {"params": head.top.parameters(), "lr": settings.lr * settings.block_lr}],
                                  weight_decay=settings.weight_decay)
    steps = settings.epochs * -(-len(data["target"]) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, [settings.lr, settings.lr * settings.block_lr],
                                                   total_steps=steps, pct_start=0.1)
    start, history = _resume(checkpoint, settings, head, optimizer, schedule)
    weights = class_weights(data["target"])
    for epoch in range(start, settings.epochs):
        started = time.perf_counter()
        loss = _epoch(head, data, weights, optimizer, schedule, settings, epoch)
        history.append({"epoch": epoch + 1, "loss": loss, "seconds": round(time.perf_counter() - started, 1)})
        print(f"{backbone.spec.name} epoch {epoch + 1}/{settings.epochs}: loss {loss:.4f} ({history[-1]['seconds']} s)",
              flush=True)
        atomic_save({"identity": settings.identity(), "epoch": epoch + 1, "head": head.state_dict(),
                     "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "history": history}, checkpoint)


def _resume(checkpoint: Path, settings: ParserSettings, head, optimizer, schedule) -> tuple[int, list]:
    state = load_checkpoint(checkpoint, settings.identity())
    if state is None:
        return 0, []
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    print(f"resuming the garment parser after epoch {state['epoch']}")
    return int(state["epoch"]), list(state["history"])


def _epoch(head, data, weights, optimizer, schedule, settings: ParserSettings, epoch: int) -> float:
    head.train()
    generator = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
    order = torch.randperm(len(data["target"]), generator=generator)
    total, batches = 0.0, 0
    for start in range(0, len(order), settings.batch_size):
        index = order[start:start + settings.batch_size]
        features = [data[k][index].float().contiguous(memory_format=torch.channels_last) for k in ("s8", "s16", "s32")]
        logits = head(*features)
        # The loss where the head predicts, at stride 8 (the labels sampled there): the boxes come
        # out as well, for a sixteenth of the upsampling and loss work of the full resolution.
        target = data["target"][index][:, 4::8, 4::8].long()
        loss = F.cross_entropy(logits, target, weight=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        total, batches = total + loss.item(), batches + 1
    head.eval()
    return total / max(1, batches)


@torch.inference_mode()
def evaluate_parser(backbones: list[Backbone], heads: list, photos: list[Photo], table: np.ndarray) -> dict:
    """Per-class IoU of the pixels, and per class the share of labelled garments (a class's
    pixels in a photo, at least its min_area) that a found item covers with box IoU >= 0.4; of
    the members' averaged class scores at the full input size."""
    classes = len(GARMENT_CLASSES)
    intersection, union = torch.zeros(classes), torch.zeros(classes)
    found, labelled = np.zeros(classes), np.zeros(classes)
    network = ParserNetwork(backbones, heads, resolution=1.0).eval()
    for photo in photos:
        pixels = parser_input(Image.open(photo.image))
        probabilities = network(pixels)[0]
        predicted, target = probabilities.argmax(0), target_of(photo, table)
        for c in range(classes):
            p, t = predicted == c, target == c
            intersection[c] += (p & t).sum()
            union[c] += (p | t).sum()
        items = items_from(probabilities)
        for c, garment in enumerate(GARMENT_CLASSES[1:], start=1):
            where = (target == c).numpy()
            if where.mean() < garment.min_area:
                continue
            truth = mask_box(where)
            labelled[c] += 1
            found[c] += any(item.kind == garment.name and box_iou(item.box, truth) >= 0.4 for item in items)
    iou = (intersection / union.clamp_min(1)).tolist()
    per_class = {GARMENT_CLASSES[c].name: {"iou": round(iou[c], 3), "garments": int(labelled[c]),
                                           "found": round(float(found[c] / labelled[c]), 3) if labelled[c] else None}
                 for c in range(1, classes)}
    return {"photos": len(photos), "mean_iou": round(float(np.mean(iou[1:])), 3),
            "garment_recall": round(float(found.sum() / max(1, labelled.sum())), 3), "classes": per_class}


def _plain(settings: ParserSettings) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()
            if k not in ("photos", "out", "cache_dir", "workers")}


__all__ = ["ParserSettings", "train_parser", "evaluate_parser", "split"]
