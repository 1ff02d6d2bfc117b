"""POST /api/recommend latency, per model, from a client on loopback.

The shop app (without the Gradio chat, which this path does not touch) runs in its own
process under uvicorn; this process sends catalog photos one after another over one
keep-alive connection, as a shop's backend would, and reports p50/p95 of the round trip
(upload, decode, embed, search, JSON) per model.

    python bench/api_latency.py --db /tmp/shop_db --catalog /work/shared/catalog \
        --weights random --models resnet18,resnet50 --requests 100 --runtimes eager,onnx-int8
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


def serve(db: str, weights: str, models: tuple[str, ...], port: int, images_dir: str | None, runtime: str) -> None:
    import uvicorn

    from embedding import load_embedder
    from embedding.runtime import RuntimeSettings, apply_runtime
    from operations import SearchPolicy
    from search import Searcher
    from shop import ShopSettings, build_app
    from vectorstore import StoreSettings, make_client
    embedders = {m: load_embedder(m, weights) for m in models}
    for embedder in embedders.values():
        apply_runtime(embedder, RuntimeSettings(runtime=runtime))
    searcher = Searcher(make_client(StoreSettings(path=Path(db))), embedders=embedders)
    searcher.warm_up(models)
    settings = ShopSettings(policy=SearchPolicy(models=models, default_model=models[0]), images_dir=Path(images_dir) if images_dir else None)
    uvicorn.run(build_app(searcher, settings), host="127.0.0.1", port=port, log_level="warning")


def wait_until_ready(client, server, timeout_s: float = 600) -> dict | None:
    import httpx
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.get("/api/health").json()
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.5)


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
    parser.add_argument("--runtimes", default="eager,onnx-int8",
                        help="one server each; requests alternate between them, so load hits all alike")
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--serve-runtime", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    images_dir = Path(args.catalog) / "images"
    if args.serve_port:
        serve(args.db, args.weights, models, args.serve_port, str(images_dir), args.serve_runtime)
        return 0

    import httpx
    photos = sorted(images_dir.glob("*.jpg"))
    if not photos:
        print(f"no .jpg under {images_dir}", file=sys.stderr)
        return 2
    queries = random.Random(args.seed).sample(photos, min(len(photos), args.requests + args.warmup))
    queries = [(p.name, p.read_bytes()) for p in queries]

    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    servers = {}
    try:
        for runtime in runtimes:
            port = free_port()
            servers[runtime] = (f"http://127.0.0.1:{port}", subprocess.Popen(
                [sys.executable, __file__, "--db", args.db, "--catalog", args.catalog, "--weights", args.weights,
                 "--models", ",".join(models), "--serve-port", str(port), "--serve-runtime", runtime]))
        clients = {runtime: httpx.Client(base_url=base, timeout=120) for runtime, (base, _) in servers.items()}
        for runtime, client in clients.items():
            health = wait_until_ready(client, servers[runtime][1])
            if health is None:
                print(f"the {runtime} server did not start", file=sys.stderr)
                return 1
        print(f"servers ready: {health['models']} products per model; {args.requests} requests per model "
              f"and runtime after {args.warmup} warm-up, alternating between runtimes, k={args.k}, one "
              f"keep-alive connection each, {os.cpu_count()} CPUs", flush=True)
        rows = []
        for model in models:
            times = {runtime: [] for runtime in runtimes}
            for i in range(args.warmup + args.requests):
                name, data = queries[i % len(queries)]
                for runtime, client in clients.items():  # the same photo to each in turn
                    started = time.perf_counter()
                    response = client.post("/api/recommend", files={"image": (name, data, "image/jpeg")},
                                           data={"model": model, "k": str(args.k)})
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        print(f"{model} {runtime} {name}: HTTP {response.status_code} {response.text[:200]}",
                              file=sys.stderr)
                        return 1
                    if i >= args.warmup:
                        times[runtime].append(elapsed * 1000)
            reference = pct(times[runtimes[0]], 50)
            for runtime in runtimes:
                ms = times[runtime]
                rows.append({"model": model, "runtime": runtime, "requests": len(ms),
                             "p50 ms": f"{pct(ms, 50):.1f}", "p95 ms": f"{pct(ms, 95):.1f}",
                             "min ms": f"{min(ms):.1f}", f"p50 vs {runtimes[0]}": f"{reference / pct(ms, 50):.2f}x"})
        for client in clients.values():
            client.close()
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(30)

    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
