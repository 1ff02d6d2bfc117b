"""What reordering more of the nearest products costs a search: p50 and p95 of
`Searcher.search_vector` (the store's query, the reordering by kind and colour) for each number
of candidates, queries interleaved pair by pair so that the machine's noise falls on all alike.

    python -m bench.rerank_candidates --db DB --weights FILE [--candidates 50,150,400] [--queries 200]

Queries are stored vectors nudged off their own point (a new photo of a product), each with a
colour reading that prefers one colour, as a shopper's photo brings.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from bench.common import add_search_arguments, pct, table
from embedding.builder import EmbedderBuilder
from search import RerankSettings, Searcher
from vectorstore import StoreSettings, make_client


def main() -> None:
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    parser.add_argument("--candidates", default="50,150,400")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    counts = [int(c) for c in args.candidates.split(",")]
    searcher = Searcher(make_client(StoreSettings(path=args.db)), build=EmbedderBuilder(weights=args.weights, runtime=None))
    collection = searcher.collection(args.model)
    rng = np.random.default_rng(0)
    ids = sorted(collection.stored_digests())
    picks = rng.choice(len(ids), size=min(args.queries, len(ids)), replace=False)
    vectors = [collection.vector_of(ids[i]) for i in picks]
    colours = sorted(searcher.vocabulary(args.model).get("baseColour", []))
    queries = []
    for vector in vectors:
        nudged = vector + rng.normal(scale=0.02, size=vector.shape).astype(np.float32)
        liked = colours[int(rng.integers(len(colours)))]
        reading = {c: (0.6 if c == liked else 0.4 / (len(colours) - 1)) for c in colours}
        queries.append((nudged / np.linalg.norm(nudged), reading))
    searcher.search_vector(args.model, queries[0][0], 5, colour=queries[0][1])  # load the index
    times = {c: [] for c in counts}
    for vector, reading in queries:
        for c in counts:
            searcher.rerank = replace(RerankSettings(), candidates=c)
            started = time.perf_counter()
            searcher.search_vector(args.model, vector, 5, colour=reading)
            times[c].append(time.perf_counter() - started)
    base = pct(times[counts[0]], 50)
    print(f"{len(queries)} queries, {collection.count()} products, {args.model} ({args.weights})")
    print(table([{"candidates": c, "p50 ms": f"{pct(t, 50) * 1000:.1f}", "p95 ms": f"{pct(t, 95) * 1000:.1f}",
                  "p50 vs first": f"{pct(t, 50) / base:.2f}x"} for c, t in times.items()]))


if __name__ == "__main__":
    main()
