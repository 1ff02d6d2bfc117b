"""Indexing throughput of the Ray engine beside the single-process one, same products, same
Chroma server, same run.

    python -m bench.ray_indexing [--catalog ../shared/catalog] [--limit 256] [--models resnet18]
                                 [--workers 2] [--batch-size 32] [--ray-address ADDR]

Each engine builds the collections from scratch (--rebuild) into one `chroma run` server in a
temp folder. Prints images/s of each, end to end (Ray's start and the actors' model loads
included, as a user waits for them) and for the embed-and-write part alone, and the ratios.
On a 2-core machine no speed-up is expected: the point is the path; on a cluster the Ray
figure grows with the workers while the single process stays where it is.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import DEFAULT_CATALOG, table
from catalog import read_catalog
from embedding import load_embedder
from indexing import index_catalog
from indexing.ray_engine import FIRST_BATCH_STAGE, STEADY_STAGE, RaySettings, index_catalog_ray
from tests.conftest import free_port, start_chroma
from vectorstore import StoreSettings, make_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="Ray embedding actors (default: one per CPU)")
    parser.add_argument("--ray-address", default=None)
    args = parser.parse_args()
    catalog = read_catalog(args.catalog)
    catalog.products = catalog.products[: args.limit]
    catalog.skipped = []
    embedders = [load_embedder(m, args.weights) for m in args.models.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_chroma(Path(tmp) / "chroma", port)
        try:
            store = StoreSettings(host="127.0.0.1", port=port)
            single = index_catalog(catalog, make_client(store), embedders, batch_size=args.batch_size, rebuild=True,
                                   show_progress_bar=False)
            started = time.perf_counter()
            distributed = index_catalog_ray(catalog, store, embedders, weights=args.weights, rebuild=True,
                                            settings=RaySettings(address=args.ray_address, workers=args.workers,
                                                                 batch_size=args.batch_size),
                                            show_progress_bar=False)
            ray_total = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(30)
    n = single.images
    rows = [{"engine": "single process", "images": n, "img/s end to end": f"{n / single.seconds:.1f}",
             "stages": single.timer.summary()},
            {"engine": f"ray ({args.workers or 'one per CPU'} workers)", "images": distributed.images,
             "img/s end to end": f"{distributed.images / ray_total:.1f}",
             "stages": distributed.timer.summary()}]
    print(table(rows))
    steady = distributed.timer.seconds[STEADY_STAGE]
    first = distributed.timer.seconds[FIRST_BATCH_STAGE]
    print(f"\nray / single, end to end: {single.seconds / ray_total:.2f}x (Ray's start and each actor's model "
          f"load included: {first:.1f}s to the first written batch)")
    after_first = max(0, distributed.images - args.batch_size) / steady if steady else 0.0
    print(f"after the first batch: ray {after_first:.1f} img/s; single process {n / single.seconds:.1f} img/s "
          f"end to end (its start is only the model's trace); ratio {after_first / (n / single.seconds):.2f}")
    assert single.indexed == distributed.indexed, (single.indexed, distributed.indexed)


if __name__ == "__main__":
    main()
