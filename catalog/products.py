"""The product record, as the Kaggle "Fashion Product Images" layout describes it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Metadata keys as stored in the vector store and returned by `search --json`:
# the CSV's own column names, except productDisplayName, which is `name`.
METADATA_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour",
                   "season", "year", "usage", "name")
# Fields a shopper filters on with words or controls (free text and year are not vocabularies).
VOCABULARY_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour",
                     "season", "usage")
CATEGORY_FIELDS = ("masterCategory", "subCategory", "articleType")


@dataclass(frozen=True)
class Product:
    id: str
    gender: str | None = None
    masterCategory: str | None = None
    subCategory: str | None = None
    articleType: str | None = None
    baseColour: str | None = None
    season: str | None = None
    year: int | None = None
    usage: str | None = None
    name: str | None = None
    image: Path | None = None

    def metadata(self) -> dict[str, str | int]:
        """The fields that have a value; a vector store rejects None, and a missing value
        must stay missing rather than become the text "nan"."""
        out: dict[str, str | int] = {}
        for key in METADATA_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out
