"""Products like one of the catalog's, by its stored vector (the product itself left out)."""
from __future__ import annotations

from catalog.text import clipped
from operations.errors import Refused
from operations.filter_request import FilterRequest
from operations.policy import SearchPolicy
from search.searcher import Answer, Searcher


def find_similar(searcher: Searcher, policy: SearchPolicy, product_id: str, *, model: str | None = None,
                 k: int | None = None, filters: FilterRequest = FilterRequest()) -> Answer:
    model, k = policy.model(model), policy.count(k)
    if searcher.product(model, product_id) is None:
        raise Refused("no_product", f"no product with id {clipped(product_id)!r} in the {model} index",
                      id=clipped(product_id))
    return searcher.similar_to(model, product_id, k=k, filters=searcher.resolve(model, *filters.raw()))
