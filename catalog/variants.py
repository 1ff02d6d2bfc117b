"""A copy of a catalog with its images degraded on purpose: lower resolution, harsher JPEG,
a textured background instead of studio white. The study's data-quality experiments index and
query such a copy, so a shop learns what its photos need before it takes them.

Ids and every text field are kept, so a run's held-out products and labels still apply."""
from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageOps

from catalog.errors import UserError
from catalog.images import ImageError, open_image
from catalog.photolike import background, product_mask
from catalog.products import Product
from catalog.reader import CSV_COLUMNS, Catalog, read_catalog

BACKGROUNDS = ("white", "textured")
# The quality a copy is written at when no JPEG quality is asked for: near lossless.
KEEP_QUALITY = 95


@dataclass(frozen=True)
class ImageVariant:
    size: tuple[int, int] | None = None     # (width, height) the shot is fitted within, aspect kept
    jpeg_quality: int | None = None         # 1..95: the JPEG quality it is saved at
    background: str = "white"               # white | textured

    def __post_init__(self):
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 8):
            raise UserError(f"image size {self.size}: expected WIDTHxHEIGHT, each at least 8 pixels")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 95:
            raise UserError(f"JPEG quality {self.jpeg_quality}: expected 1 to 95")
        if self.background not in BACKGROUNDS:
            raise UserError(f"background {self.background!r}: expected one of {', '.join(BACKGROUNDS)}")

    @classmethod
    def parse_size(cls, text: str) -> tuple[int, int]:
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
        if not match:
            raise UserError(f"image size {text!r}: expected WIDTHxHEIGHT, e.g. 60x80")
        return int(match.group(1)), int(match.group(2))

    @property
    def is_original(self) -> bool:
        return self.size is None and self.jpeg_quality is None and self.background == "white"

    @property
    def name(self) -> str:
        """A short name that says what was done, used for folders and report rows."""
        parts = []
        if self.size:
            parts.append(f"{self.size[0]}x{self.size[1]}")
        if self.jpeg_quality is not None:
            parts.append(f"jpeg{self.jpeg_quality}")
        if self.background != "white":
            parts.append(self.background)
        return "-".join(parts) or "original"

    def apply(self, image: Image.Image, key: str) -> Image.Image:
        """The degraded image; `key` (the product id) seeds the texture, so a copy made twice
        is the same copy."""
        image = image.convert("RGB")
        if self.background == "textured":
            image = textured_background(image, key)
        if self.size:
            image = ImageOps.contain(image, self.size, Image.Resampling.LANCZOS)
        return image

    def save(self, image: Image.Image, path: Path) -> None:
        image.save(path, "JPEG", quality=self.jpeg_quality or KEEP_QUALITY)


def textured_background(image: Image.Image, key: str) -> Image.Image:
    """The shot with its studio backdrop replaced by one of the shopper photos' textured
    surfaces (the same masking and textures), chosen and seeded by `key`."""
    rng = random.Random(f"textured:{key}")
    return Image.composite(image, background(image.size, rng), product_mask(image))


def _claim(out: Path, variant: ImageVariant) -> None:
    marker = out / "variant.json"
    made = json.dumps(asdict(variant), sort_keys=True)
    if marker.exists() and marker.read_text(encoding="utf-8") != made:
        raise UserError(f"{out} holds a copy made with {marker.read_text(encoding='utf-8')}, not {made}; "
                         f"choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(made, encoding="utf-8")


def _row(product: Product) -> dict[str, str]:
    values = {column: getattr(product, column, None) for column in CSV_COLUMNS}
    values["id"] = product.id
    values["productDisplayName"] = product.name
    return {k: "" if v is None else str(v) for k, v in values.items()}


def write_variant(catalog: Catalog, variant: ImageVariant, out: str | Path,
                  ids: Iterable[str] | None = None) -> Catalog:
    """Write `catalog` (or its products in `ids`) to `out` in the catalog layout with every
    image degraded by `variant`, and read it back. Products whose image cannot be read are
    left out, as indexing would leave them. Images already in `out` from an interrupted run of
    the same variant are kept; a folder made by another variant is refused."""
    out = Path(out)
    wanted = set(ids) if ids is not None else None
    products = [p for p in catalog.products if wanted is None or p.id in wanted]
    images = out / "images"
    _claim(out, variant)
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for product in products:
        target = images / f"{product.id}.jpg"
        if not target.exists():
            try:
                degraded = variant.apply(open_image(product.image), product.id)
            except ImageError:  # skipped by the copy as the index would skip it
                continue
            partial = target.with_suffix(".part")
            variant.save(degraded, partial)
            partial.replace(target)   # a killed run leaves no half-written image behind
        rows.append(_row(product))
    with open(out / "styles.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return read_catalog(out)


__all__ = ["ImageVariant", "BACKGROUNDS", "textured_background", "write_variant"]
