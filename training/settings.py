"""Everything a fine-tuning run is told, in one dataclass passed explicitly."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

from catalog.errors import UserError

# Labels the model learns: the first is the one retrieval is judged on, the others help it
# (a Heels query should not come back with Men's shoes, a Watch with Apparel).
TARGETS = ("articleType", "gender", "masterCategory")
PRIMARY = TARGETS[0]
# Catalog columns that can be auxiliary targets. baseColour is among them because the crops and
# colour changes teach the network to ignore colour, which a shopper still expects to match.
AUX_CHOICES = ("gender", "masterCategory", "subCategory", "baseColour", "season", "usage")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Settings that may change between an interrupted run and its resumption without making the
# checkpoint meaningless: where it runs, how it reports, and how long it goes on.
RESUMABLE_CHANGES = ("epochs", "device", "precision", "workers", "threads", "progress", "out", "checkpoint",
                     "serve_size")


@dataclass(frozen=True)
class FinetuneSettings:
    catalog: Path
    model: str
    out: Path
    epochs: int = 5
    image_size: int = 224
    # The input size the written file asks every embedder to use; None: image_size. Training
    # sees products enlarged by its random crops, so a larger size at test time shows them at
    # the scale it learned (FixRes, Touvron et al. 2019): Lite0 trained at 128 or 160 finds
    # shopper photos better at 224 (docs/figures.md).
    serve_size: int | None = None
    batch_size: int = 32
    device: str = "auto"                 # auto | cpu | cuda[:N]
    precision: str = "auto"              # auto | fp32 | bf16 | fp16: the autocast dtype of the training step
    weights: str = "imagenet"            # imagenet | random[:SEED] | FILE: the starting point
    head_only: bool = False              # train a projection head on frozen features only
    freeze: int = 0                      # the stem and this many first stages keep their starting weights
    teacher: str | None = None           # a frozen ImageNet model whose embedding the student learns to carry
    distill_weight: float = 1.0          # weight of the distillation loss beside the label losses
    seed: int = 0
    lr: float | None = None              # None: chosen from the start and the mode (see lr_for)
    weight_decay: float = 0.05
    val_fraction: float = 0.1            # products held out per articleType, never trained on
    limit: int | None = None             # a seeded sample of this many products, for trials
    workers: int | None = None           # data loader processes; None: one per spare core, max 4
    threads: int | None = None           # CPU threads for torch; None: 1 on a busy CPU, else torch's default
    photo_probability: float = 0.5       # share of training views made by shopper_photo
    crop_min: float = 0.35               # smallest share of the image area a random crop keeps
    aux_targets: tuple[str, ...] = TARGETS[1:]   # catalog columns learned beside articleType
    aux_weight: float = 0.3              # weight of each auxiliary target's loss
    label_smoothing: float = 0.1
    margin: float = 0.0                  # CosFace margin, in cosine, on every target's classifier
    head_views: int = 2                  # photo-like views per product precomputed for --head-only
    k: int = 5                           # P@k reported on validation
    checkpoint: Path | None = None       # None: next to `out`, as OUT.ckpt
    progress: bool = True
    # Folders of labelled real photos trained on beside the catalog (training/real_photos.py):
    # DIR/<class>/*.jpg, or DIR/train/ and DIR/validation/ of them (the latter only scored).
    real_photos: tuple[Path, ...] = ()
    real_weight: float = 1.0             # weight of the real photos' loss beside the catalog's
    # Share of the real photos drawn into each epoch, a fresh seeded sample every epoch: the
    # catalog's products are seen every epoch, so more epochs fit the same minutes.
    real_share: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "catalog", Path(self.catalog))
        object.__setattr__(self, "out", Path(self.out))
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "aux_targets", tuple(self.aux_targets))
        object.__setattr__(self, "real_photos", tuple(Path(p) for p in self.real_photos))
        missing = [str(p) for p in self.real_photos if not p.is_dir()]
        if missing:
            raise UserError(f"--photos {', '.join(missing)}: no such folder")
        if self.real_photos and self.head_only:
            raise UserError("--photos needs the network to see the photos; --head-only trains on stored catalog "
                             "features (use --photos none)")
        if self.real_weight < 0:
            raise UserError("--real-weight must be 0 or more")
        if not 0 < self.real_share <= 1:
            raise UserError("--real-share must be above 0 and at most 1 (a share of the real photos)")
        unknown = [t for t in self.aux_targets if t not in AUX_CHOICES]
        if unknown:
            raise UserError(f"--aux-targets {','.join(unknown)}: expected catalog columns among "
                             f"{', '.join(AUX_CHOICES)} ({PRIMARY} is always the main target)")
        if len(set(self.aux_targets)) != len(self.aux_targets):
            raise UserError("--aux-targets names a column twice")
        if self.epochs < 1:
            raise UserError("--epochs must be at least 1")
        if self.image_size < 32:
            raise UserError("--image-size must be at least 32 pixels (the network downsamples 32x)")
        if self.serve_size is not None and self.serve_size < 32:
            raise UserError("--serve-size must be at least 32 pixels (the network downsamples 32x)")
        if self.batch_size < 2:
            raise UserError("--batch-size must be at least 2 (batch norm needs two images)")
        if not 0 < self.val_fraction < 1:
            raise UserError("the validation fraction must be between 0 and 1")
        if not 0 <= self.margin < 1:
            raise UserError("--margin must be at least 0 and below 1 (it is a cosine)")
        if not 0 < self.crop_min <= 1:
            raise UserError("--crop-min must be above 0 and at most 1 (a share of the image area)")
        if not 0 <= self.photo_probability <= 1:
            raise UserError("--photo-probability must be between 0 and 1")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision}: expected one of {', '.join(PRECISIONS)}")
        if self.teacher is not None and self.head_only:
            raise UserError("--teacher needs images to show the teacher; --head-only trains on stored features")
        if self.distill_weight < 0:
            raise UserError("--distill-weight must be 0 or more")
        if self.freeze < 0:
            raise UserError("--freeze must be 0 or more stages")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if self.limit is not None and self.limit < 4:
            raise UserError("--limit must leave at least 4 products")

    @property
    def targets(self) -> tuple[str, ...]:
        """Every label the run learns, the one retrieval is judged on first."""
        return (PRIMARY, *self.aux_targets)

    @property
    def input_size(self) -> int:
        """What embedders of the written file are given."""
        return self.serve_size or self.image_size

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint or self.out.with_name(self.out.name + ".ckpt")

    @property
    def features_path(self) -> Path:
        """Where --head-only keeps the frozen features it computed, so a resume skips that."""
        return self.checkpoint_path.with_name(self.checkpoint_path.name + ".features")

    def lr_for(self, start_kind: str) -> float:
        if self.lr is not None:
            return self.lr
        if self.head_only:
            return 1e-3
        # From scratch the network has everything to learn; from trained weights a large
        # step would wash out what they know.
        return 2e-3 if start_kind == "random" else 3e-4

    def identity(self) -> dict:
        """What a checkpoint must share with the run that resumes it."""
        values = asdict(self)
        for key in RESUMABLE_CHANGES:
            values.pop(key)
        values["catalog"] = str(Path(self.catalog).resolve())
        values["aux_targets"] = list(self.aux_targets)  # as a checkpoint gives it back
        values["real_photos"] = [str(p.resolve()) for p in self.real_photos]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}

    @classmethod
    def defaults(cls) -> dict:
        """Every setting that has a default, with it."""
        values = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        values["aux_targets"] = list(values["aux_targets"])
        values["real_photos"] = list(values["real_photos"])
        return values

    def with_changes(self, **changes) -> FinetuneSettings:
        return replace(self, **changes)


__all__ = ["FinetuneSettings", "TARGETS", "PRIMARY", "AUX_CHOICES", "PRECISIONS", "RESUMABLE_CHANGES"]
