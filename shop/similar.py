"""Similar items as the shop shows them: of the product's own gender (Unisex beside it) when the
index holds any, else of any gender. Women's flats look like men's casual shoes to a model;
a shopper on the flats' page wants women's shoes."""
from __future__ import annotations

from dataclasses import replace

from operations import FilterRequest, find_similar
from search import Searcher
from search.searcher import Answer
from shop.context import ShopContext

UNISEX = "Unisex"  # the catalog's gender for products anyone wears: a match for either


def similar_items(shop: ShopContext, product_id: str, *, model: str | None = None, k: int | None = None,
                  filters: FilterRequest = FilterRequest(), same_gender: bool = False) -> Answer:
    """`find_similar`; with `same_gender` (and no gender asked for), first within the product's
    gender, and without that filter when it would leave nothing."""
    policy = shop.settings.policy
    if same_gender and not filters.gender:
        kept = _same_gender(shop.searcher, policy.model(model), product_id, filters)
        if kept is not None:
            answer = find_similar(shop.searcher, policy, product_id, model=model, k=k, filters=kept)
            if answer.results:
                return answer
    return find_similar(shop.searcher, policy, product_id, model=model, k=k, filters=filters)


def _same_gender(searcher: Searcher, model: str, product_id: str, filters: FilterRequest) -> FilterRequest | None:
    """`filters` narrowed to the product's gender or Unisex; None for a Unisex product, one
    without a gender (any gender suits them) or one not in the index (find_similar says so)."""
    product = searcher.product(model, product_id)
    gender = (product or {}).get("gender")
    if not gender or gender == UNISEX:
        return None
    unisex = UNISEX in searcher.vocabulary(model).get("gender", [])
    return replace(filters, gender=gender, where=(*filters.where, f"gender={UNISEX}") if unisex else filters.where)
