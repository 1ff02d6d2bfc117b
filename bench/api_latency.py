"""POST /api/recommend latency, per model, from a client on loopback.

The shop app (without the Gradio chat, which this path does not touch) runs in its own
process under uvicorn; this process sends catalog photos one after another over one
keep-alive connection, as a shop's backend would, and reports p50/p95 of the round trip
(upload, decode, embed, search, JSON) per model.

    python bench/api_latency.py --db /tmp/shop_db --catalog /work/shared/catalog \
        --weights random --models resnet18,resnet50 --requests 100
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.common import DEFAULT_CATALOG, free_port, pct, table  # noqa: E402


def serve(db: str, weights: str, models: tuple[str, ...], port: int, images_dir: str | None) -> None:
    import uvicorn
    from operations import SearchPolicy
    from shop import ShopSettings, build_app
    from vectorstore import Searcher, StoreSettings, make_client
    searcher = Searcher(make_client(StoreSettings(path=Path(db))), weights=weights)
    searcher.warm_up(models)
    settings = ShopSettings(policy=SearchPolicy(models=models, default_model=models[0]), images_dir=Path(images_dir) if images_dir else None)
    uvicorn.run(build_app(searcher, settings), host="127.0.0.1", port=port, log_level="warning")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="an index built by `app.py index`")
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG), help="query photos are drawn from its images/")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5, help="requests per model not counted")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    images_dir = Path(args.catalog) / "images"
    if args.serve_port:
        serve(args.db, args.weights, models, args.serve_port, str(images_dir))
        return 0

    import httpx
    photos = sorted(images_dir.glob("*.jpg"))
    if not photos:
        print(f"no .jpg under {images_dir}", file=sys.stderr)
        return 2
    queries = random.Random(args.seed).sample(photos, min(len(photos), args.requests + args.warmup))
    queries = [(p.name, p.read_bytes()) for p in queries]

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--db", args.db, "--catalog", args.catalog,
                               "--weights", args.weights, "--models", ",".join(models),
                               "--serve-port", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            deadline = time.monotonic() + 600
            while True:
                try:
                    health = client.get("/api/health").json()
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        print("the server did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.5)
            print(f"server ready: {health['models']} products per model; {args.requests} requests "
                  f"per model after {args.warmup} warm-up, k={args.k}, one keep-alive connection, "
                  f"{os.cpu_count()} CPUs", flush=True)
            rows = []
            for model in models:
                times = []
                for i in range(args.warmup + args.requests):
                    name, data = queries[i % len(queries)]
                    started = time.perf_counter()
                    response = client.post("/api/recommend", files={"image": (name, data, "image/jpeg")},
                                           data={"model": model, "k": str(args.k)})
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        print(f"{model} {name}: HTTP {response.status_code} {response.text[:200]}", file=sys.stderr)
                        return 1
                    if i >= args.warmup:
                        times.append(elapsed * 1000)
                rows.append({"model": model, "requests": len(times), "p50 ms": f"{pct(times, 50):.1f}",
                             "p95 ms": f"{pct(times, 95):.1f}", "mean ms": f"{sum(times) / len(times):.1f}",
                             "min ms": f"{min(times):.1f}", "max ms": f"{max(times):.1f}"})
    finally:
        server.terminate()
        server.wait(30)

    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
