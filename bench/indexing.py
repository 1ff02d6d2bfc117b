"""Indexing throughput per model beside the bare forward pass on the same batches, in one run.

    python bench/indexing.py [--catalog ../shared/catalog] [--n 256] [--models efficientnet_lite0,...]

For each model: (1) the bare forward pass over preprocessed batches already in memory;
(2) the whole `index_catalog` (read, digest, decode, preprocess, embed, write to a fresh
embedded Chroma) over the same products. Prints images/s of each and their ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench.common import DEFAULT_CATALOG, table
from catalog import open_image, read_catalog
from embedding import MODEL_NAMES, load_embedder
from indexing import index_catalog
from vectorstore import StoreSettings, make_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    args = parser.parse_args()
    catalog = read_catalog(args.catalog)
    catalog.products = catalog.products[: args.n]
    catalog.skipped = []
    rows = []
    for name in args.models.split(","):
        embedder = load_embedder(name, "random")
        embedder.warm_up()
        batches = []
        for start in range(0, len(catalog.products), args.batch_size):
            chunk = catalog.products[start:start + args.batch_size]
            batches.append(torch.stack([embedder.preprocess(open_image(p.image)) for p in chunk]))
        started = time.perf_counter()
        for batch in batches:
            embedder.embed_preprocessed(batch)
        bare = len(catalog.products) / (time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as db:
            client = make_client(StoreSettings(path=db))
            report = index_catalog(catalog, client, [embedder], batch_size=args.batch_size, show_progress_bar=False)
        full = len(catalog.products) / report.seconds
        rows.append({"model": name, "images": len(catalog.products), "bare forward img/s": f"{bare:.1f}",
                     "index img/s": f"{full:.1f}", "index/bare": f"{full / bare:.2f}",
                     "stages": report.timer.summary()})
    print(table(rows))


if __name__ == "__main__":
    main()
