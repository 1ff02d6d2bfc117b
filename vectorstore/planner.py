"""How a search with filters is answered, by how many products pass the filter.

Chroma's `where` filter over SQLite costs 50-130 ms at 44k products and loses recall at mid
selectivity, so the plan is made on the in-memory metadata table instead (measured in
bench/vector_query.py; docs/search.md has the figures):
- at most EXACT_LIMIT pass: Chroma returns those products' vectors by id and they are ranked
  exactly (a filtered HNSW walk over a tiny allowed set visits most of the graph: 27 ms for
  50 of 44k, against 2 ms to fetch 50 vectors);
- otherwise an unfiltered HNSW query over-fetches OVERFETCH times the expected need and the
  filter is applied in memory; should that need more than MAX_FETCH neighbours, Chroma is
  asked for the matching ids instead.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vectorstore.filters import Filters

EXACT_LIMIT = 400
OVERFETCH = 4
MAX_FETCH = 2000

Neighbours = tuple[list[str], list[float]]  # ids and cosine distances, nearest first


def nearest(collection, vector: np.ndarray, want: int, filters: Filters | None, frame: pd.DataFrame) -> Neighbours:
    """Up to `want` nearest products to `vector` (a stored-space row vector) passing `filters`.
    `collection` is the Chroma collection; `frame` the metadata table the plan is made on."""
    total = len(frame)
    if filters is None or filters.is_empty():
        return _query(collection, vector, min(want, total))
    mask = filters.mask(frame)
    matching = int(mask.sum())
    if matching == 0:
        return [], []
    if matching <= EXACT_LIMIT:
        return _rank_exactly(collection, vector, min(want, matching), frame.index[mask].tolist())
    return _overfetch(collection, vector, want, mask, frame, matching)


def _query(collection, vector: np.ndarray, n: int, ids: list[str] | None = None) -> Neighbours:
    result = collection.query(query_embeddings=vector, n_results=n, ids=ids, include=["distances"])
    return result["ids"][0], result["distances"][0]


def _rank_exactly(collection, vector: np.ndarray, n: int, ids: list[str]) -> Neighbours:
    got = collection.get(ids=ids, include=["embeddings"])
    stored = np.asarray(got["embeddings"], dtype=np.float32)
    distances = 1.0 - stored @ vector[0]
    order = np.argsort(distances, kind="stable")[:n]
    return [got["ids"][i] for i in order], distances[order].tolist()


def _overfetch(collection, vector, want: int, mask, frame: pd.DataFrame, matching: int) -> Neighbours:
    # Unfiltered HNSW keeps its recall: ask for enough neighbours that `want` of them pass the
    # filter several times over in expectation. When the filter disagrees with the photo
    # (shoes asked for, a shirt shown), few pass: then ask Chroma for the matching ids
    # directly rather than widening step by step.
    allowed = set(frame.index[mask])
    total = len(frame)
    n = min(total, max(4 * want, math.ceil(want * total / matching * OVERFETCH)))
    if n <= MAX_FETCH:
        ids, distances = _query(collection, vector, n)
        kept = [(i, d) for i, d in zip(ids, distances) if i in allowed]
        if len(kept) >= want or n >= total:
            return [i for i, _ in kept], [d for _, d in kept]
    return _query(collection, vector, min(want, matching), ids=frame.index[mask].tolist())
