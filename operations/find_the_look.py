"""Shop the look: every item in a shopper's photo, each searched as the catalog shows products.

A studio shot (one product on a plain backdrop) is one item, searched as before. Any other photo
goes through the garment parser: each item it finds is cut out (its box, white outside its
mask), searched as it is (no zoomed views: it is already framed) within its own category, and
with the shopper's words. A photo in which the parser finds nothing is searched whole, as
before; one with nothing in it at all (blank, a sliver, a few pixels) is refused.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from catalog import open_image
from embedding.garments import Item
from operations.errors import Refused
from operations.filter_request import FilterRequest
from operations.find_by_photo import check_size
from operations.keep_kind import kind_scope, search_keeping_kind, search_photo
from operations.policy import SearchPolicy
from search.query_views import AS_IS
from search.searcher import Answer, Searcher
from vectorstore.filters import CATEGORY, Filters

NOTHING_FOUND = "I can't find a product in this photo: try a closer photo, or crop it."


class ColourNamer(Protocol):
    def probabilities(self, image: Image.Image, mask: np.ndarray | None = None) -> dict[str, float]: ...


@dataclass
class FoundItem:
    """One item and its products. `item` is None for a photo searched whole."""
    item: Item | None
    answer: Answer
    colour: str | None = None

    @property
    def kind(self) -> str | None:
        return self.item.kind if self.item else None

    @property
    def label(self) -> str | None:
        """The item's catalog category; for a photo searched whole, its results' most common one."""
        if self.item is not None:
            return self.item.label
        labels = [r.get("subCategory") for r in self.answer.results if r.get("subCategory")]
        return max(set(labels), key=labels.count) if labels else None

    def to_json(self, result_json: Callable) -> dict:
        """The items contract: label, box as fractions of the photo, score, results."""
        if self.item is None:
            labels = [r.get("subCategory") for r in self.answer.results]
            score = labels.count(self.label) / len(labels) if labels else 0.0
            box = [0.0, 0.0, 1.0, 1.0]
        else:
            score, box = self.item.score, [round(v, 4) for v in self.item.box]
        return {"label": self.label, "box": box, "score": round(float(score), 4),
                **({"colour": self.colour} if self.colour else {}),
                "results": [result_json(r) for r in self.answer.results]}


@dataclass
class Look:
    items: list[FoundItem] = field(default_factory=list)
    image: Image.Image | None = None

    @property
    def first(self) -> Answer:
        return self.items[0].answer


@dataclass(frozen=True)
class LookSettings:
    """`items`: find the items (False: the whole photo, as before the parser). A photo smaller
    than `min_side` pixels, longer than `max_aspect`:1, or flatter than `min_contrast` (the
    standard deviation of its grey levels) shows no product."""
    items: bool = True
    # A worn outfit: two items the parser is at least `outfit_score` sure of, worn one above
    # the other as a standing person wears them (a top above trousers, trousers above shoes),
    # overlapping across and each narrower than `outfit_width` of the photo. Only then are items
    # searched one by one: on a garment laid flat or held up (photos unlike the street photos it
    # learned from) its guesses are unsure, of the wrong kind, and spread across the frame, and
    # the whole photo finds the product better (docs/figures.md: kind P@5 0.68 whole, 0.38 by item).
    # Set where as few home photos of one garment pass as before (the photos the parser's data
    # holds none of): three members agree on fewer pixels than two, so their scores run lower.
    outfit_score: float = 0.65
    outfit_width: float = 0.6
    min_side: int = 24
    max_aspect: float = 8.0
    min_contrast: float = 6.0


def find_the_look(searcher: Searcher, policy: SearchPolicy, photo: bytes | str | Path | None, *,
                  name: str | None = None, model: str | None = None,
                  k: int | None = None, filters: FilterRequest | Filters = FilterRequest(),
                  settings: LookSettings = LookSettings()) -> Look:
    """Check the request, open the photo, find its items, search each. Raises `Refused` (with
    reason "nothing_found" for a photo that shows nothing), `UnknownFilterValue`, `ImageError`
    or the store's errors."""
    model, k = policy.model(model), policy.count(k)
    name = name or (Path(photo).name if isinstance(photo, str | Path) else "the photo")
    check_size(photo, name, policy)
    wanted = filters if isinstance(filters, Filters) else searcher.resolve(model, *filters.raw())
    image = open_image(photo, policy.image_limits)
    if shows_nothing(image, settings):
        raise Refused("nothing_found", NOTHING_FOUND)
    with searcher.steady():  # one model's weights and index for every item (a tuned model may switch in)
        return _look(searcher, model, image, k, wanted, settings)


def _look(searcher: Searcher, model: str, image: Image.Image, k: int, wanted: Filters,
          settings: LookSettings) -> Look:
    items = items_in(searcher, image, settings)
    colours = searcher.colour_model()
    if not items:
        reading = colours.probabilities(image) if colours is not None else None
        searcher.collection(model)  # refuse a missing index or other weights before embedding
        vector = searcher.embed(model, [image])[0]
        answer = search_photo(searcher, model, vector, k, searcher.resolve(model, wanted),
                              kind_scope(searcher, model, vector, image), colour=reading)
        return Look([FoundItem(None, answer, _most_likely(reading))], image)
    first = search_item(searcher, model, image, items[0], k, wanted, colours)
    # The rest within the photo's gender when the first item's products agree on one (a
    # woman's outfit: her bag among women's and unisex bags), unless the shopper said one.
    rest = wanted if wanted.get("gender") else with_gender(searcher, model, wanted, photo_gender(first.answer.results))
    return Look([first] + [search_item(searcher, model, image, item, k, rest, colours, shopper=wanted)
                            for item in items[1:]], image)


