"""Browsing the indexed catalog: one page of products passing gender/category filters.

The grid reads the collection's metadata table (every product, already in memory for filter
planning), so browsing costs no vector work and stays in step with what search can return.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from catalog.products import CATEGORY_FIELDS
from operations import FilterRequest
from vectorstore import Filters
from vectorstore.metadata import MetadataTable


@dataclass(frozen=True)
class Page:
    products: list[dict]
    number: int       # 1-based, clamped into range
    pages: int        # at least 1, even when nothing matches
    total: int        # products passing the filters
    filters: Filters


def product_dict(product_id: str, row: Mapping) -> dict:
    """A metadata row as a plain dict with its id; missing values left out, years as int."""
    out = {"id": str(product_id)}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and value != value):
            continue
        if hasattr(value, "item"):
            value = value.item()
        if key == "year" and isinstance(value, float):
            value = int(value)
        out[key] = value
    return out


def _id_order(index: pd.Index) -> list:
    # Catalog ids are numbers written as strings: "10" after "9", and non-numeric ids last.
    # Only ASCII digits count: "²" and "٣" pass str.isdigit() but int() refuses the first.
    def key(pid: str):
        pid = str(pid)
        return (0, int(pid), pid) if pid.isascii() and pid.isdigit() else (1, 0, pid)
    return sorted(index, key=key)


class CatalogBrowser:
    """Sorted, filterable view of a collection's metadata table (vectorstore.MetadataTable);
    the sorted copy hangs on the table, so it is made again only when the table is reloaded."""

    def __init__(self, metadata_source: Callable[[], MetadataTable]):
        self._metadata_source = metadata_source

    def table(self) -> pd.DataFrame:
        return self._metadata_source().derived("shop-order", lambda frame: frame.loc[_id_order(frame.index)])

    def vocabulary(self) -> dict[str, list]:
        return self._metadata_source().vocabulary()

    def category_groups(self) -> list[tuple[str, list[str]]]:
        """Category choices grouped by level; a value is listed once, at its broadest level."""
        vocabulary = self.vocabulary()
        seen: set[str] = set()
        groups = []
        for column, label in zip(CATEGORY_FIELDS, ("Department", "Category", "Type")):
            values = [v for v in vocabulary.get(column, []) if v not in seen]
            seen.update(values)
            if values:
                groups.append((label, values))
        return groups

    def resolve(self, gender: str | None, category: str | None) -> Filters:
        """Raise `UnknownFilterValue` (with suggestions) for a value no product has."""
        return FilterRequest(gender=gender, category=category).resolve(self.vocabulary())

    def page(self, filters: Filters, number: int, size: int) -> Page:
        table = self.table()
        selected = table[filters.mask(table)] if not filters.is_empty() else table
        total = len(selected)
        pages = max(1, -(-total // size))
        number = min(max(1, number), pages)
        chunk = selected.iloc[(number - 1) * size: number * size]
        products = [product_dict(pid, row) for pid, row in zip(chunk.index, chunk.to_dict("records"))]
        return Page(products, number, pages, total, filters)

    def product(self, product_id: str) -> dict | None:
        table = self.table()
        if product_id not in table.index:
            return None
        return product_dict(product_id, table.loc[product_id].to_dict())
