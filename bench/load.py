"""Load on loopback: N concurrent clients for S seconds against `POST /api/recommend` and the
Gradio API (`/assistant`, api_name /recommend) of one `app.py shop` process.

    python -m bench.load --db DB --weights random --models resnet18 [--clients 20] [--seconds 60]

Prints requests, errors, p50/p95 per surface, and the server's resident memory after 100 and
after 1,000 requests (their ratio: growth would mean a leak).
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from bench.common import ROOT, free_port, pct, table


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_shop(db: str, weights: str, models: str, port: int, catalog: str = "") -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "app.py"), "shop", "--catalog", catalog, "--db", db, "--weights", weights,
               "--models", models, "--model", models.split(",")[0], "--port", str(port), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the shop exited: " + process.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the shop did not start in time")


def photos(n: int = 8) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.effect_noise((180, 240), 30 + 5 * i).convert("RGB").save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float | None, error: str | None = None):
        with self.lock:
            if error:
                self.errors.append(error)
            else:
                self.latencies.append(seconds)

    @property
    def count(self) -> int:
        return len(self.latencies) + len(self.errors)


def _timed(stats: Stats, request) -> None:
    """Time one request; `request()` returns None when the answer is right, else what was wrong."""
    started = time.perf_counter()
    try:
        error = request()
        stats.add(time.perf_counter() - started, error)
    except Exception as exc:  # counted, not raised: a load test reports errors
        stats.add(None, repr(exc))


def _loop(items: list, stop: float, stats: Stats, index: int, request) -> None:
    """Send `request(item)` over the items until `stop`, at least once: a slow start (a client
    that takes seconds to connect) still yields a measured request."""
    i = index
    while True:
        item = items[i % len(items)]
        i += 1
        _timed(stats, lambda: request(item))
        if time.time() >= stop:
            return


def api_worker(base: str, images: list[bytes], stop: float, stats: Stats, index: int):
    with httpx.Client(timeout=60) as client:
        def post(data: bytes) -> str | None:
            response = client.post(f"{base}/api/recommend", files={"image": ("p.jpg", data, "image/jpeg")})
            ok = response.status_code == 200 and len(response.json()["results"]) > 0
            return None if ok else f"HTTP {response.status_code}"

        _loop(images, stop, stats, index, post)


def gradio_worker(base: str, paths: list[str], stop: float, stats: Stats, index: int, model: str):
    from gradio_client import Client, handle_file
    try:
        client = Client(f"{base}/assistant/", verbose=False)
    except Exception as exc:  # a client that cannot connect is an error of the run, not a crash
        stats.add(None, f"connect: {exc!r}")
        return

    def predict(path: str) -> str | None:
        result = client.predict(handle_file(path), model, 5, "", "", api_name="/recommend")
        ok = isinstance(result, dict) and len(result.get("results", [])) > 0
        return None if ok else f"bad answer {str(result)[:100]}"

    _loop(paths, stop, stats, index, predict)


def run_load(base: str, surface: str, clients: int, seconds: float, images: list[bytes], model: str,
             tmp: Path, on_count=None) -> Stats:
    stats = Stats()
    stop = time.time() + seconds
    paths = []
    for i, data in enumerate(images):
        path = tmp / f"load-{i}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    threads = [threading.Thread(target=api_worker if surface == "api" else gradio_worker,
                                args=(base, images, stop, stats, i) if surface == "api" else (base, paths, stop, stats, i, model))
               for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if on_count:
            on_count(stats.count)
        time.sleep(0.2)
    return stats


def main() -> None:
    import tempfile
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    port = free_port()
    server = start_shop(args.db, args.weights, args.models, port)
    base = f"http://127.0.0.1:{port}"
    memory: dict[int, float] = {}
    total = {"done": 0}

    def watch(offset):
        def note(count):
            n = offset + count
            for mark in (100, 1000):
                if n >= mark and mark not in memory:
                    memory[mark] = rss_mb(server.pid)
        return note

    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            images = photos()
            for surface in ("api", "gradio"):
                stats = run_load(base, surface, args.clients, args.seconds, images, args.models.split(",")[0],
                                 Path(tmp), on_count=watch(total["done"]))
                total["done"] += stats.count
                rows.append({"surface": surface, "clients": args.clients, "seconds": args.seconds,
                             "requests": stats.count, "errors": len(stats.errors),
                             "req/s": f"{len(stats.latencies) / args.seconds:.1f}",
                             "p50 ms": f"{pct(stats.latencies, 50) * 1000:.0f}" if stats.latencies else "-",
                             "p95 ms": f"{pct(stats.latencies, 95) * 1000:.0f}" if stats.latencies else "-"})
                if stats.errors:
                    print(f"{surface} errors (first 3): {stats.errors[:3]}")
        print(table(rows))
        m100, m1000 = memory.get(100), memory.get(1000)
        print(f"server RSS after 100 requests: {m100:.0f} MB; after 1000: "
              + (f"{m1000:.0f} MB (ratio {m1000 / m100:.3f})" if m1000 else "not reached") if m100 else "fewer than 100 requests")
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
