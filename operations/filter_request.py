"""The one builder from what a surface offers (a gender, a category, `--where` conditions) to
typed filters in the catalog's own spelling."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from catalog.errors import UserError
from vectorstore.filters import CATEGORY, Filters, resolve_filters


@dataclass(frozen=True)
class FilterRequest:
    gender: str | None = None
    category: str | None = None
    # "KEY=VALUE" wants a value, "KEY!=VALUE" leaves it out (the command line's --where).
    where: tuple[str, ...] = ()

    def __post_init__(self):
        for item in self.where:
            if "=" not in item:
                raise UserError(f"--where {item!r}: expected KEY=VALUE or KEY!=VALUE, e.g. baseColour=Black")

    def raw(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """(wanted, left out), as typed."""
        wanted: dict[str, list[str]] = {}
        excluded: dict[str, list[str]] = {}
        if self.gender and self.gender.strip():
            wanted["gender"] = [self.gender]
        if self.category and self.category.strip():
            wanted[CATEGORY] = [self.category]
        for item in self.where:
            key, value = item.split("=", 1)
            target = wanted
            if key.endswith("!"):
                key, target = key[:-1], excluded
            target.setdefault(key.strip(), []).append(value.strip())
        return wanted, excluded

    def resolve(self, vocabulary: Mapping[str, list]) -> Filters:
        """Typed filters; `UnknownFilterValue` (with the closest values) for one no product has."""
        wanted, excluded = self.raw()
        if not wanted and not excluded:
            return Filters()
        return resolve_filters(wanted, vocabulary, excluded)
