"""Labelled real photos in a fine-tuning run: decoded once, seen in every epoch beside the
catalog's products, and their held-out part scored after every epoch.

Trained on catalog shots and views made from them alone, the network forgets what ImageNet
taught it about objects in real scenes (kind P@5 on photos people took fell from 0.61 to 0.32,
docs/figures.md). Photos people took, in the batches themselves, are what keeps and improves it.

A photo's class is coarser than the catalog's articleTypes (`catalog/photo_labels.py`:
"longsleeve" is a shirt, a sweater or a sweatshirt), so a photo teaches the articleType
classifier a set of right answers: its loss is minus the log of the probability the classifier
gives the whole set (a partial label), which asks for "one of these" without choosing among them.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from catalog import ImageError, open_image
from catalog.photo_labels import STREET_KINDS, STREET_PREFIX, LabelledPhoto, kind_matches, kinds_of, read_photo_folder
from catalog.street import read_labels, street_photos
from embedding.garments import cut_out, mask_box, street_garments
from training.data import IGNORE, AugmentedProducts, downsize, map_in_processes


@dataclass(frozen=True)
class RealPhotos:
    """The labelled photos a run trains on, and those it only scores."""
    train: list[LabelledPhoto]
    held_out: list[LabelledPhoto]

    @classmethod
    def read(cls, folders: Sequence[Path], street_held_out: Sequence[str] = ()) -> RealPhotos:
        """Each folder is either split (`train/` and an optional `validation/`, each of class
        folders, as handheld/ is), class folders only, all trained on, or outlined street
        photos (street/'s layout): each garment cut out on white, as a search cuts out an item,
        those of the photos in `street_held_out` (the garment parser's held-out ones, which
        evaluate-look queries with) only scored."""
        train, held = [], []
        for folder in folders:
            folder = Path(folder)
            if is_street_folder(folder):
                garments = street_garment_photos(folder)
                hold = set(street_held_out)
                train += [g for g in garments if g.path.stem not in hold]
                held += [g for g in garments if g.path.stem in hold]
            elif (folder / "train").is_dir():
                train += read_photo_folder(folder / "train")
                if (folder / "validation").is_dir():
                    held += read_photo_folder(folder / "validation")
            else:
                train += read_photo_folder(folder)
        return cls(train, held)

    def line(self) -> str:
        return f"{len(self.train)} real photos to train on, {len(self.held_out)} held out"


def is_street_folder(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir() and (folder / "labels.csv").is_file()


# Garments smaller than this share of their street photo are left out of training: a belt or a
# watch a few pixels wide cut out on white is no picture of the product.
MIN_STREET_AREA = 0.01


def street_garment_photos(folder: Path) -> list[LabelledPhoto]:
    """Every garment of the outlined street photos in `folder` large enough to show, labelled
    "street:<label>" (catalog/photo_labels.py: STREET_KINDS)."""
    labels = read_labels(folder)
    out = []
    for photo in street_photos(folder):
        try:
            values = np.asarray(Image.open(photo.mask))
        except OSError:  # an unreadable outline: the photo is left out
            continue
        for garment in street_garments(values, labels):
            if np.isin(values, garment.values).mean() >= MIN_STREET_AREA and garment.label in STREET_KINDS:
                out.append(LabelledPhoto(photo.image, STREET_PREFIX + garment.label, mask=photo.mask,
                                         mask_values=garment.values))
    return out


def photo_image(photo: LabelledPhoto) -> Image.Image:
    """The photo as trained on and scored: whole, or its garment cut out on white."""
    image = open_image(photo.path)
    if photo.mask is None:
        return image
    values = np.asarray(Image.open(photo.mask))
    where = np.isin(values, photo.mask_values)
    return cut_out(image, where, mask_box(where))


def allowed_types(photo_class: str, article_types: Sequence[str]) -> torch.Tensor:
    """Which of the run's articleTypes count as the photo's kind (a boolean row)."""
    wanted = set(kinds_of(photo_class))
    return torch.tensor([t in wanted for t in article_types], dtype=torch.bool)


def partial_label_loss(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor | None:
    """-log P(the class is one of the allowed ones), averaged over the rows that allow any
    (catalog rows allow none); None when no row does."""
    rows = allowed.any(dim=1)
    if not bool(rows.any()):
        return None
    logits, allowed = logits[rows].float(), allowed[rows]
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~allowed, float("-inf")), dim=1)).mean()


def _decoded(photo: LabelledPhoto, short_side: int):
    try:
        return np.asarray(downsize(photo_image(photo), short_side)), None
    except (ImageError, OSError) as exc:
        return None, str(exc)


def decode_photos(photos: Sequence[LabelledPhoto], short_side: int, workers: int, progress: bool
                  ) -> tuple[list[LabelledPhoto], list[np.ndarray], list[tuple[LabelledPhoto, str]]]:
    """The readable photos and their pixels, kept small; the unreadable ones with why."""
    done = map_in_processes(partial(_decoded, short_side=short_side), photos, workers, "decoding real photos",
                            progress)
    kept, arrays, unreadable = [], [], []
    for photo, (pixels, why) in zip(photos, done):
        if why is not None:
            unreadable.append((photo, why))
        else:
            kept.append(photo)
            arrays.append(pixels)
    return kept, arrays, unreadable


class ProductsAndPhotos(Dataset):
    """The catalog's augmented views, then the real photos' (each one view per epoch), with
    label codes and the allowed-articleType row: a product's row allows nothing (its codes say
    it all), a photo's codes are all IGNORE. Seeded per (seed, epoch, index) like the products."""

    def __init__(self, products: AugmentedProducts, photos: Sequence[LabelledPhoto], arrays: Sequence[np.ndarray],
                 article_types: Sequence[str], augment, seed: int, share: float = 1.0):
        self.products, self.arrays, self.augment, self.seed = products, list(arrays), augment, seed
        self.share = share
        width = products.targets.shape[1]
        self.photo_targets = torch.full((width,), IGNORE, dtype=torch.long)
        self.nothing = torch.zeros(len(article_types), dtype=torch.bool)
        self.allowed = [allowed_types(p.photo_class, article_types) for p in photos]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.products.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.products) + len(self.arrays)

    def epoch_indices(self, epoch: int) -> list[int]:
        """What epoch `epoch` trains on: every product, and a seeded share of the photos
        drawn afresh each epoch (the same draw when a resumed run repeats the epoch)."""
        drawn = max(1, round(self.share * len(self.arrays))) if self.arrays else 0
        rng = random.Random(f"{self.seed}:{epoch}:photos drawn")
        photos = sorted(rng.sample(range(len(self.arrays)), drawn))
        return list(range(len(self.products))) + [len(self.products) + i for i in photos]

    def __getitem__(self, index: int):
        if index < len(self.products):
            view, targets = self.products[index]
            return view, targets, self.nothing
        photo = index - len(self.products)
        rng = random.Random(f"{self.seed}:{self.epoch}:photo:{photo}")
        return self.augment(Image.fromarray(self.arrays[photo]), rng), self.photo_targets, self.allowed[photo]


