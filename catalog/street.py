"""Reading a folder of outlined street photos (the layout of ../shared/photos/street): images/
NNNN.jpg, masks/NNNN.png with one label value per pixel, and labels.csv (value -> label)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Photo:
    stem: str
    image: Path
    mask: Path


def street_photos(folder: Path, limit: int | None = None) -> list[Photo]:
    photos = [Photo(p.stem, p, folder / "masks" / f"{p.stem}.png") for p in sorted((folder / "images").glob("*.jpg"))]
    photos = [p for p in photos if p.mask.is_file()]
    return photos[:limit] if limit else photos


def read_labels(folder: Path) -> dict[int, str]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        return {int(row["value"]): row["label"].strip() for row in csv.DictReader(f)}


__all__ = ["Photo", "read_labels", "street_photos"]
