"""Browsing the indexed catalog: one page of products passing gender/category filters.

The grid reads the collection's metadata table (every product, already in memory for filter
planning on Chroma), or asks the engine for the page and the counts (LanceDB, which filters
itself: a serving process there never holds the table), so browsing costs no vector work and
stays in step with what search can return.
While background indexing is under way it reads the same kind of table made from the catalog
read at start (`catalog_metadata`), so the shop shows every product at once.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from catalog import Catalog
from catalog.products import CATEGORY_FIELDS
from catalog.text import meaning
from operations import FilterRequest
from vectorstore import Filters
from vectorstore.filters import CATEGORY
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


@dataclass(frozen=True)
class Choice:
    """One category a shopper can pick: `label` shown (and sent), `values` every spelling of it
    in the catalog ("Dress" and "Dresses" are one choice)."""
    label: str
    values: tuple[str, ...]


def catalog_metadata(catalog: Catalog) -> MetadataTable:
    """The catalog's products as a metadata table, in the form a collection stores them (image
    paths resolved), read once: nothing changes a catalog already read."""
    ids = [p.id for p in catalog.products]
    rows = [{**p.metadata(), "image": str(p.image.resolve())} if p.image else p.metadata() for p in catalog.products]
    return MetadataTable(lambda: [(ids, rows)], lambda: len(ids), ttl=float("inf"))


def _id_order(index: pd.Index) -> list:
    # Catalog ids are numbers written as strings: "10" after "9", and non-numeric ids last.
    # Only ASCII digits count: "²" and "٣" pass str.isdigit() but int() refuses the first.
    def key(pid: str):
        pid = str(pid)
        return (0, int(pid), pid) if pid.isascii() and pid.isdigit() else (1, 0, pid)
    return sorted(index, key=key)


class CatalogBrowser:
    """Sorted, filterable pages of a collection's products (vectorstore.MetadataTable): from its
    table where the process holds one (the sorted copy hangs on it, made again only when it is
    reloaded), from the engine itself where it pages and counts without one (LanceDB)."""

    def __init__(self, metadata_source: Callable[[], MetadataTable]):
        self._metadata_source = metadata_source

    def vocabulary(self) -> dict[str, list]:
        return self._metadata_source().vocabulary()

    def category_groups(self) -> list[tuple[str, list[Choice]]]:
        """Category choices grouped by level; a choice is listed once, at its broadest level,
        its spellings merged (see `_choices`)."""
        source = self._metadata_source()
        return source.from_vocabulary("shop-categories",
                                      lambda _: _category_groups(source.value_counts(CATEGORY_FIELDS)))

    def choice_of(self, value: str | None) -> Choice | None:
        """The choice a category value belongs to."""
        for _, choices in self.category_groups():
            for choice in choices:
                if value in choice.values:
                    return choice
        return None

    def resolve(self, gender: str | None, category: str | None) -> Filters:
        """Raise `UnknownFilterValue` (with suggestions) for a value no product has."""
        return FilterRequest(gender=gender, category=category).resolve(self.vocabulary())

    def resolve_choice(self, gender: str | None, category: str | None) -> Filters:
        """As `resolve`, the category widened to every spelling of its choice: the grid offers
        "Dress" once, and it must show the products filed under "Dresses" too."""
        filters = self.resolve(gender, category)
        wanted = filters.get(CATEGORY)
        choice = self.choice_of(wanted[0]) if len(wanted) == 1 else None
        return filters.with_values(CATEGORY, (wanted[0], *choice.values)) if choice else filters

    def crumbs(self, product: Mapping) -> list[str]:
        """A product's department, category and type, a level left out when it only repeats the
        one above in another spelling (Dress › Dresses)."""
        out: list[str] = []
        for value in (product.get(column) for column in CATEGORY_FIELDS):
            if value and not (out and same_meaning(out[-1], value)):
                out.append(value)
        return out

    def page(self, filters: Filters, number: int, size: int) -> Page:
        source, order = self._metadata_source(), ("shop-order", _in_shop_order)
        number = max(1, number)
        rows, total = source.rows(filters, (number - 1) * size, size, order=order)
        pages = max(1, -(-total // size))
        if number > pages:   # past the end: the last page
            number = pages
            rows, total = source.rows(filters, (number - 1) * size, size, order=order)
        return Page([product_dict(pid, row) for pid, row in rows], number, pages, total, filters)

    def product(self, product_id: str) -> dict | None:
        record = self._metadata_source().record(product_id)
        return None if record is None else product_dict(product_id, record)


def same_meaning(a: str, b: str) -> bool:
    """Two category values that differ only by a plural's ending (Dress, Dresses)."""
    return meaning(a) == meaning(b)


def _in_shop_order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[_id_order(frame.index)]


def _choices(counts: Mapping[str, Mapping[str, int]]) -> dict[str, Choice]:
    """Every category value -> its choice. Values that differ only by a trailing "s"/"es" mean
    one thing (the catalog files dresses under subCategory "Dress", articleType "Dresses"): one
    choice, shown as the spelling more products carry (`counts`: per column, per value)."""
    values = list(dict.fromkeys(v for c in CATEGORY_FIELDS for v in counts.get(c, {})))
    groups: dict[str, list[str]] = {}
    for value in values:
        groups.setdefault(meaning(value), []).append(value)
    out = {}
    for members in groups.values():
        if len(members) > 1:
            carried = {m: max(counts.get(c, {}).get(m, 0) for c in CATEGORY_FIELDS) for m in members}
            members = sorted(members, key=lambda m: -carried[m])  # stable: ties keep the broader level
        choice = Choice(members[0], tuple(members))
        out.update({m: choice for m in members})
    return out


def _category_groups(counts: Mapping[str, Mapping[str, int]]) -> list[tuple[str, list[Choice]]]:
    choices = _choices(counts)
    seen: set[Choice] = set()
    groups = []
    for column, label in zip(CATEGORY_FIELDS, ("Department", "Category", "Type")):
        if not counts.get(column):
            continue
        level = []
        for value in sorted(counts[column], key=str):
            choice = choices[value]
            if choice not in seen:
                seen.add(choice)
                level.append(choice)
        if level:
            groups.append((label, sorted(level, key=lambda c: str(c.label))))
    return groups
