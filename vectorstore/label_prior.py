"""What a query most likely is, from the classifiers a fine-tune trained beside the embedding,
and the reordering of a search's candidates that it allows.

Nearest neighbours alone rank a Heels shot's nearest Flats above Heels a little further away:
the embedding is one space for every kind of product. The fine-tune's cosine classifiers see
the same features and tell the kinds apart better (a query's articleType is right for 0.83 of
held-out products where its five neighbours agree with it for 0.80). So a search asks Chroma for
more candidates than it shows and orders them by

    cosine + sum over labels of weight x log p(candidate's label | query),

which keeps visual order among products of a likely kind, and lets a less likely kind through
when it is much closer or the classifier hesitates (docs/figures.md: reranking). The catalog's labels come from the
collection's metadata; the probabilities from the query image only, so a product never helps
its own query.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

# Added to every probability so that log p is finite for a class a classifier all but rules out.
_FLOOR = 1e-9


@dataclass(frozen=True)
class RerankSettings:
    """How a search with a model that has classifiers orders its results.

    `weights`: per catalog label, how much its log-probability counts beside the cosine (0 or
    absent: not used). On held-out products P@5 by articleType was flat for articleType weights
    from 0.02 to 0.5, while hit@5 (at least one of the five of the right kind) fell as the weight
    grew, since a wrong guess then fills all five: the defaults are at the low end, where hit@5
    stays within 0.03 of cosine order (docs/search.md). `candidates`: how many nearest products
    are reordered (at least the number asked for)."""
    weights: Mapping[str, float] = field(default_factory=lambda: {"articleType": 0.03, "baseColour": 0.02})
    candidates: int = 50

    def __post_init__(self):
        if self.candidates < 1:
            raise ValueError("rerank candidates must be at least 1")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("rerank weights must be 0 or more")

    @property
    def enabled(self) -> bool:
        return any(w > 0 for w in self.weights.values())

    def labels_for(self, prior: "LabelPrior | None") -> tuple[str, ...]:
        """The labels that reorder a search with these classifiers (none without them)."""
        if prior is None:
            return ()
        return tuple(t for t in prior.targets if self.weights.get(t, 0) > 0)


NO_RERANK = RerankSettings(weights={})


class LabelPrior:
    """The cosine classifiers of a weights file: per label, the class centres, their names and
    the logit scale, applied to an embedder's unit vectors (before any collection centering)."""

    def __init__(self, classifiers: Mapping[str, Mapping]):
        self._labels: dict[str, dict[str, int]] = {}
        self._centres: dict[str, np.ndarray] = {}
        self._scale: dict[str, float] = {}
        for target, head in classifiers.items():
            centres = np.asarray(head["centres"], dtype=np.float32)
            labels = [str(label) for label in head["labels"]]
            if centres.ndim != 2 or centres.shape[0] != len(labels):
                raise ValueError(f"classifier {target!r}: {len(labels)} labels but centres of shape {centres.shape}")
            self._centres[target] = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
            self._labels[target] = {label: i for i, label in enumerate(labels)}
            self._scale[target] = float(head.get("scale", 16.0))

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._labels)

    def probabilities(self, vector: np.ndarray, target: str) -> dict[str, float]:
        """p(label | query) for every label the classifier knows."""
        return dict(zip(self._labels[target], self._softmax(vector, target).tolist()))

    def _softmax(self, vector: np.ndarray, target: str) -> np.ndarray:
        unit = np.asarray(vector, dtype=np.float32)
        unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
        logits = self._scale[target] * (self._centres[target] @ unit)
        logits -= logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def log_prior(self, vector: np.ndarray, target: str, labels: Sequence[str | None]) -> np.ndarray:
        """log p(label | query) for each candidate's label; a label the classifier never learned
        (or none) gets the uniform probability: the classifier has nothing to say about it."""
        p = self._softmax(vector, target)
        known = self._labels[target]
        uniform = 1.0 / len(known)
        return np.log(np.array([p[known[l]] if l in known else uniform for l in labels]) + _FLOOR)

    def rerank(self, vector: np.ndarray, hits: Sequence, settings: RerankSettings) -> list:
        """`hits` (each with `.score`, the cosine, and `.metadata`) in the order of the fused
        score; scores themselves are left as cosines, which is what a shopper is shown."""
        if not hits:
            return []
        fused = np.array([h.score for h in hits], dtype=np.float64)
        for target, weight in settings.weights.items():
            if weight > 0 and target in self._labels:
                fused += weight * self.log_prior(vector, target, [h.metadata.get(target) for h in hits])
        order = np.argsort(-fused, kind="stable")
        return [hits[i] for i in order]


__all__ = ["LabelPrior", "RerankSettings", "NO_RERANK"]
