"""The catalog as training material: a seeded product-level split, label vocabularies, images
decoded once into memory, and the datasets the loops read from."""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from catalog import ImageError, Product, open_image
from catalog.photolike import CutOut, cut_out
from embedding.architectures import short_side_size
from training.settings import TARGETS

IGNORE = -100  # cross-entropy's ignore_index: a product without this label teaches nothing here


@dataclass(frozen=True)
class Split:
    train: list[Product]
    val: list[Product]


def sample_products(products: Sequence[Product], limit: int | None, seed: int) -> list[Product]:
    """A seeded sample of `limit` products (all of them without a limit), in catalog order."""
    if not limit or limit >= len(products):
        return list(products)
    chosen = set(random.Random(f"{seed}:sample").sample(range(len(products)), limit))
    return [p for i, p in enumerate(products) if i in chosen]


def split_products(products: Sequence[Product], val_fraction: float, seed: int) -> Split:
    """Hold out `val_fraction` of each articleType's products, chosen by `seed`.

    Whole products go to one side, so no view of a validation product is ever trained on.
    Stratifying keeps rare types represented in proportion; a type with one product, or a
    product without an articleType, cannot be judged and stays in training.
    """
    groups: dict[str, list[Product]] = {}
    for product in products:
        groups.setdefault(product.articleType or "", []).append(product)
    val_ids: set[str] = set()
    for article_type in sorted(groups):
        members = sorted(groups[article_type], key=lambda p: p.id)
        if not article_type or len(members) < 2:
            continue
        random.Random(f"{seed}:split:{article_type}").shuffle(members)
        n_val = min(len(members) - 1, int(len(members) * val_fraction + 0.5))
        val_ids.update(p.id for p in members[:n_val])
    return Split(train=[p for p in products if p.id not in val_ids],
                 val=[p for p in products if p.id in val_ids])


@dataclass(frozen=True)
class LabelVocab:
    """For each target, the values seen in training, in a fixed (sorted) order."""
    values: dict[str, tuple[str, ...]]

    @classmethod
    def from_products(cls, products: Sequence[Product], targets: Sequence[str] = TARGETS) -> LabelVocab:
        return cls({t: tuple(sorted({getattr(p, t) for p in products if getattr(p, t)})) for t in targets})

    def as_dict(self) -> dict[str, list[str]]:
        return {t: list(v) for t, v in self.values.items()}

    def sizes(self) -> dict[str, int]:
        return {t: len(v) for t, v in self.values.items()}

    def encode(self, product: Product) -> tuple[int, ...]:
        codes = []
        for target, values in self.values.items():
            value = getattr(product, target)
            codes.append(values.index(value) if value in values else IGNORE)
        return tuple(codes)


def downsize(image: Image.Image, short_side: int) -> Image.Image:
    scale = short_side / min(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


class _Calls(Dataset):
    """`function(item)` for each item, as a dataset a loader can spread over processes."""

    def __init__(self, function: Callable, items: Sequence):
        self.function, self.items = function, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.function(self.items[index])


def _as_is(sample):
    return sample


def map_in_processes(function: Callable, items: Sequence, workers: int, desc: str, progress: bool = True) -> list:
    """`[function(item) for item in items]`, in order, spread over `workers` loader processes
    (0: in this one). Decoding and cutting out a catalog is a few minutes' single-core work
    before the first step; a loader's forked processes share it without pickling `function`.
    `function` returns its failures rather than raising them, so one bad image stops nothing."""
    loader = DataLoader(_Calls(function, items), batch_size=None, num_workers=workers, collate_fn=_as_is)
    return list(tqdm(loader, total=len(items), desc=desc, unit="img", disable=not progress, leave=False))


def _decoded(product: Product, short_side: int, decode: Callable, cut_outs: bool):
    """(pixels, cut-out or None, None) for a readable image; (None, None, reason) otherwise."""
    try:
        image = decode(product.image)
    except ImageError as exc:
        return None, None, str(exc)
    small = downsize(image, short_side)
    return np.asarray(small), cut_out(small) if cut_outs else None, None


@dataclass
class DecodedImages:
    """Catalog images decoded once and kept small: the product's pixels at the resolution
    training needs, so an epoch costs no JPEG decoding. Unreadable files are reported.
    With `cut_outs`, each product's cut-out (what a photo-like view is staged from) is made
    once too, instead of on every photo-like view."""
    products: list[Product]
    arrays: list[np.ndarray]
    unreadable: list[tuple[Product, str]] = field(default_factory=list)
    cuts: list[CutOut] | None = None

    @classmethod
    def load(cls, products: Sequence[Product], short_side: int, progress: bool = True,
             decode: Callable = open_image, cut_outs: bool = False, workers: int = 0) -> DecodedImages:
        what = "decoding and cutting out images" if cut_outs else "decoding images"
        done = map_in_processes(partial(_decoded, short_side=short_side, decode=decode, cut_outs=cut_outs),
                                products, workers, what, progress)
        kept, arrays, unreadable, cuts = [], [], [], []
        for product, (pixels, cut, why) in zip(products, done):
            if why is not None:
                unreadable.append((product, why))
                continue
            kept.append(product)
            arrays.append(pixels)
            cuts.append(cut)
        return cls(kept, arrays, unreadable, cuts if cut_outs else None)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.arrays[index])

    def cut(self, index: int) -> CutOut | None:
        return self.cuts[index] if self.cuts is not None else None


class AugmentedProducts(Dataset):
    """One augmented view per product per epoch, with its label codes.

    Every view's randomness comes from a `random.Random` seeded by (seed, epoch, index), so
    an epoch looks the same with any number of loader processes and after a resume.
    """

    def __init__(self, images: DecodedImages, vocab: LabelVocab,
                 augment: Callable[[Image.Image, random.Random, CutOut | None], torch.Tensor], seed: int):
        self.images = images
        self.targets = torch.tensor([vocab.encode(p) for p in images.products], dtype=torch.long)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images.products)

    def __getitem__(self, index: int):
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        return self.augment(self.images.image(index), rng, self.images.cut(index)), self.targets[index]


def epoch_batches(items: int | Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """A seeded shuffle of the dataset's indices `items` (or of range(items)) cut into batches;
    a last batch of one image is merged into the one before it, since batch norm cannot train
    on a single image."""
    indices = range(items) if isinstance(items, int) else list(items)
    shuffled = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    order = [indices[i] for i in shuffled]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


__all__ = ["IGNORE", "Split", "sample_products", "split_products", "LabelVocab", "short_side_size",
           "downsize", "map_in_processes", "DecodedImages", "AugmentedProducts", "epoch_batches"]
