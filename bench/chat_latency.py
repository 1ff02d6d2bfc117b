"""Chat latency as a shopper sees it: from pressing send to the gallery shown, in Chromium.

`app.py serve` runs in its own process over an existing index (it is not re-indexed); a
headless Chromium opens the chat, picks the model ("use resnet18"), then for each message
attaches a catalog photo (the upload finishes first, as it does while a shopper types),
presses Enter and waits until the reply's gallery is in the page with every image decoded.
One message per model is sent first and not counted (first-call costs: model trace, HNSW load).

    python app.py index --catalog /work/shared/catalog --db /tmp/chat_db --weights random \
        --models resnet18,resnet50 --limit 2000
    python bench/chat_latency.py --db /tmp/chat_db --weights random --models resnet18,resnet50
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.common import DEFAULT_CATALOG, pct, table  # noqa: E402
from bench.api_latency import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def start_server(args, port: int) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "app.py"), "serve", "--catalog", "", "--db", args.db,
               "--weights", args.weights, "--models", args.models, "--model", args.models.split(",")[0],
               "--port", str(port), "--quiet"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"app.py serve exited: {server.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("app.py serve did not start within 5 minutes")


def photos(catalog: Path, count: int, seed: int) -> list[Path]:
    images = sorted((catalog / "images").glob("*.jpg"))
    if len(images) < count:
        raise SystemExit(f"{catalog}/images holds {len(images)} photos; {count} needed")
    return random.Random(seed).sample(images, count)


# Replies are counted by their text parts: the chat keeps a bounded number of galleries, so
# the number of galleries stops growing, while every reply adds one text part.
REPLIES = """() => [...document.querySelectorAll('#chat [data-testid="bot"]')]
    .filter(p => !p.querySelector('.grid-container')).length"""
GALLERY_READY = """(n) => { const replies = [...document.querySelectorAll('#chat [data-testid="bot"]')]
        .filter(p => !p.querySelector('.grid-container')).length;
    if (replies <= n) return false;
    const g = [...document.querySelectorAll('#chat .grid-container')].pop();
    const imgs = g ? [...g.querySelectorAll('img')] : [];
    return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"""


def measure(page, model: str, queries: list[Path]) -> list[float]:
    before = page.evaluate(REPLIES)
    page.click("#message textarea")
    page.fill("#message textarea", f"use {model}")  # the chat answers even before a photo
    page.keyboard.press("Enter")
    page.wait_for_function(f"({REPLIES})() > {before}")
    page.wait_for_function("!document.querySelector('#message textarea').disabled")
    seconds = []
    for photo in queries:
        page.set_input_files('#message input[data-testid="file-upload"]', str(photo))
        page.wait_for_selector("#message img")
        page.click("#message textarea")
        shown = page.evaluate(REPLIES)
        started = time.perf_counter()
        page.keyboard.press("Enter")
        page.wait_for_function(GALLERY_READY, arg=shown, polling="raf")
        seconds.append(time.perf_counter() - started)
        page.wait_for_function("!document.querySelector('#message textarea').disabled")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG), help="query photos come from its images/")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    queries = photos(Path(args.catalog), (args.messages + 1) * len(models), args.seed)
    port = free_port()
    server = start_server(args, port)
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for i, model in enumerate(models):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#message textarea")
                mine = queries[i * (args.messages + 1):(i + 1) * (args.messages + 1)]
                measure(page, model, mine[:1])  # warm-up, not counted
                seconds = measure(page, model, mine[1:])
                ms = [s * 1000 for s in seconds]
                rows.append({"model": model, "messages": len(ms), "p50 ms": f"{pct(ms, 50):.0f}",
                             "p95 ms": f"{pct(ms, 95):.0f}", "min ms": f"{min(ms):.0f}", "max ms": f"{max(ms):.0f}",
                             "first half p50": f"{pct(ms[:len(ms) // 2], 50):.0f}",
                             "second half p50": f"{pct(ms[len(ms) // 2:], 50):.0f}"})
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"send -> gallery shown, headless Chromium, {os.cpu_count()} CPUs, index {args.db}, weights {args.weights}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
