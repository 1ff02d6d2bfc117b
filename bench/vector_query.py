"""The vector query alone: p50 latency and recall@5 against exact search, unfiltered and
filtered, at the catalog's size (its real embeddings) and at 44k products (the real vectors
plus noisy copies with the same metadata mix), side by side with Chroma's own `where` filter.

    python -m bench.vector_query --db data/chroma --model resnet50 [--queries 200] [--size 44000]

Exact search here is the yardstick only (numpy over every stored vector); the product's path
is `ProductCollection.search`.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from bench.common import pct, table
from vectorstore import Filters, ProductCollection, StoreSettings, make_client


def load_all(coll: ProductCollection):
    got = coll.collection.get(include=["embeddings"])
    return got["ids"], np.asarray(got["embeddings"], dtype=np.float32)


def smallest_group_near(table_, size: int) -> Filters:
    # A filter that matches about `size` products: the article type whose count is closest.
    counts = table_["articleType"].value_counts()
    article = (counts - size).abs().idxmin()
    return Filters({"articleType": (article,)})


def measure(coll, ids, vectors, queries, filters: Filters, use_where: bool, k=5):
    table_ = coll.metadata.frame().loc[ids]
    allowed = filters.mask(table_) if not filters.is_empty() else np.ones(len(ids), bool)
    where = filters.to_where()
    times, recalls = [], []
    for q in queries:
        started = time.perf_counter()
        if use_where:
            got = coll.collection.query(query_embeddings=q[None], n_results=k, where=where, include=["distances"])["ids"][0]
        else:
            got = [h.id for h in coll.search_stored(q, k=k, filters=filters)]
        times.append(time.perf_counter() - started)
        scores = np.where(allowed, vectors @ q, -np.inf)
        exact = [ids[i] for i in np.argsort(-scores)[:min(k, int(allowed.sum()))]]
        recalls.append(len(set(got) & set(exact)) / max(1, len(exact)))
    return {"matching": int(allowed.sum()), "p50 ms": f"{pct(times, 50) * 1000:.1f}",
            "p95 ms": f"{pct(times, 95) * 1000:.1f}", "recall@5": f"{np.mean(recalls):.3f}"}


def run(coll, label, queries_n, rng):
    ids, vectors = load_all(coll)
    picks = rng.choice(len(ids), size=min(queries_n, len(ids)), replace=False)
    # Queries are stored vectors nudged off their own point, as a new photo of a product would be.
    queries = vectors[picks] + rng.normal(scale=0.02, size=vectors[picks].shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    coll.search(queries[0], k=5)  # load the HNSW index
    cases = [("unfiltered", Filters()),
             ("gender=Women & masterCategory=Footwear", Filters({"gender": ("Women",), "masterCategory": ("Footwear",)})),
             ("~50 products", smallest_group_near(coll.metadata.frame(), 50)),
             ("gender=Men", Filters({"gender": ("Men",)}))]
    rows = []
    for name, filters in cases:
        for path, use_where in (("planned (product)", False), ("chroma where", True)):
            if filters.is_empty() and use_where:
                continue
            rows.append({"size": label, "filter": name, "path": path, **measure(coll, ids, vectors, queries, filters, use_where)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="data/chroma")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--size", type=int, default=44000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    client = make_client(StoreSettings(path=args.db))
    coll = ProductCollection.open(client, args.model)
    rows = run(coll, f"{coll.count()} (real)", args.queries, rng)

    ids, vectors = load_all(coll)
    metas = coll.metadata.frame().loc[ids]
    with tempfile.TemporaryDirectory() as tmp:
        big_client = make_client(StoreSettings(path=tmp))
        big = ProductCollection.open(big_client, f"{args.model}-synthetic", dim=vectors.shape[1], create=True)
        copies = int(np.ceil(args.size / len(ids)))
        started = time.perf_counter()
        for c in range(copies):
            take = min(len(ids), args.size - c * len(ids))
            noisy = vectors[:take] + (rng.normal(scale=0.05, size=vectors[:take].shape).astype(np.float32) if c else 0)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            records = [{k: v for k, v in row.items() if v is not None and v == v}
                       for row in metas.iloc[:take].drop(columns=["image", "digest"], errors="ignore").to_dict("records")]
            big.write([f"{c}-{i}" for i in ids[:take]], noisy, records)
        print(f"built the {args.size}-product synthetic collection in {time.perf_counter() - started:.0f}s")
        rows += run(big, f"{big.count()} (synthetic)", args.queries, rng)
    print(table(rows))


if __name__ == "__main__":
    main()
