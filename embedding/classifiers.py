"""The cosine classifiers a fine-tune leaves in its weights file (articleType and its auxiliary
targets): what the query most likely is, from its own features. `search.reorder` fuses them with
the nearest products' label votes."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from catalog.errors import UserError


class Classifiers:
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
                raise UserError(f"classifier {target!r}: {len(labels)} labels but centres of shape {centres.shape}")
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

    def likelihoods(self, vector: np.ndarray, target: str, labels: Sequence[str | None]) -> np.ndarray:
        """p(label | query) for each of `labels`; a label the classifier never learned (or none)
        gets the uniform probability: the classifier has nothing to say about it."""
        p = self._softmax(vector, target)
        known = self._labels[target]
        uniform = 1.0 / len(known)
        return np.array([p[known[l]] if l in known else uniform for l in labels], dtype=np.float64)
