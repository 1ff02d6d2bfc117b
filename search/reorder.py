"""What a query most likely is, and the reordering of a search's candidates that it allows.

Nearest neighbours alone rank a Heels shot's nearest Flats above Heels a little further away:
the embedding is one space for every kind of product. Two witnesses say better what the query
is than its nearest product alone:

- the fine-tune's cosine classifiers, which see the same features and tell the kinds apart
  (when the weights file has them);
- the catalog labels of the query's nearest products, each voting with a weight that falls with
  its distance (any model: the labels are the collection's metadata).

Their product, p(label | classifiers) x (votes(label) + a small even share), is the posterior,
and a search asks Chroma for more candidates than it shows and orders them by

    cosine + sum over labels of weight x log posterior(candidate's label | query),

which keeps visual order among products of a likely kind, and lets a less likely kind through
when it is much closer or the witnesses hesitate (docs/search.md: reordering). The query's own
labels are never known: the classifiers see its image, the votes its neighbours.

A third witness, for a shopper's photo, is the colour model's reading of the item's own pixels
(embedding/colour.py): with `colour` (p over the catalog's colours) a candidate also gains

    colour_weight x log max(p(candidate's baseColour), colour_floor),

a soft preference (the floor bounds what a confident wrong reading costs), never a filter.

Products like a catalog product (its page's "similar products", the chat's "more like this")
need no reading: the product's own baseColour is known. A candidate of that colour gains
`own_colour_bonus` (in cosine units), so the same shape in the same colour comes first and a
closer shape in another colour still gets through.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from catalog.errors import UserError
from embedding.classifiers import Classifiers

# Added to every probability so that log p is finite for a class a classifier all but rules out.
_FLOOR = 1e-9
# How much a photo's colour reading counts. The same for the ImageNet network and a fine-tune:
# on real photos the reading sees the item's colour better than a fine-tune's baseColour
# classifier, which learned the catalog's light. Raised from 0.1 once a dark surface stopped
# passing for dim light and the reading was right more often (docs/search.md: colour;
# docs/figures.md, sessions 23, 24 and 28).
COLOUR_WEIGHT = 0.15
# A catalog product's own colour, known from its labels: chosen on held-out catalog products
# (docs/search.md: colour).
OWN_COLOUR_BONUS = 0.1


@dataclass(frozen=True)
class RerankSettings:
    """How a search with a model that has classifiers orders its results.

    `weights`: per catalog label, how much its log-probability counts beside the cosine (0 or
    absent: not used). On held-out products P@5 by articleType was flat for articleType weights
    from 0.02 to 0.5, while hit@5 (at least one of the five of the right kind) fell as the weight
    grew, since a wrong guess then fills all five: the defaults are at the low end, where hit@5
    stays within 0.03 of cosine order (docs/search.md). `candidates`: how many nearest products
    are reordered (at least the number asked for). `neighbours`: how many of the nearest of them
    vote on the query's labels (0: the classifiers alone); `temperature`: how fast a vote fades
    with a neighbour's cosine below the nearest one's (0.05: a neighbour 0.05 further counts
    1/e as much). `colour_weight`: how much the log-probability of a candidate's baseColour
    under the query's colour reading counts, when a search is given one (0: ignored);
    `colour_floor`: the smallest probability it is taken at.
    `own_colour_bonus`: what a candidate of a catalog product's own colour gains when products
    like it are searched (0: ignored). Chosen on real photos and held-out catalog products
    (docs/search.md: colour)."""
    weights: Mapping[str, float] = field(default_factory=lambda: {"articleType": 0.05, "baseColour": 0.05})
    candidates: int = 50
    neighbours: int = 20
    temperature: float = 0.05
    colour_weight: float = COLOUR_WEIGHT
    colour_floor: float = 0.01
    own_colour_bonus: float = OWN_COLOUR_BONUS

    def __post_init__(self):
        if self.candidates < 1:
            raise UserError("rerank candidates must be at least 1")
        if any(w < 0 for w in self.weights.values()):
            raise UserError("rerank weights must be 0 or more")
        if self.neighbours < 0:
            raise UserError("rerank neighbours must be 0 or more")
        if self.temperature <= 0:
            raise UserError("rerank temperature must be above 0")
        if self.colour_weight < 0:
            raise UserError("the colour weight must be 0 or more")
        if not 0 < self.colour_floor <= 1:
            raise UserError("the colour floor must be above 0 and at most 1")
        if self.own_colour_bonus < 0:
            raise UserError("the own colour bonus must be 0 or more")

    @property
    def enabled(self) -> bool:
        return any(w > 0 for w in self.weights.values())

    def labels_for(self, prior: Classifiers | None) -> tuple[str, ...]:
        """The labels that reorder a search: with votes, every weighted one; else those the
        classifiers (`prior`, if any) know."""
        known = prior.targets if prior is not None else ()
        return tuple(t for t, w in self.weights.items() if w > 0 and (self.neighbours > 0 or t in known))

    def witnesses(self, prior: Classifiers | None) -> tuple[str, ...]:
        """What judges the query's labels: "neighbours" (their labels' votes), "classifiers"."""
        labels = self.labels_for(prior)
        return tuple(name for name, present in (
            ("neighbours", bool(labels) and self.neighbours > 0),
            ("classifiers", prior is not None and any(t in prior.targets for t in labels))) if present)

    def uses_colour(self, colour: Mapping[str, float] | None) -> bool:
        """Whether a query's colour reading (`colour`) reorders its candidates."""
        return bool(colour) and self.colour_weight > 0

    def uses_own_colour(self, own_colour: str | None) -> bool:
        """Whether a catalog product's own colour (`own_colour`) reorders products like it."""
        return bool(own_colour) and self.own_colour_bonus > 0


