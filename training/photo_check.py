"""The switch judged on real photos as a shopper meets them: each held-out photo goes through the
shop's own search (`operations.find_the_look`: its items found, the kind read by the model that
serves these vectors, colour, reordering, zoomed views), once against the live index with the
served network and once against the tuned model's index built beside it.

The fine-tune's per-epoch figure ranks the photos' nearest validation products and reads no kind;
but the served ImageNet network reads a photo's kind with the kind model (kind P@5 0.87 on
held-out home photos against 0.67 for its nearest products alone, docs/figures.md), so that
figure judged the tuned model against a baseline no shopper sees. This one is what they see.
"""
from __future__ import annotations

import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from catalog import ImageError
from catalog.errors import UserError
from catalog.photo_labels import LabelledPhoto
from embedding.embedders import Embedder
from evaluation.photos import outcome_of, score_photos
from operations import Refused, SearchPolicy, find_the_look
from search import QueryViews, RerankSettings, Searcher

# The held-out photos a check asks (a seeded sample when there are more): about two minutes per
# network on 2 busy cores, and a standard error near 0.02 on a kind P@5 near 0.85.
MAX_PHOTOS = 300
K = 5


@dataclass(frozen=True)
class ServedSearch:
    """How the shop searches a photo (its `--items`, `--colour`, `--kind`, `--rerank`, `--zoom`):
    the check asks both networks the same way."""
    rerank: RerankSettings = RerankSettings()
    query_views: QueryViews = QueryViews()
    parser_factory: Callable[[], object] | None = None
    colour_factory: Callable[[], object] | None = None
    kind_factory: Callable[[], object] | None = None
    max_photos: int = MAX_PHOTOS

    def searcher(self, client, embedder: Embedder, slot: str | None = None) -> Searcher:
        return Searcher(client, embedders={embedder.name: embedder}, rerank=self.rerank,
                        query_views=self.query_views, parser_factory=self.parser_factory,
                        colour_factory=self.colour_factory, kind_factory=self.kind_factory, slot=slot)


def sample(photos: Sequence[LabelledPhoto], limit: int, seed: int = 0) -> list[LabelledPhoto]:
    """At most `limit` of the photos, the same ones every time (a resumed check asks the same)."""
    photos = list(photos)
    return photos if len(photos) <= limit else random.Random(f"{seed}:photo-check").sample(photos, limit)


def served_kind_precision(searcher: Searcher, model: str, photos: Sequence[LabelledPhoto]) -> tuple[float, int]:
    """Mean P@K by kind (lenient, as `evaluate --photos`) of the photos' first item's answer,
    and how many photos were scored (one the shop refuses, unreadable or showing nothing, is left
    out; the store's errors are not: both models must be asked the same photos)."""
    policy = SearchPolicy(models=(model,), default_model=model, k=K)
    outcomes = []
    for photo in photos:
        try:
            look = find_the_look(searcher, policy, upload_of(photo), name=photo.path.name)
        except (ImageError, Refused):
            continue
        found = look.items[0]
        outcomes.append(outcome_of(photo, [r.metadata for r in found.answer.results], found.colour))
    if not outcomes:
        raise UserError("no held-out real photo could be searched")
    return float(score_photos(outcomes, K).precision["kind"]), len(outcomes)


def upload_of(photo: LabelledPhoto) -> bytes:
    """A photo as a shopper would send it: a home photo's file, or a street garment cut out on
    white, as a search cuts out an item (encoded as PNG)."""
    if photo.mask is None:
        return photo.path.read_bytes()
    from training.real_photos import photo_image
    data = io.BytesIO()
    photo_image(photo).save(data, format="PNG")
    return data.getvalue()


__all__ = ["MAX_PHOTOS", "ServedSearch", "sample", "served_kind_precision", "upload_of"]
