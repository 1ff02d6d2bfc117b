"""A colour or gender word keeps the photo's kind: red heels and "black" are black heels.

A filter on colour, gender, season or usage changes which products are near enough: among black
products, the nearest to a red heel's photo were flat sandals, and the heading went from
"Heels" to "Shoes". So the kind the photo's nearest products agree on, without those words
(within its item's category, for an item of an outfit), joins the filters when the catalog has
products of that kind under them; the rest of the k are filled from the filters alone.

A shopper's own photo (a shirt on a bed, shoes from above) is also searched within the kind group
a model trained on such photos reads in it (`kind_scope`): its nearest catalog products are
often of another kind.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from catalog.products import CATEGORY_FIELDS
from embedding.kinds import GROUPS
from search.searcher import Answer, Searcher
from vectorstore.filters import CATEGORY, Filters

# The photo's kind: the articleType at least `KIND_SHARE` of its `KIND_VOTES` nearest products have.
KIND_VOTES = 10
KIND_SHARE = 0.6
# A shopper's own photo is searched within the kind group the kind model reads when it is at
# least this sure (docs/figures.md: the held-out home photos' kind P@5 by threshold).
KIND_MIN_PROBABILITY = 0.5


def names_a_kind(wanted: Filters, within: Filters = Filters()) -> bool:
    """Whether `wanted` names a kind beyond `within`'s (the shopper said "sandals", "footwear")."""
    return any(wanted.get(name) != within.get(name) for name in (CATEGORY, *CATEGORY_FIELDS))


def kind_scope(searcher: Searcher, model: str, vector: np.ndarray, image: Image.Image) -> Filters:
    """A shopper's own photo (not a studio shot): the articleTypes of the kind group read in it
    (the kind model, or a fine-tune's own classifier: `Searcher.kind_reader`), as a filter; no
    filter for a studio shot, when nothing reads these vectors' kind, or when it is unsure."""
    kinds = searcher.kind_reader(model)
    if kinds is None or searcher.query_views.is_studio_shot(image):
        return Filters()
    group = kinds.kind(vector, KIND_MIN_PROBABILITY)
    if group is None:
        return Filters()
    known = set(searcher.vocabulary(model).get("articleType", []))
    return Filters().with_values("articleType", [t for t in GROUPS[group] if t in known])


def search_photo(searcher: Searcher, model: str, vector: np.ndarray, k: int, wanted: Filters, scope: Filters, *,
                 colour: Mapping[str, float] | None = None) -> Answer:
    """A whole photo's search: within its kind scope (`kind_scope`) unless the shopper named a
    kind or nothing is there, keeping its kind under the shopper's words either way."""
    if scope.is_empty() or names_a_kind(wanted):
        return search_keeping_kind(searcher, model, vector, k, wanted, colour=colour)
    scoped = wanted.with_values("articleType", scope.get("articleType"))
    answer = search_keeping_kind(searcher, model, vector, k, scoped, within=scope, colour=colour)
    if answer.results:
        answer.filters = wanted
        return answer
    return search_keeping_kind(searcher, model, vector, k, wanted, colour=colour)


def photo_kind(searcher: Searcher, model: str, vector: np.ndarray, within: Filters = Filters(),
               exclude: tuple[str, ...] = ()) -> str | None:
    """The articleType the nearest products (within `within`: an item's category) agree on."""
    results = searcher.search_vector(model, vector, k=KIND_VOTES, filters=within, exclude=exclude).results
    kinds = [r.get("articleType") for r in results if r.get("articleType")]
    if not kinds:
        return None
    top = max(set(kinds), key=kinds.count)
    return top if kinds.count(top) >= KIND_SHARE * len(results) else None


def search_keeping_kind(searcher: Searcher, model: str, vector: np.ndarray, k: int, wanted: Filters, *,
                        within: Filters = Filters(), colour: Mapping[str, float] | None = None,
                        exclude: tuple[str, ...] = ()) -> Answer:
    """The k nearest under `wanted`, those of the photo's kind first when `wanted` says more than
    `within` (the kind's own filters, e.g. an item's category) and names no kind itself."""
    answer = searcher.search_vector(model, vector, k=k, filters=wanted, exclude=exclude, colour=colour)
    if wanted == within or names_a_kind(wanted, within):
        return answer
    kind = photo_kind(searcher, model, vector, within, exclude)
    if kind is None or all(r.get("articleType") == kind for r in answer.results):
        return answer
    typed = searcher.search_vector(model, vector, k=k, filters=wanted.with_values("articleType", [kind]),
                                   exclude=exclude, colour=colour)
    if not typed.results:
        return answer  # the catalog has none of that kind under these words
    shown = {r.id for r in typed.results}
    typed.results = (typed.results + [r for r in answer.results if r.id not in shown])[:k]
    typed.filters = answer.filters
    return typed


__all__ = ["KIND_MIN_PROBABILITY", "KIND_SHARE", "KIND_VOTES", "kind_scope", "names_a_kind", "photo_kind",
           "search_keeping_kind", "search_photo"]