NO_RERANK = RerankSettings(weights={}, colour_weight=0.0, own_colour_bonus=0.0)


def rerank(hits: Sequence, settings: RerankSettings, prior: Classifiers | None = None,
           vector: np.ndarray | None = None, colour: Mapping[str, float] | None = None,
           own_colour: str | None = None) -> list:
    """`hits` (each with `.score`, the cosine, and `.metadata`) in the order of the fused score;
    `prior` and `vector` (the embedder's, before centering) bring the classifiers in, `colour`
    (the query's p over baseColour values) the colour preference, `own_colour` (a catalog
    product's baseColour) the preference for its colour. Scores themselves are left as cosines,
    which is what a shopper is shown."""
    if not hits:
        return []
    cosines = np.array([h.score for h in hits], dtype=np.float64)
    fused = cosines.copy()
    say = _say(cosines, settings) if settings.neighbours > 0 else None
    for target, weight in settings.weights.items():
        if weight <= 0:
            continue
        labels = [_label(h.metadata.get(target)) for h in hits]
        classifier = (prior.likelihoods(vector, target, labels)
                      if prior is not None and vector is not None and target in prior.targets else None)
        votes = _votes(labels, say) if say is not None else None
        if classifier is not None or votes is not None:
            fused += weight * _log_posterior(labels, classifier, votes)
    colours = [_label(h.metadata.get("baseColour")) for h in hits]
    if settings.uses_colour(colour):
        fused += settings.colour_weight * _log_colour(colours, colour, settings.colour_floor)
    if settings.uses_own_colour(own_colour):
        fused += settings.own_colour_bonus * np.array([c == own_colour for c in colours])
    order = np.argsort(-fused, kind="stable")
    return [hits[i] for i in order]


# The votes' pseudo-count, shared evenly by the labels among the candidates: a label none of
# the nearest products has keeps a little weight, so a confident classifier can still bring it up.
_PSEUDO_VOTES = 0.2


def _label(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _say(cosines: np.ndarray, settings: RerankSettings) -> np.ndarray:
    """Each candidate's share of the vote: the nearest `neighbours`, nearer ones counting more,
    summing to 1; the others 0."""
    nearest = np.argsort(-cosines, kind="stable")[:settings.neighbours]
    weights = np.exp((cosines[nearest] - cosines[nearest[0]]) / settings.temperature)
    say = np.zeros_like(cosines)
    say[nearest] = weights / weights.sum()
    return say


def _votes(labels: list[str | None], say: np.ndarray) -> dict[str, float]:
    """Each label's share of the vote."""
    votes: dict[str, float] = {}
    for label, share in zip(labels, say):
        if label is not None and share > 0:
            votes[label] = votes.get(label, 0.0) + float(share)
    return votes


def _log_posterior(labels: list[str | None], classifier: np.ndarray | None,
                   votes: dict[str, float] | None) -> np.ndarray:
    """log posterior(label) for each candidate, normalised over the labels among them; a
    candidate without the label gets the even share (nothing is known for or against it)."""
    distinct = sorted({l for l in labels if l is not None})
    if not distinct:
        return np.zeros(len(labels))
    by_label = (dict.fromkeys(distinct, 1.0) if classifier is None else
                {l: float(p) for l, p in zip(labels, classifier) if l is not None})
    if votes is not None:
        share = _PSEUDO_VOTES / len(distinct)
        by_label = {l: p * (votes.get(l, 0.0) + share) for l, p in by_label.items()}
    total = sum(by_label.values())
    even = 1.0 / len(distinct)
    return np.log(np.array([by_label[l] / total if l is not None else even for l in labels]) + _FLOOR)


def _log_colour(labels: list[str | None], colour: Mapping[str, float], floor: float) -> np.ndarray:
    """log p(candidate's colour) under the query's reading, at least log `floor`; a candidate
    with no colour, or one the reading does not know, gets the even share."""
    even = np.log(max(1.0 / len(colour), floor))
    return np.array([np.log(max(float(colour[l]), floor)) if l in colour else even for l in labels])


__all__ = ["RerankSettings", "NO_RERANK", "rerank"]
