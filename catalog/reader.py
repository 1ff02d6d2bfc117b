"""Reading a catalog folder: `styles.csv` and `images/<id>.jpg`, quirks of the real file included."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from catalog.products import Product

CSV_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
               "season", "year", "usage", "productDisplayName")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SPARE_COLUMNS = 16


class CatalogError(ValueError):
    """The folder cannot be used as a catalog at all (no styles.csv, unusable header)."""


@dataclass(frozen=True)
class Skipped:
    id: str | None
    line: int | None
    reason: str


def count_reasons(skipped) -> dict[str, int]:
    """How many were skipped for each reason ("missing image: ..." counts as "missing image")."""
    counts: dict[str, int] = {}
    for s in skipped:
        key = s.reason.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass
class Catalog:
    folder: Path
    products: list[Product]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def images_dir(self) -> Path:
        return self.folder / "images"

    def by_id(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Shops export from spreadsheets; latin-1 never fails and keeps the row count honest.
        return raw.decode("latin-1")


def _check_header(text: str, path: Path) -> list[str]:
    first = text.splitlines()[0] if text.strip() else ""
    header = [h.strip() for h in next(csv.reader([first]))] if first else []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise CatalogError(
            f"{path}: the header must name the columns {', '.join(CSV_COLUMNS)}; "
            f"missing: {', '.join(missing)} (found: {', '.join(header) or 'nothing'})")
    return header


def _clean(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def _year(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def find_image(images_dir: Path, product_id: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = images_dir / f"{product_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_catalog(folder: str | Path, *, check_images: bool = True) -> Catalog:
    """Read `folder/styles.csv` into products plus a report of the rows skipped and why.

    Rows whose display name holds unquoted commas keep the whole name; empty fields become
    None; ids stay strings (leading zeros kept). Only a missing file or an unusable header
    raise: everything row-level is reported in `Catalog.skipped`.
    """
    folder = Path(folder)
    path = folder / "styles.csv"
    if not path.is_file():
        raise CatalogError(f"{folder}: no styles.csv here; a catalog folder holds styles.csv "
                           "and images/<id>.jpg (the Kaggle 'Fashion Product Images' layout)")
    text = _read_text(path)
    header = _check_header(text, path)
    name_at = header.index("productDisplayName")
    width = len(header)

    def rejoin(fields: list[str]) -> list[str]:
        extra = len(fields) - width
        return fields[:name_at] + [",".join(fields[name_at:name_at + extra + 1])] + \
            fields[name_at + extra + 1:]

    # The original file leaves commas in names unquoted. Spare columns catch the surplus
    # fields (explicit names also stop pandas from taking an over-long first row for an index
    # column); each over-long row is then glued back together by `rejoin`.
    spare = [f"__surplus{i}" for i in range(SPARE_COLUMNS)]
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, engine="python",
                        names=header + spare, header=None, skiprows=1, index_col=False, skip_blank_lines=True,
                        on_bad_lines=lambda fields: rejoin(fields)[:width] + [""] * SPARE_COLUMNS)
    rows = []
    for values in frame.itertuples(index=False, name=None):
        fields = [v for v in values]
        while len(fields) > width and (fields[-1] is None or fields[-1] == "" or fields[-1] != fields[-1]):
            fields.pop()
        rows.append(dict(zip(header, rejoin(fields) if len(fields) > width else fields[:width])))

    products: list[Product] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    images_dir = folder / "images"
    for line, row in enumerate(rows, start=2):
        pid = _clean(row.get("id"))
        if pid is None:
            skipped.append(Skipped(None, line, "malformed row: no id"))
            continue
        if "/" in pid or "\\" in pid or pid in (".", "..") or "\x00" in pid:
            skipped.append(Skipped(pid, line, "malformed row: the id cannot name an image file"))
            continue
        if pid in seen:
            skipped.append(Skipped(pid, line, "malformed row: duplicate id"))
            continue
        if _clean(row.get("productDisplayName")) is None and _clean(row.get("articleType")) is None:
            skipped.append(Skipped(pid, line, "malformed row: no name and no article type"))
            continue
        seen.add(pid)
        image = find_image(images_dir, pid) if check_images else images_dir / f"{pid}.jpg"
        if image is None:
            skipped.append(Skipped(pid, line, f"missing image: images/{pid}.jpg"))
            continue
        products.append(Product(
            id=pid,
            gender=_clean(row.get("gender")),
            masterCategory=_clean(row.get("masterCategory")),
            subCategory=_clean(row.get("subCategory")),
            articleType=_clean(row.get("articleType")),
            baseColour=_clean(row.get("baseColour")),
            season=_clean(row.get("season")),
            year=_year(_clean(row.get("year"))),
            usage=_clean(row.get("usage")),
            name=_clean(row.get("productDisplayName")),
            image=image,
        ))
    return Catalog(folder=folder, products=products, skipped=skipped)
