"""Training the kind model (embedding/kinds.py) on the catalog's shots and on real home photos.

Every catalog product and every photo of the photos' `train/` folder is embedded once by the
served model (PyTorch, one thread: the same vectors on any machine, kept in a cache file); a
softmax layer learns the kind group from the catalog's articleType and from each photo class's
group (the group most of its catalog kinds belong to, catalog/photo_labels.py). The photos weigh
`photo_share` of the loss: they are what the model is for. The photos' `validation/` folder is
never trained on; its accuracy is written into the file. Full-batch, seeded, one thread: the
same catalog and photos write the same file, byte for byte.

    python app.py train-kinds --catalog ../shared/catalog --photos ../shared/photos/handheld
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from catalog import ImageError, open_image, read_catalog
from catalog.errors import UserError
from catalog.photo_labels import PHOTO_KINDS, read_photo_folder
from embedding.builder import EmbedderBuilder
from embedding.kinds import NAMES, KindModel, group_of


@dataclass(frozen=True)
class KindTrainingSettings:
    catalog: Path
    photos: Path                      # DIR/train/<class>/*.jpg (and DIR/validation/, held out)
    out: Path = Path("embedding/kind_model.npz")
    model: str = "efficientnet_lite0"
    weights: str = "imagenet"
    seed: int = 0
    steps: int = 1500
    lr: float = 0.01
    weight_decay: float = 1e-4
    photo_share: float = 0.8
    batch_size: int = 32
    cache_dir: Path = field(default=Path.home() / ".cache" / "visual-shop-assistant" / "kind-features")

    def __post_init__(self):
        if not 0.0 <= self.photo_share <= 1.0:
            raise UserError("photo_share must be between 0 and 1")


def photo_group(photo_class: str) -> str:
    """The group most of a photo class's catalog kinds belong to ("outwear": outer layer)."""
    groups = Counter(group_of(article) for article in PHOTO_KINDS[photo_class])
    return max(groups, key=lambda g: (groups[g], -NAMES.index(g)))


def train_kinds(settings: KindTrainingSettings, log=print) -> dict:
    torch.manual_seed(settings.seed)
    torch.set_num_threads(1)
    embedder = EmbedderBuilder(weights=settings.weights, runtime=None).build(settings.model)
    catalog = read_catalog(str(settings.catalog)).products
    train = read_photo_folder(_split(settings.photos, "train"))
    held = read_photo_folder(_split(settings.photos, "validation")) if (settings.photos / "validation").is_dir() else []
    x_catalog, catalog_rows = _features(embedder, [p.image for p in catalog], settings, log)
    x_train, train_rows = _features(embedder, [p.path for p in train], settings, log)
    y_catalog = np.array([NAMES.index(group_of(catalog[i].articleType)) for i in catalog_rows])
    y_train = np.array([NAMES.index(photo_group(train[i].photo_class)) for i in train_rows])
    weights, bias = _fit(x_catalog, y_catalog, x_train, y_train, settings, log)
    facts = {"held_out_accuracy": float("nan")}
    if held:
        x_held, held_rows = _features(embedder, [p.path for p in held], settings, log)
        truth = np.array([NAMES.index(photo_group(held[i].photo_class)) for i in held_rows])
        facts["held_out_accuracy"] = float(((x_held @ weights.T + bias).argmax(1) == truth).mean())
    model = KindModel(weights, bias, NAMES, settings.model, embedder.weights_id, facts)
    model.save(settings.out)
    figures = {"catalog": len(catalog_rows), "photos": len(train_rows), "held_out_photos": len(held),
               "held_out_accuracy": round(facts["held_out_accuracy"], 4),
               "catalog_accuracy": round(float(((x_catalog @ weights.T + bias).argmax(1) == y_catalog).mean()), 4)}
    log(f"kind model: {json.dumps(figures)}")
    return figures


def _split(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.is_dir():
        raise UserError(f"--photos {folder}: no {name}/ folder of class folders ({folder}/{name}/<class>/*.jpg)")
    return path


def _fit(x_catalog, y_catalog, x_photos, y_photos, settings: KindTrainingSettings, log):
    """Full-batch Adam on the two cross-entropies, weighted by `photo_share`."""
    w = torch.zeros(len(NAMES), x_catalog.shape[1], requires_grad=True)
    b = torch.zeros(len(NAMES), requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=settings.lr)
    xc, yc = torch.from_numpy(x_catalog), torch.from_numpy(y_catalog)
    xp, yp = torch.from_numpy(x_photos), torch.from_numpy(y_photos)
    cross = torch.nn.functional.cross_entropy
    for step in range(settings.steps):
        optimizer.zero_grad()
        loss = (1 - settings.photo_share) * cross(xc @ w.T + b, yc) + settings.photo_share * cross(xp @ w.T + b, yp)
        (loss + settings.weight_decay * (w ** 2).sum()).backward()
        optimizer.step()
        if (step + 1) % 500 == 0:
            log(f"step {step + 1}/{settings.steps}: loss {loss.item():.4f}")
    return w.detach().numpy(), b.detach().numpy()


def _features(embedder, paths: list[Path], settings: KindTrainingSettings, log) -> tuple[np.ndarray, list[int]]:
    """The model's unit vectors of the images that open, and which of `paths` they are; cached
    by the model, its weights and the files' names and sizes."""
    key = hashlib.sha256(json.dumps([embedder.name, embedder.weights_id,
                                     [(str(p), _size(p)) for p in paths]]).encode()).hexdigest()[:20]
    cache = settings.cache_dir / f"{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as data:
                return data["x"], data["rows"].tolist()
        except (OSError, KeyError, ValueError):
            log(f"{cache}: damaged; computing again")
    rows, vectors = [], []
    for start in range(0, len(paths), settings.batch_size):
        images = []
        for i in range(start, min(start + settings.batch_size, len(paths))):
            try:
                images.append(open_image(paths[i]))
                rows.append(i)
            except ImageError:
                continue
        if images:
            vectors.append(embedder.embed(images, batch_size=settings.batch_size))
        if (start // settings.batch_size) % 50 == 0:
            log(f"embedded {start + len(images)} of {len(paths)} images")
    x = np.concatenate(vectors) if vectors else np.zeros((0, embedder.dim), dtype=np.float32)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_name(cache.name + ".tmp.npz")
    np.savez(temporary, x=x, rows=np.array(rows))
    temporary.replace(cache)
    return x, rows


def _size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return -1


__all__ = ["KindTrainingSettings", "photo_group", "train_kinds"]
