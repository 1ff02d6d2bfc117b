"""Every product's metadata of one collection, held in memory once per collection handle.

Filtered searches are planned on it (how many products pass a filter), the shop browses it,
and the chat's words and controls are matched against its vocabulary. It is read from Chroma
page by page and read again when the collection's size changes; whatever a caller derives
from it (the chat's phrase index, the shop's sorted grid) hangs on `derived`, so it is rebuilt
with the table and nowhere else keeps a copy.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from catalog.memory import return_freed_memory
from catalog.products import METADATA_FIELDS, VOCABULARY_FIELDS

# How often a read checks whether another process changed the collection's size.
TABLE_TTL_SECONDS = 2.0
# Columns every table has, whatever the stored records hold.
COLUMNS = (*METADATA_FIELDS, "image", "digest")

Pages = Callable[[], Iterable[tuple[list[str], list[dict]]]]


class MetadataTable:
    def __init__(self, pages: Pages, count: Callable[[], int], ttl: float = TABLE_TTL_SECONDS):
        self._read_pages = pages
        self._count = count
        self._ttl = ttl
        self._lock = threading.Lock()
        self._frame: pd.DataFrame | None = None
        self._derived: dict[str, object] = {}
        self._derived_for: pd.DataFrame | None = None
        self._loaded_count = -1
        self._checked = 0.0

    def frame(self, fresh: bool = False) -> pd.DataFrame:
        """Every product's metadata, indexed by id (checked against the collection's size at
        most every `ttl` seconds, or now with `fresh`)."""
        now = time.monotonic()
        if self._frame is not None and not fresh and now - self._checked < self._ttl:
            return self._frame
        count = self._count()
        with self._lock:
            self._checked = now
            if self._frame is None or count != self._loaded_count:
                self._load()
            return self._frame

    def record(self, product_id: str) -> dict | None:
        """One product's fields (missing ones left out, years as int), or None."""
        return self.records([product_id]).get(product_id)

    def records(self, product_ids) -> dict[str, dict]:
        """The fields of those of `product_ids` that are stored. Made from the table when asked:
        a dict per product kept beside it took 2.1 GB more at a million products
        (bench/scale.py), ten times the table itself."""
        frame = self.frame()
        found = [pid for pid in dict.fromkeys(product_ids) if pid in frame.index]
        if not found:
            return {}
        rows = frame.loc[found].to_dict("records")
        return {pid: _row_dict(row) for pid, row in zip(found, rows)}

    def vocabulary(self) -> dict[str, list]:
        """The values each filterable field takes, sorted."""
        return self.derived("vocabulary", _vocabulary)

    def value_counts(self, columns: tuple[str, ...]) -> dict[str, dict]:
        """Per column, how many products carry each value (the shop's category choices)."""
        return self.derived("value-counts:" + ",".join(columns),
                            lambda frame: {c: frame[c].dropna().value_counts().to_dict() for c in columns})

    def rows(self, filters, offset: int, limit: int,
             order: tuple[str, Callable[[pd.DataFrame], pd.DataFrame]] | None = None) -> tuple[list[tuple[str, dict]], int]:
        """`limit` products from `offset` on of those that pass `filters` (in the order `order`
        builds: a name and a function of the table, made once per load), and how many pass."""
        table = self.derived(order[0], order[1]) if order else self.frame()
        selected = table if filters is None or filters.is_empty() else table[filters.mask(table)]
        chunk = selected.iloc[offset: offset + limit]
        return [(pid, _row_dict(row)) for pid, row in zip(chunk.index, chunk.to_dict("records"))], len(selected)

    def from_vocabulary(self, name: str, build: Callable[[dict[str, list]], object]):
        """`build(vocabulary)`, computed once per vocabulary (what needs no other column)."""
        return self.derived(name, lambda _: build(self.vocabulary()))

    def derived(self, name: str, build: Callable[[pd.DataFrame], object]):
        """`build(frame)`, computed once per load of the table."""
        frame = self.frame()
        with self._lock:
            if self._derived_for is not frame:
                self._derived, self._derived_for = {}, frame
            if name in self._derived:
                return self._derived[name]
        value = build(frame)  # outside the lock: a build may take a while
        with self._lock:
            if self._derived_for is frame:
                self._derived[name] = value
        return value

    def refresh(self) -> None:
        """Read the table again at the next use (after this process changed the collection)."""
        with self._lock:
            self._frame = None

    def _load(self) -> None:
        # A frame per page, joined at the end: Chroma hands metadata over as a dict per product,
        # and holding every page's dicts until the end left the process's memory at the peak.
        pages = [pd.DataFrame([m or {} for m in page_rows], index=pd.Index(page_ids, name="id"))
                 for page_ids, page_rows in self._read_pages()]
        frame = pd.concat(pages) if pages else pd.DataFrame(index=pd.Index([], name="id"))
        for column in COLUMNS:
            if column not in frame.columns:
                frame[column] = None
        # What was read, not what `count` said before: a collection rebuilt by another process
        # between the two holds as many products again at the end, and a table kept at the
        # earlier count would never be read again (a shop answering nothing after a rebuild).
        self._frame, self._loaded_count = frame, len(frame)
        del pages
        return_freed_memory()  # a million short-lived dicts were freed


def _vocabulary(frame: pd.DataFrame) -> dict[str, list]:
    return {column: sorted(frame[column].dropna().unique().tolist(), key=str)
            for column in (*VOCABULARY_FIELDS, "year")}


def _row_dict(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if key == "year" and isinstance(value, float):
            value = int(value)
        out[key] = value
    return out
