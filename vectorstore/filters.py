"""Metadata filters: which products a search may return.

A `Filters` value is plain data (field -> allowed values; AND across fields, OR within one),
resolved against the catalog's own vocabulary so that "women" finds "Women" and an unknown
value is an error that names the closest known ones instead of an empty answer.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from catalog.products import CATEGORY_FIELDS, METADATA_FIELDS

CATEGORY = "category"  # pseudo-field: any of masterCategory, subCategory, articleType


class UnknownFilterValue(ValueError):
    def __init__(self, field_name: str, value: str, suggestions: list[str]):
        self.field = field_name
        self.value = value
        self.suggestions = suggestions
        hint = f"; closest known: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(f"no product has {field_name} = {value!r}{hint}")


@dataclass(frozen=True)
class Filters:
    fields: Mapping[str, tuple] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not any(self.fields.values())

    def get(self, name: str) -> tuple:
        return tuple(self.fields.get(name, ()))

    def with_values(self, name: str, values: Iterable) -> "Filters":
        updated = dict(self.fields)
        values = tuple(dict.fromkeys(values))
        if values:
            updated[name] = values
        else:
            updated.pop(name, None)
        return replace(self, fields=updated)

    def without(self, name: str) -> "Filters":
        return self.with_values(name, ())

    def merged(self, other: "Filters") -> "Filters":
        out = self
        for name, values in other.fields.items():
            out = out.with_values(name, values)
        return out

    def describe(self) -> str:
        parts = []
        for name in ("gender", CATEGORY, *CATEGORY_FIELDS, "baseColour", "season", "usage", "year"):
            if self.fields.get(name):
                parts.append(" or ".join(str(v) for v in self.fields[name]))
        for name, values in self.fields.items():
            if name not in ("gender", CATEGORY, *CATEGORY_FIELDS, "baseColour", "season", "usage", "year") and values:
                parts.append(f"{name}: " + " or ".join(str(v) for v in values))
        return " · ".join(parts)

    def mask(self, table: pd.DataFrame) -> np.ndarray:
        """Rows of a metadata table (one row per product) that pass every condition."""
        keep = np.ones(len(table), dtype=bool)
        for name, values in self.fields.items():
            if not values:
                continue
            columns = CATEGORY_FIELDS if name == CATEGORY else (name,)
            hit = np.zeros(len(table), dtype=bool)
            for column in columns:
                if column in table.columns:
                    hit |= table[column].isin(list(values)).to_numpy()
            keep &= hit
        return keep

    def to_where(self) -> dict | None:
        """The same conditions in Chroma's `where` syntax (for tools that query Chroma directly)."""
        clauses = []
        for name, values in self.fields.items():
            if not values:
                continue
            columns = CATEGORY_FIELDS if name == CATEGORY else (name,)
            ors = [{c: {"$in": list(values)}} for c in columns]
            clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


FILTERABLE = tuple(f for f in METADATA_FIELDS if f != "name") + (CATEGORY,)


def canonical_value(field_name: str, value: str, vocabulary: Mapping[str, list]) -> str | int:
    """Map a typed value onto the catalog's own spelling, or raise `UnknownFilterValue`."""
    if field_name not in FILTERABLE:
        raise UnknownFilterValue(field_name, value, difflib.get_close_matches(field_name, FILTERABLE, 3))
    if field_name == CATEGORY:
        known = sorted({v for f in CATEGORY_FIELDS for v in vocabulary.get(f, [])}, key=str)
    else:
        known = list(vocabulary.get(field_name, []))
    text = str(value).strip()
    by_lower = {str(v).lower(): v for v in known}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    for variant in (text.lower().rstrip("s"), text.lower() + "s", text.lower() + "es"):
        if variant in by_lower:
            return by_lower[variant]
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=3, cutoff=0.6)
    raise UnknownFilterValue(field_name, text, [str(by_lower[c]) for c in close])


def resolve_filters(raw: Mapping[str, Iterable[str]], vocabulary: Mapping[str, list]) -> Filters:
    out = Filters()
    for name, values in raw.items():
        values = [canonical_value(name, v, vocabulary) for v in values if str(v).strip()]
        if values:
            out = out.with_values(name, list(out.get(name)) + values)
    return out
