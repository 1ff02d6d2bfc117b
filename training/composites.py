"""Products small in a busy photo, for the garment parser: catalog cut-outs (bags, shoes,
watches, sunglasses, belts, caps, ties) pasted at a few percent of the frame onto the street
photos' real scenes, their pixels labelled with the product's parser class.

The street photos show garments worn; shoppers also photograph a bag on a table or shoes by a
door. Pasted cut-outs teach the parser to find such products in clutter, and, with products and
scenes held out of training, measure it (bench/small_products.py). Everything random comes from
the seed, so the same command makes the same composites.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from catalog import Product, read_catalog
from catalog.photolike import cut_out
from embedding.garments import GARMENT_CLASSES


@dataclass(frozen=True)
class CompositeSettings:
    count: int = 500                        # composites made
    area: tuple[float, float] = (0.05, 0.15)  # the product's box, as a share of the frame
    held_out: float = 0.1                   # share of the eligible products never pasted in training
    seed: int = 0


def parser_class(product: Product) -> int | None:
    """The parser class a catalog product is an item of, for the small things a shopper
    photographs on their own (apparel is learned from the street photos themselves)."""
    values = {product.masterCategory, product.subCategory, product.articleType}
    for index, garment in enumerate(GARMENT_CLASSES):
        if garment.name in ("bag", "shoes", "hat", "glasses", "belt", "scarf or tie", "watch") and \
                values & set(garment.search_categories):
            return index
    return None


def eligible_products(catalog_dir: Path, held_out: float, seed: int) -> tuple[list, list]:
    """(products to paste in training, products held out for checking), split by id."""
    products = [(p, c) for p in read_catalog(catalog_dir).products if (c := parser_class(p)) is not None]

    def draw(product: Product) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{product.id}".encode()).digest()[:8], "big") / 2 ** 64
    return ([pc for pc in products if draw(pc[0]) >= held_out], [pc for pc in products if draw(pc[0]) < held_out])


def paste(scene: Image.Image, labels: np.ndarray | None, product: Product, index: int, rng: random.Random,
          area: tuple[float, float]) -> tuple[Image.Image, np.ndarray, tuple[float, float, float, float]]:
    """The scene with the product's cut-out pasted at a random place, its box a share of the
    frame drawn from `area`; the labels (parser classes, or all 0) with its pixels set to
    `index`; and its box as fractions."""
    piece = cut_out(Image.open(product.image))
    width, height = scene.size
    share = rng.uniform(*area)
    aspect = piece.product.width / max(1, piece.product.height)
    h = int(round((share * width * height / aspect) ** 0.5))
    w = max(4, int(round(h * aspect)))
    h = max(4, min(h, height - 2))
    w = min(w, width - 2)
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    product_pixels = piece.product.resize((w, h), Image.Resampling.BILINEAR)
    alpha = piece.alpha.resize((w, h), Image.Resampling.BILINEAR)
    out = scene.convert("RGB").copy()
    out.paste(product_pixels, (x, y), alpha)
    labels = np.zeros((height, width), dtype=np.int64) if labels is None else labels.copy()
    region = labels[y:y + h, x:x + w]
    region[np.asarray(alpha) > 127] = index
    return out, labels, (x / width, y / height, (x + w) / width, (y + h) / height)


def make_composites(scenes: list, table: np.ndarray, products: list, settings: CompositeSettings):
    """`settings.count` (photo, parser-class labels) pairs: each a street photo (its garments
    still labelled) with one product pasted into it."""
    rng = random.Random(settings.seed)
    for _ in range(settings.count):
        scene = rng.choice(scenes)
        product, index = rng.choice(products)
        labels = table[np.asarray(Image.open(scene.mask))]
        photo, labels, _ = paste(Image.open(scene.image), labels, product, index, rng, settings.area)
        yield photo, labels


__all__ = ["CompositeSettings", "eligible_products", "make_composites", "parser_class", "paste"]