@dataclass
class RealValidation:
    """The held-out photos, preprocessed once as the embedder frames a query."""
    photos: list[LabelledPhoto]
    tensors: torch.Tensor

    @classmethod
    def build(cls, photos: Sequence[LabelledPhoto], transform) -> RealValidation | None:
        kept, tensors = [], []
        for photo in photos:
            try:
                tensors.append(transform(photo_image(photo)).half())
            except (ImageError, OSError):
                continue
            kept.append(photo)
        return cls(kept, torch.stack(tensors)) if kept else None


def real_kind_precision(rows: torch.Tensor, photos: Sequence[LabelledPhoto], gallery_rows: torch.Tensor,
                        gallery_types: Sequence[str | None], k: int) -> float:
    """Mean share of each photo's k nearest gallery products that are of its kind (leniently,
    as `evaluate --photos` judges)."""
    top = (rows @ gallery_rows.t()).topk(min(k, len(gallery_types)), dim=1).indices.tolist()
    scores = [sum(kind_matches(p.photo_class, gallery_types[j]) for j in row) / k for p, row in zip(photos, top)]
    return float(np.mean(scores))


__all__ = ["RealPhotos", "allowed_types", "partial_label_loss", "decode_photos", "ProductsAndPhotos",
           "RealValidation", "real_kind_precision"]
