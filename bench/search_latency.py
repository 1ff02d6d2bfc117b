"""Search latency per model as a shopper sees it: decode + embed + query + metadata, one
image at a time, p50/p95, with the bare forward pass of the same model beside it; and a
shopper-like photo of each product searched as it is and with its zoomed views
(search/query_views.py), alternately, so the ratio is of the same moments.

    python -m bench.search_latency --db data/chroma --catalog ../shared/catalog --weights random [--n 50]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np

from bench.common import DEFAULT_CATALOG, pct, table
from catalog import open_image, read_catalog
from catalog.handheld import handheld_photo
from embedding import MODEL_NAMES
from embedding.builder import EmbedderBuilder
from search import AS_IS, Searcher
from vectorstore import StoreSettings, make_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="data/chroma")
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--weights", default="random")
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    products = read_catalog(args.catalog).products
    rng = np.random.default_rng(0)
    paths = [products[i].image for i in rng.choice(len(products), args.n, replace=False)]
    client = make_client(StoreSettings(path=args.db))
    searcher = Searcher(client, build=EmbedderBuilder(weights=args.weights, runtime=None))
    rows = []
    for model in args.models.split(","):
        searcher.warm_up([model])
        embedder = searcher.embedder(model)
        as_is = Searcher(client, embedders={model: embedder}, query_views=AS_IS)
        total, forward, query, plain, zoomed = [], [], [], [], []
        for path in paths:
            started = time.perf_counter()
            image = open_image(path)
            answer = searcher.search_image(model, image, k=5)
            total.append(time.perf_counter() - started)
            query.append(answer.timings["query"])
            batch = embedder.preprocess(image)[None]
            started = time.perf_counter()
            embedder.embed_preprocessed(batch)
            forward.append(time.perf_counter() - started)
            photo = handheld_photo(image, random.Random(str(path)))
            for which, times in ((as_is, plain), (searcher, zoomed)):
                started = time.perf_counter()
                which.search_image(model, photo, k=5)
                times.append(time.perf_counter() - started)
        rows.append({"model": model, "search p50 ms": f"{pct(total, 50) * 1000:.1f}",
                     "search p95 ms": f"{pct(total, 95) * 1000:.1f}",
                     "bare forward p50 ms": f"{pct(forward, 50) * 1000:.1f}",
                     "query p50 ms": f"{pct(query, 50) * 1000:.1f}",
                     "search/forward": f"{pct(total, 50) / pct(forward, 50):.2f}",
                     "photo as is p50 ms": f"{pct(plain, 50) * 1000:.1f}",
                     "photo zoomed p50 ms": f"{pct(zoomed, 50) * 1000:.1f}",
                     "zoomed/as is": f"{pct(zoomed, 50) / pct(plain, 50):.2f}"})
    print(table(rows))


if __name__ == "__main__":
    main()
