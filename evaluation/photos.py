"""Scoring labelled real photos (`evaluate --photos DIR`): P@k by kind, by colour where the
photo's colour is known, and both, under the lenient mappings of catalog/photo_labels.py.

A photo has a class ("longsleeve") and maybe a colour; nothing in the index is the photo's own
product, so nothing is left out and mAP (which needs the number of relevant products) is not
computed.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from catalog.photo_labels import LabelledPhoto, colour_matches, kind_matches

PHOTO_LEVELS = ("kind", "colour", "type+colour")


@dataclass(frozen=True)
class PhotoOutcome:
    """One photo: its labels and the (articleType, baseColour) of what came back, best first."""
    path: str
    photo_class: str
    colour: str | None
    results: Sequence[tuple[str | None, str | None]]
    # The colour model's reading of the photo, when it was read.
    read_colour: str | None = None


@dataclass
class PhotoScores:
    k: int
    queries: int
    with_colour: int
    precision: dict[str, float | None]          # per PHOTO_LEVELS
    hit_rate: dict[str, float | None]
    by_class: dict[str, dict] = field(default_factory=dict)
    # Share of the photos with a known colour whose reading (top-1) matches it, leniently.
    colour_reading: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def matches(outcome: PhotoOutcome, level: str) -> list[bool] | None:
    """Per result, whether it matches the photo at `level`; None when the photo cannot be
    judged there (no colour known)."""
    if level != "kind" and outcome.colour is None:
        return None
    kind = [kind_matches(outcome.photo_class, t) for t, _ in outcome.results]
    if level == "kind":
        return kind
    colour = [colour_matches(outcome.colour, c) for _, c in outcome.results]
    return colour if level == "colour" else [a and b for a, b in zip(kind, colour)]


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def precision(matches: list[bool] | None, k: int) -> float | None:
    """Share of the first k slots matching (k, not the results' count, divides)."""
    return None if matches is None else sum(matches[:k]) / k


def hit(matches: list[bool] | None, k: int) -> float | None:
    return None if matches is None else float(any(matches[:k]))


def score_photos(outcomes: Sequence[PhotoOutcome], k: int) -> PhotoScores:
    precision_by = {level: _mean(precision(matches(o, level), k) for o in outcomes) for level in PHOTO_LEVELS}
    hit_by = {level: _mean(hit(matches(o, level), k) for o in outcomes) for level in PHOTO_LEVELS}
    grouped: dict[str, list[PhotoOutcome]] = defaultdict(list)
    for o in outcomes:
        grouped[o.photo_class].append(o)
    by_class = {name: {"queries": len(rows), "kind": _mean(precision(matches(o, "kind"), k) for o in rows)}
                for name, rows in sorted(grouped.items())}
    read = [colour_matches(o.colour, o.read_colour) for o in outcomes
            if o.colour is not None and o.read_colour is not None]
    return PhotoScores(k=k, queries=len(outcomes), with_colour=sum(o.colour is not None for o in outcomes),
                       precision=precision_by, hit_rate=hit_by, by_class=by_class,
                       colour_reading=sum(read) / len(read) if read else None)


def outcome_of(photo: LabelledPhoto, results: Sequence[Mapping], read_colour: str | None = None) -> PhotoOutcome:
    return PhotoOutcome(str(photo.path), photo.photo_class, photo.colour,
                        [(r.get("articleType"), r.get("baseColour")) for r in results], read_colour)


__all__ = ["PHOTO_LEVELS", "PhotoOutcome", "PhotoScores", "score_photos", "outcome_of", "matches", "precision", "hit"]
