"""Retrieval metrics over ranked results, as pure functions of labels.

A query has labels (articleType, gender, ...); each result it got back has labels too. A
result is relevant at a label level when it shares the query's value there. Everything is
computed from those labels alone, so a case can be checked by hand.

Conventions (the ones a shopper's view suggests):
- precision@k divides by k, not by the number of results returned: an answer with fewer
  than k products is worse, not better;
- a query with no value at a level (a missing baseColour, say) is left out of that level's
  average, since nothing can be judged against it; a result with no value never matches;
- AP@k = (1 / min(k, R)) * sum over ranks i <= k of precision@i at each relevant rank, where R
  is the number of relevant products the index holds for the query (the query itself
  excluded); queries with R = 0 cannot succeed and are left out of mAP (they still count as
  misses in precision and hit rate). Without R, the number of relevant results found is used.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from catalog.errors import UserError

# "type+colour": articleType and baseColour both match, what makes two products look alike to a
# shopper (a black heel for a black heel) rather than merely belong together.
COMBINED_LEVELS = {"type+colour": ("articleType", "baseColour")}
LABEL_LEVELS = ("articleType", "subCategory", "masterCategory", "gender", "baseColour", *COMBINED_LEVELS)
PRIMARY_LEVEL = "articleType"


def label_value(labels: Mapping[str, object], level: str):
    """A product's value at a label level; a combined level is the tuple of its parts (None
    when any part is unknown, so the query is not judged on it)."""
    parts = COMBINED_LEVELS.get(level)
    if parts is None:
        return labels.get(level)
    values = tuple(labels.get(part) for part in parts)
    return None if any(v in (None, "") for v in values) else values


def _relevant(query_value, result_values: Sequence, k: int) -> list[bool]:
    return [query_value is not None and value == query_value for value in list(result_values)[:k]]


def precision_at_k(query_value, result_values: Sequence, k: int) -> float | None:
    """Share of the first k slots holding a result with the query's value; None when the
    query has no value at this level."""
    if k <= 0:
        raise UserError("k must be at least 1")
    if query_value is None:
        return None
    return sum(_relevant(query_value, result_values, k)) / k


def hit_at_k(query_value, result_values: Sequence, k: int) -> float | None:
    """1.0 when any of the first k results has the query's value, else 0.0."""
    if query_value is None:
        return None
    return 1.0 if any(_relevant(query_value, result_values, k)) else 0.0


def average_precision_at_k(query_value, result_values: Sequence, k: int,
                           n_relevant: int | None = None) -> float | None:
    """AP@k (see the module's conventions); None when it is undefined for this query."""
    if query_value is None or n_relevant == 0:
        return None
    found, total = 0, 0.0
    for rank, relevant in enumerate(_relevant(query_value, result_values, k), start=1):
        if relevant:
            found += 1
            total += found / rank
    denominator = min(k, n_relevant) if n_relevant is not None else found
    return total / denominator if denominator else 0.0


@dataclass(frozen=True)
class QueryOutcome:
    """One query: its labels, the labels of what came back (best first), and how many
    products in the index share its articleType (None when unknown)."""
    query_id: str
    labels: Mapping[str, object]
    results: Sequence[Mapping[str, object]]
    n_relevant: int | None = None


@dataclass
class ArticleTypeScore:
    article_type: str
    queries: int
    precision: float
    hit_rate: float


@dataclass
class Scores:
    k: int
    queries: int
    precision: dict[str, float | None]   # per label level
    map: float | None                    # on articleType
    hit_rate: float | None               # on articleType
    per_article_type: list[ArticleTypeScore] = field(default_factory=list)  # most queries first
    worst_article_types: list[ArticleTypeScore] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def worst_article_types(per_type: Sequence[ArticleTypeScore], n: int = 10,
                        min_queries: int = 1) -> list[ArticleTypeScore]:
    """The n article types with the lowest precision among those with at least `min_queries`
    queries (fewer would be noise); ties go to the type with more queries, then by name."""
    eligible = [s for s in per_type if s.queries >= min_queries]
    return sorted(eligible, key=lambda s: (s.precision, -s.queries, s.article_type))[:n]


def score(outcomes: Sequence[QueryOutcome], k: int, worst: int = 10, min_queries: int = 1) -> Scores:
    """Every metric of the report for one model and one kind of query."""
    def values(outcome: QueryOutcome, level: str) -> list:
        return [label_value(r, level) for r in outcome.results]

    precision = {level: _mean([precision_at_k(label_value(o.labels, level), values(o, level), k) for o in outcomes])
                 for level in LABEL_LEVELS}
    primary = [(o.labels.get(PRIMARY_LEVEL), values(o, PRIMARY_LEVEL), o) for o in outcomes]
    mean_ap = _mean([average_precision_at_k(q, r, k, o.n_relevant) for q, r, o in primary])
    hit_rate = _mean([hit_at_k(q, r, k) for q, r, _ in primary])

    by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for query_value, results, _ in primary:
        if query_value is not None:
            by_type[str(query_value)].append((precision_at_k(query_value, results, k),
                                              hit_at_k(query_value, results, k)))
    per_type = [ArticleTypeScore(name, len(rows), sum(p for p, _ in rows) / len(rows),
                                 sum(h for _, h in rows) / len(rows))
                for name, rows in by_type.items()]
    per_type.sort(key=lambda s: (-s.queries, s.article_type))
    return Scores(k=k, queries=len(outcomes), precision=precision, map=mean_ap, hit_rate=hit_rate,
                  per_article_type=per_type,
                  worst_article_types=worst_article_types(per_type, worst, min_queries))


__all__ = ["COMBINED_LEVELS", "label_value", "LABEL_LEVELS", "PRIMARY_LEVEL", "precision_at_k", "hit_at_k", "average_precision_at_k",
           "QueryOutcome", "ArticleTypeScore", "Scores", "score", "worst_article_types"]
