"""Metadata filters: which products a search may return.

A `Filters` value is plain data (field -> allowed values; AND across fields, OR within one),
resolved against the catalog's own vocabulary so that "women" finds "Women" and an unknown
value is an error that names the closest known ones instead of an empty answer.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from catalog.errors import UserError
from catalog.products import CATEGORY_FIELDS, METADATA_FIELDS
from catalog.text import clipped

CATEGORY = "category"  # pseudo-field: any of masterCategory, subCategory, articleType


class UnknownFilterValue(UserError):
    def __init__(self, field_name: str, value: str, suggestions: list[str]):
        self.field = field_name
        self.value = value
        self.suggestions = suggestions
        hint = f"; closest known: {', '.join(suggestions)}" if suggestions else ""
        # The value is whatever a client typed: repeated in part, never whole.
        super().__init__(f"no product has {clipped(field_name)} = {clipped(value)!r}{hint}")


ORDER = ("gender", CATEGORY, *CATEGORY_FIELDS, "baseColour", "season", "usage", "year")


@dataclass(frozen=True)
class Filters:
    """`fields`: field -> allowed values; `excluded`: field -> values a product must not have
    ("not black"). A value is never both: adding it to one side takes it off the other."""
    fields: Mapping[str, tuple] = field(default_factory=dict)
    excluded: Mapping[str, tuple] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not any(self.fields.values()) and not any(self.excluded.values())

    def get(self, name: str) -> tuple:
        return tuple(self.fields.get(name, ()))

    def get_excluded(self, name: str) -> tuple:
        return tuple(self.excluded.get(name, ()))

    def names(self) -> list[str]:
        """Every field with a condition, includes or exclusions."""
        return list(dict.fromkeys([n for n, v in self.fields.items() if v] +
                                  [n for n, v in self.excluded.items() if v]))

    def with_values(self, name: str, values: Iterable) -> Filters:
        values = tuple(dict.fromkeys(values))
        return replace(self, fields=_set(self.fields, name, values),
                       excluded=_set(self.excluded, name, [v for v in self.get_excluded(name) if v not in values]))

    def with_excluded(self, name: str, values: Iterable) -> Filters:
        """Also leave out products whose `name` is one of `values` (added to any exclusions)."""
        values = tuple(dict.fromkeys([*self.get_excluded(name), *values]))
        return replace(self, excluded=_set(self.excluded, name, values),
                       fields=_set(self.fields, name, [v for v in self.get(name) if v not in values]))

    def without(self, name: str) -> Filters:
        return replace(self, fields=_set(self.fields, name, ()), excluded=_set(self.excluded, name, ()))

    def only(self, name: str) -> Filters:
        """The conditions on one field alone."""
        return Filters({name: self.get(name)} if self.get(name) else {},
                       {name: self.get_excluded(name)} if self.get_excluded(name) else {})

    def merged(self, other: Filters) -> Filters:
        out = self
        for name, values in other.fields.items():
            out = out.with_values(name, values)
        for name, values in other.excluded.items():
            out = out.with_excluded(name, values)
        return out

    def describe(self) -> str:
        parts = []
        for name in [n for n in ORDER if n in self.names()] + [n for n in self.names() if n not in ORDER]:
            prefix = "" if name in ORDER else f"{name}: "
            if self.get(name):
                parts.append(prefix + " or ".join(str(v) for v in self.get(name)))
            if self.get_excluded(name):
                parts.append(prefix + "not " + " or ".join(str(v) for v in self.get_excluded(name)))
        return " · ".join(parts)

    def mask(self, table: pd.DataFrame) -> np.ndarray:
        """Rows of a metadata table (one row per product) that pass every condition."""
        keep = np.ones(len(table), dtype=bool)
        for conditions, wanted in ((self.fields, True), (self.excluded, False)):
            for name, values in conditions.items():
                if values:
                    keep &= _hits(table, name, values) if wanted else ~_hits(table, name, values)
        return keep

    def to_where(self) -> dict | None:
        """The same conditions in Chroma's `where` syntax (for tools that query Chroma directly)."""
        clauses = []
        for name, values in self.fields.items():
            if values:
                ors = [{c: {"$in": list(values)}} for c in columns_of(name)]
                clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
        for name, values in self.excluded.items():
            if values:
                clauses.extend({c: {"$nin": list(values)}} for c in columns_of(name))
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _set(conditions: Mapping[str, tuple], name: str, values: Iterable) -> dict[str, tuple]:
    updated = dict(conditions)
    values = tuple(values)
    if values:
        updated[name] = values
    else:
        updated.pop(name, None)
    return updated


def columns_of(name: str) -> tuple[str, ...]:
    """The stored columns a filter field names (`category`: any of the three category levels)."""
    return CATEGORY_FIELDS if name == CATEGORY else (name,)


def _hits(table: pd.DataFrame, name: str, values) -> np.ndarray:
    hit = np.zeros(len(table), dtype=bool)
    for column in columns_of(name):
        if column in table.columns:
            hit |= table[column].isin(list(values)).to_numpy()
    return hit


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


def resolve_filters(raw: Mapping[str, Iterable[str]], vocabulary: Mapping[str, list],
                    excluded: Mapping[str, Iterable[str]] | None = None) -> Filters:
    """Typed values (`raw`: wanted; `excluded`: left out) in the catalog's own spelling."""
    out = Filters()
    for name, values in raw.items():
        values = [canonical_value(name, v, vocabulary) for v in values if str(v).strip()]
        if values:
            out = out.with_values(name, list(out.get(name)) + values)
    for name, values in (excluded or {}).items():
        values = [canonical_value(name, v, vocabulary) for v in values if str(v).strip()]
        if values:
            out = out.with_excluded(name, values)
    return out
