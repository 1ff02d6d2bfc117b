"""What kind of garment a shopper's own photo shows, learned from photos people take.

A shirt on a bed or shoes seen from above are far from every catalog shot, and their nearest
catalog products are often of another kind (kind P@5 0.68 on home photos). A linear classifier on
the served model's own vectors, trained on the catalog's shots and on real home photos, tells the
kind group (tops, outer layers, trousers, shorts, skirts, dresses, footwear, headwear, or other)
far better (0.89 on held-out home photos, docs/figures.md); `operations.keep_kind` then searches
within that group. Trained by `python app.py train-kinds` (training/kinds.py) into
`embedding/kind_model.npz`, for the vectors of one model and weights (`weights_id`). A fine-tune's
own vectors are read by its own articleType classifier instead (`ClassifierKinds`).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from catalog.errors import UserError
from embedding.stable_npz import save_stable

SHIPPED_FILE = Path(__file__).with_name("kind_model.npz")
OTHER = "other"

# Kind group -> the catalog articleTypes it holds; any other articleType is OTHER.
GROUPS: Mapping[str, tuple[str, ...]] = {
    "top": ("Shirts", "Tops", "Tshirts", "Tunics", "Kurtas", "Kurtis", "Sweaters", "Sweatshirts", "Lounge Tshirts",
            "Camisoles"),
    "outer layer": ("Jackets", "Blazers", "Rain Jacket", "Waistcoat", "Shrug", "Tracksuits", "Nehru Jackets",
                    "Coats"),
    "trousers": ("Trousers", "Jeans", "Track Pants", "Capris", "Leggings", "Jeggings", "Lounge Pants",
                 "Rain Trousers", "Churidar", "Patiala", "Tights", "Salwar", "Salwar and Dupatta"),
    "shorts": ("Shorts", "Lounge Shorts"),
    "skirt": ("Skirts",),
    "dress": ("Dresses", "Jumpsuit", "Rompers", "Nightdress", "Baby Dolls"),
    "footwear": ("Casual Shoes", "Sports Shoes", "Formal Shoes", "Heels", "Flats", "Sandals", "Sports Sandals",
                 "Flip Flops", "Booties"),
    "headwear": ("Caps", "Hat", "Headband"),
}
NAMES: tuple[str, ...] = (*GROUPS, OTHER)
_GROUP_OF = {article: group for group, articles in GROUPS.items() for article in articles}


def group_of(article_type: str | None) -> str:
    return _GROUP_OF.get(article_type or "", OTHER)


class KindModel:
    """Softmax over NAMES from a model's unit vector: `weights` (groups x dim) and `bias`."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, names: tuple[str, ...], model: str, weights_id: str,
                 facts: Mapping | None = None):
        weights, bias = np.asarray(weights, dtype=np.float32), np.asarray(bias, dtype=np.float32)
        if weights.shape[0] != len(names) or bias.shape != (len(names),):
            raise UserError(f"kind model: {len(names)} groups but weights {weights.shape}, bias {bias.shape}")
        self.weights, self.bias, self.names = weights, bias, tuple(names)
        self.model, self.weights_id, self.facts = model, weights_id, dict(facts or {})

    @classmethod
    def load(cls, path: Path | None = None) -> KindModel:
        path = Path(path or SHIPPED_FILE)
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["weights"], data["bias"], tuple(str(n) for n in data["names"]), str(data["model"]),
                           str(data["weights_id"]), {"held_out_accuracy": float(data["held_out_accuracy"])})
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"cannot read the kind model {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        """The same model gives the same bytes (fixed zip dates): a retrained file can be
        compared with the shipped one."""
        arrays = {"weights": self.weights, "bias": self.bias, "names": np.array(self.names),
                  "model": np.array(self.model), "weights_id": np.array(self.weights_id),
                  "held_out_accuracy": np.array(self.facts.get("held_out_accuracy", float("nan")))}
        save_stable(path, arrays)

    def reads(self, model: str, weights_id: str) -> bool:
        """Whether this model's vectors are the ones it was trained on."""
        return model == self.model and weights_id == self.weights_id

    def probabilities(self, vector: np.ndarray) -> dict[str, float]:
        logits = self.weights @ np.asarray(vector, dtype=np.float32) + self.bias
        logits -= logits.max()
        p = np.exp(logits)
        return dict(zip(self.names, (p / p.sum()).tolist()))

    def kind(self, vector: np.ndarray, min_probability: float) -> str | None:
        """The group the photo most likely shows when at least that likely, and not OTHER."""
        p = self.probabilities(vector)
        best = max(p, key=p.get)
        return best if best != OTHER and p[best] >= min_probability else None


class ClassifierKinds:
    """The kind group a fine-tune's own articleType classifier reads (its probabilities summed per
    group): a tuned file carries the kind model for its own vectors, trained on the catalog and on
    the real photos its recipe learned from, so it needs no separate file."""

    def __init__(self, classifiers, model: str, weights_id: str):
        self.classifiers, self.model, self.weights_id = classifiers, model, weights_id

    @classmethod
    def of(cls, embedder) -> ClassifierKinds | None:
        """The reader of an embedder whose weights carry an articleType classifier, else None."""
        classifiers = getattr(embedder, "classifiers", None)
        if classifiers is None or "articleType" not in classifiers.targets:
            return None
        return cls(classifiers, embedder.name, embedder.weights_id)

    def reads(self, model: str, weights_id: str) -> bool:
        return model == self.model and weights_id == self.weights_id

    def probabilities(self, vector: np.ndarray) -> dict[str, float]:
        groups = dict.fromkeys(NAMES, 0.0)
        for article, p in self.classifiers.probabilities(vector, "articleType").items():
            groups[group_of(article)] += p
        return groups

    def kind(self, vector: np.ndarray, min_probability: float) -> str | None:
        p = self.probabilities(vector)
        best = max(p, key=p.get)
        return best if best != OTHER and p[best] >= min_probability else None


__all__ = ["GROUPS", "NAMES", "OTHER", "SHIPPED_FILE", "ClassifierKinds", "KindModel", "group_of"]
