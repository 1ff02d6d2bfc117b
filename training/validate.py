"""Validation by retrieval, the way a shopper meets the model: P@k by articleType.

Queries are the held-out validation products, as their clean catalog shot and as a
photo-like picture of it (`shopper_photo`, seeded by the run's seed and the product id, so
every epoch and every run with that seed asks the same questions). Each query is embedded
exactly as `index`/`search` would embed it (pooled features, plus the projection head when
there is one, L2-normalised) and ranked by cosine similarity.

The gallery is, by default, the validation products' clean shots with the query's own
product left out ("val": no product the model was trained on takes part, so nothing it
memorised can help). `gallery="catalog"` ranks against every product of the run (training
products included, query left out), which is what a shop's index holds; it costs embedding
the whole catalog. A query with no articleType is not scored. `ceiling` is the best P@k the
gallery allows (a type with three other products can fill at most three of five slots).
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

from catalog import ImageError, Product, open_image
from catalog.errors import UserError
from catalog.photolike import shopper_photo
from evaluation.metrics import precision_at_k as precision_of
from training.data import map_in_processes


@dataclass
class ValidationImages:
    """The validation queries, preprocessed once: clean and photo-like tensors (half precision
    to halve the memory; the network sees them in float)."""
    products: list[Product]
    clean: torch.Tensor
    photo: torch.Tensor

    @classmethod
    def build(cls, products: Sequence[Product], transform, seed: int, progress: bool = True,
              decode: Callable = open_image, workers: int = 0) -> ValidationImages:
        done = map_in_processes(partial(_query_pair, transform=transform, seed=seed, decode=decode),
                                products, workers, "validation queries", progress)
        kept = [(product, pair) for product, pair in zip(products, done) if pair is not None]
        if not kept:
            raise UserError("no validation product has a readable image")
        return cls([product for product, _ in kept], torch.stack([torch.from_numpy(c) for _, (c, _) in kept]),
                   torch.stack([torch.from_numpy(p) for _, (_, p) in kept]))


def _query_pair(product: Product, transform, seed: int, decode: Callable):
    """The clean and photo-like query of one product (half-precision arrays: a loader process
    hands arrays back cheaply, tensors through shared memory one file each); None when its
    image cannot be read."""
    try:
        image = decode(product.image)
    except ImageError:
        return None
    photo = shopper_photo(image, random.Random(f"{seed}:{product.id}"))
    return transform(image).half().numpy(), transform(photo).half().numpy()


@dataclass
class TypeScore:
    queries: int
    clean: float
    photo: float


@dataclass
class ValidationScores:
    k: int
    gallery: str
    queries: int
    clean: float          # mean P@k by articleType, clean catalog shots as queries
    photo: float          # the same with photo-like queries
    ceiling: float
    per_type: dict[str, TypeScore] = field(default_factory=dict)
    real: float | None = None   # P@k by kind (lenient) of held-out real photos, when a run has some
    real_queries: int = 0

    def summary(self) -> dict[str, float | int | str]:
        real = {"p_real_kind": round(self.real, 4), "real_queries": self.real_queries} if self.real is not None else {}
        return {"k": self.k, "gallery": self.gallery, "queries": self.queries,
                "p_clean": round(self.clean, 4), "p_photo": round(self.photo, 4), "ceiling": round(self.ceiling, 4),
                **real}

    def line(self) -> str:
        real = f"; real photos' kind {self.real:.3f} ({self.real_queries})" if self.real is not None else ""
        return (f"P@{self.k} by articleType: clean {self.clean:.3f}, photo-like {self.photo:.3f} "
                f"({self.queries} held-out queries vs {self.gallery} gallery; ceiling {self.ceiling:.3f}){real}")


def embed_preprocessed(features: Callable[[torch.Tensor], torch.Tensor], tensors: torch.Tensor, batch_size: int,
                  device: torch.device, autocast: Callable, channels_last: bool = False) -> torch.Tensor:
    """Unit rows (float32, on the CPU) for a stack of preprocessed images."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(tensors), batch_size):
            batch = tensors[start:start + batch_size].to(device, torch.float32, non_blocking=True)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast():
                rows = features(batch)
            out.append(torch.nn.functional.normalize(rows.float(), dim=1).cpu())
    return torch.cat(out)


def precision_at_k(queries: torch.Tensor, query_labels: Sequence[str | None], gallery: torch.Tensor,
                   gallery_labels: Sequence[str | None], k: int,
                   self_index: Sequence[int] | None = None) -> tuple[list[float | None], float]:
    """Per query, the share of its k nearest gallery rows sharing its label (None for a query
    without a label); `self_index[i]` is the gallery row of query i's own product, left out.
    Also returns the mean ceiling."""
    similarity = queries @ gallery.t()
    if self_index is not None:
        similarity[torch.arange(len(query_labels)), torch.as_tensor(list(self_index))] = float("-inf")
    depth = min(k, gallery.shape[0] - (1 if self_index is not None else 0))
    top = similarity.topk(depth, dim=1).indices.tolist()
    # The same P@k as `evaluate` reports (evaluation/metrics.py), on the nearest rows' labels.
    per_query = [precision_of(label or None, [gallery_labels[j] for j in row], k)
                 for label, row in zip(query_labels, top)]
    return per_query, _ceiling(query_labels, gallery_labels, k, self_index is not None)


def _ceiling(query_labels: Sequence[str | None], gallery_labels: Sequence[str | None], k: int,
             leave_self_out: bool) -> float:
    """The best mean P@k possible: a query whose label has fewer than k other products in
    the gallery cannot fill its k slots."""
    counts = Counter(label for label in gallery_labels if label)
    ceilings = [max(0, min(k, counts[label] - (1 if leave_self_out else 0))) / k
                for label in query_labels if label]
    return sum(ceilings) / len(ceilings) if ceilings else 0.0


def score(clean_rows: torch.Tensor, photo_rows: torch.Tensor, products: Sequence[Product], k: int,
          gallery_rows: torch.Tensor | None = None, gallery_products: Sequence[Product] | None = None
          ) -> ValidationScores:
    """P@k by articleType for both kinds of query; the gallery defaults to the validation
    products' clean rows (see the module's docstring)."""
    labels = [p.articleType for p in products]
    if gallery_rows is None:
        gallery_rows, gallery_products, name = clean_rows, products, "val"
    else:
        name = "catalog"
    position = {p.id: i for i, p in enumerate(gallery_products)}
    self_index = [position[p.id] for p in products]
    gallery_labels = [p.articleType for p in gallery_products]
    clean, ceiling = precision_at_k(clean_rows, labels, gallery_rows, gallery_labels, k, self_index)
    photo, _ = precision_at_k(photo_rows, labels, gallery_rows, gallery_labels, k, self_index)

    by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for label, c, p in zip(labels, clean, photo):
        if c is not None:
            by_type[label].append((c, p))
    judged = [(c, p) for c, p in zip(clean, photo) if c is not None]
    if not judged:
        raise UserError("no validation product has an articleType to judge retrieval by")
    per_type = {t: TypeScore(len(v), sum(c for c, _ in v) / len(v), sum(p for _, p in v) / len(v))
                for t, v in sorted(by_type.items(), key=lambda item: (-len(item[1]), item[0]))}
    return ValidationScores(k=k, gallery=name, queries=len(judged),
                            clean=sum(c for c, _ in judged) / len(judged),
                            photo=sum(p for _, p in judged) / len(judged),
                            ceiling=ceiling, per_type=per_type)


__all__ = ["ValidationImages", "TypeScore", "ValidationScores", "embed_preprocessed", "precision_at_k", "score"]
