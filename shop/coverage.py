"""How much of the catalog the default model's index holds while background indexing runs, and
what the shop may truthfully say about it.

The indexer's own status is about its passes; the shop counts what a shopper's search covers:
the default model's products against the catalog read at start.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from catalog import Catalog
from search import Searcher
from vectorstore import StoreError

# The indexer's words for a state the shop's count must not hide (it will not grow by itself).
HALTED = ("Indexing stopped", "Indexing waits")


@dataclass(frozen=True)
class IndexCoverage:
    searcher: Searcher
    model: str
    # How far background indexing is, in the indexer's words (None: nothing under way).
    status: Callable[[], str | None]
    # The catalog read at start, while indexing brings the index in line with it.
    catalog: Catalog | None = None

    def indexed(self) -> int:
        try:
            return self.searcher.collection(self.model, check_weights=False).count()
        except StoreError:  # no collection yet: nothing searchable
            return 0

    def total(self) -> int:
        return len(self.catalog.products) if self.catalog is not None else 0

    def indexing(self) -> bool:
        return self.status() is not None

    def partial(self) -> bool:
        """True while indexing and the default model's index holds less than the catalog: the
        shop then lists the catalog, not the index."""
        return self.catalog is not None and self.indexing() and self.indexed() < self.total()

    def line(self) -> str | None:
        """The notice on every page and in /api/health: the indexer's words, except that while
        the default model's index is short of the catalog it says how much searches cover
        (the indexer says "the whole catalog" during a single model's only pass)."""
        said = self.status()
        if said is None or self.catalog is None:
            return said
        indexed, total = self.indexed(), self.total()
        if indexed >= total:
            return said
        if said.startswith(HALTED):
            return f"{said} Searches cover {indexed:,} of {total:,} products."
        return f"Indexing: {indexed:,} of {total:,} products so far; searches cover those."