def photo_gender(results, share: float = 0.8, votes: int = 3) -> str | None:
    """The gender the products found agree on (Unisex abstains); None when they do not."""
    genders = [r.get("gender") for r in results if r.get("gender") and r.get("gender") != "Unisex"]
    if len(genders) < votes:
        return None
    top = max(set(genders), key=genders.count)
    return top if genders.count(top) >= share * len(genders) else None


def with_gender(searcher: Searcher, model: str, wanted: Filters, gender: str | None) -> Filters:
    if gender is None:
        return wanted
    known = set(searcher.vocabulary(model).get("gender", []))
    return wanted.with_values("gender", [g for g in (gender, "Unisex") if g in known])


def search_item(searcher: Searcher, model: str, image: Image.Image, item: Item, k: int, wanted: Filters,
                colours: ColourNamer | None = None, shopper: Filters | None = None) -> FoundItem:
    """The item cut out and searched within its category (unless the shopper named one).
    `wanted`: the filters to search with; `shopper`: the shopper's own among them."""
    shopper = wanted if shopper is None else shopper
    reading = colours.probabilities(image, item.full_mask(image.size)) if colours is not None else None
    picture = item.cut_out(image)
    # Within the item's category (and the photo's gender, in `wanted`), unless no product is
    # there: then within the shopper's own filters alone. The colour of the item's own pixels
    # is a soft preference, never a filter.
    vector = searcher.embed(model, [picture], AS_IS)[0]
    scope = item_filters(searcher, model, item, Filters())
    answer = search_keeping_kind(searcher, model, vector, k, item_filters(searcher, model, item, wanted),
                                 within=scope, colour=reading)
    if not answer.results and wanted != shopper:
        answer = search_keeping_kind(searcher, model, vector, k, item_filters(searcher, model, item, shopper),
                                     within=scope, colour=reading)
    return FoundItem(item, answer, _most_likely(reading))


def shows_nothing(image: Image.Image, settings: LookSettings) -> bool:
    """A few pixels, a blank frame, or a sliver: nothing a shopper could be asking about. What
    differs from the border's colour is the content (a strip arrives padded on white by
    open_image, so its own shape is judged, not the padded frame's)."""
    width, height = image.size
    if min(width, height) < settings.min_side:
        return True
    grey = np.asarray(image.convert("L").resize((128, 128), Image.Resampling.BILINEAR), dtype=np.float32)
    border = np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]))
    content = np.abs(grey - border) > settings.min_contrast * 2
    if content.mean() < 0.002:
        return True
    ys, xs = np.nonzero(content)
    content_w = (xs.max() - xs.min() + 1) / 128 * width
    content_h = (ys.max() - ys.min() + 1) / 128 * height
    return max(content_w, content_h) > settings.max_aspect * min(content_w, content_h) or \
        min(content_w, content_h) < settings.min_side


def items_in(searcher: Searcher, image: Image.Image, settings: LookSettings = LookSettings()) -> list[Item]:
    """The items of a worn outfit that the searcher's garment parser finds; none for a studio shot,
    a photo that is not an outfit (is_outfit), or without a parser."""
    # A studio shot is one product already framed as the catalog frames them.
    if not settings.items or searcher.query_views.is_studio_shot(image):
        return []
    parser = searcher.garment_parser()
    items = parser.parse(image) if parser is not None else []
    return items if is_outfit(items, settings) else []


def is_outfit(items: list[Item], settings: LookSettings = LookSettings()) -> bool:
    """Whether a person wears the items (see LookSettings.outfit_score)."""
    worn = [item for item in items if item.score >= settings.outfit_score and item.height is not None
            and item.box[2] - item.box[0] <= settings.outfit_width]
    return any(one_above_the_other(a, b) for a, b in itertools.combinations(worn, 2))


def one_above_the_other(a: Item, b: Item) -> bool:
    """Two items worn at different heights of one body: the higher-worn one's middle above the
    other's, and one's middle within the other's width."""
    if a.height == b.height:
        return False
    upper, lower = (a, b) if a.height < b.height else (b, a)
    across = (upper.box[0] <= _middle(lower.box, 0) <= upper.box[2]
              or lower.box[0] <= _middle(upper.box, 0) <= lower.box[2])
    return _middle(upper.box, 1) < _middle(lower.box, 1) and across


def _middle(box: tuple[float, float, float, float], axis: int) -> float:
    """The middle of a box (x0, y0, x1, y1) across (axis 0) or down (axis 1)."""
    return (box[axis] + box[axis + 2]) / 2


def item_filters(searcher: Searcher, model: str, item: Item | None, wanted: Filters) -> Filters:
    """The shopper's filters, within the item's categories unless the shopper named one. Only
    the categories this catalog has count (a shop without belts searches a belt widely)."""
    if item is None or wanted.get(CATEGORY):
        return wanted
    vocabulary = searcher.vocabulary(model)
    known = {str(v) for f in ("masterCategory", "subCategory", "articleType") for v in vocabulary.get(f, [])}
    return wanted.with_values(CATEGORY, [c for c in item.search_categories if c in known])


def _most_likely(reading: dict[str, float] | None) -> str | None:
    return max(reading, key=reading.get) if reading else None


__all__ = ["FoundItem", "Look", "LookSettings", "NOTHING_FOUND", "find_the_look", "item_filters", "items_in",
           "is_outfit", "photo_gender", "with_gender",
           "search_item", "shows_nothing"]
