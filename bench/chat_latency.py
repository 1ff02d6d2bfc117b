"""Chat latency as a shopper sees it: from pressing send to the gallery shown, in Chromium.

`app.py serve` runs in its own process over an existing index (it is not re-indexed); a
headless Chromium opens the chat, picks the model ("use resnet18"), then for each message
attaches a catalog photo (the upload finishes first, as it does while a shopper types),
presses Enter and waits until the reply's gallery is in the page with every image decoded.
One message per model is sent first and not counted (first-call costs: model trace, HNSW load).

    python app.py index --catalog /work/shared/catalog --db /tmp/chat_db --weights random \
        --models resnet18,resnet50 --limit 2000
    python bench/chat_latency.py --db /tmp/chat_db --weights random --models resnet18,resnet50 \
        --runtimes eager,onnx-int8
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

from bench.common import DEFAULT_CATALOG, free_port, pct, table  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def start_server(args, port: int, runtime: str) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "app.py"), "serve", "--catalog", "", "--db", args.db,
               "--weights", args.weights, "--models", args.models, "--model", args.models.split(",")[0],
               "--runtime", runtime, "--port", str(port), "--quiet"]
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


def ask_for_model(page, model: str) -> None:
    before = page.evaluate(REPLIES)
    page.click("#message textarea")
    page.fill("#message textarea", f"use {model}")  # the chat answers even before a photo
    page.keyboard.press("Enter")
    page.wait_for_function(f"({REPLIES})() > {before}")
    page.wait_for_function("!document.querySelector('#message textarea').disabled")


def send_photo(page, photo: Path) -> tuple[float, float]:
    """Seconds from Enter to the reply's text in the page (the server's answer: queue, embed,
    search, the message rendered), and from there to every picture of its gallery decoded."""
    page.set_input_files('#message input[data-testid="file-upload"]', str(photo))
    page.wait_for_selector("#message img")
    page.click("#message textarea")
    shown = page.evaluate(REPLIES)
    started = time.perf_counter()
    page.keyboard.press("Enter")
    page.wait_for_function(f"({REPLIES})() > {shown}", polling="raf")
    answered = time.perf_counter()
    page.wait_for_function(GALLERY_READY, arg=shown, polling="raf")
    done = time.perf_counter()
    page.wait_for_function("!document.querySelector('#message textarea').disabled")
    return answered - started, done - answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--runtimes", default="eager,onnx-int8",
                        help="one server each; their messages alternate, so load hits all alike")
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG), help="query photos come from its images/")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    queries = photos(Path(args.catalog), args.messages + 1, args.seed)
    servers = {}
    rows = []
    try:
        for runtime in runtimes:
            port = free_port()
            servers[runtime] = (port, start_server(args, port, runtime))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for model in models:
                pages = {}
                for runtime, (port, _) in servers.items():
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.set_default_timeout(120_000)
                    page.goto(f"http://127.0.0.1:{port}/")
                    page.wait_for_selector("#message textarea")
                    ask_for_model(page, model)
                    send_photo(page, queries[0])  # warm-up, not counted
                    pages[runtime] = page
                timings = {runtime: [] for runtime in runtimes}
                for photo in queries[1:]:  # pair by pair: the same photo to each server in turn
                    for runtime, page in pages.items():
                        timings[runtime].append(send_photo(page, photo))
                reference = None
                for runtime in runtimes:
                    total = [(a + b) * 1000 for a, b in timings[runtime]]
                    answer = [a * 1000 for a, _ in timings[runtime]]
                    pictures = [b * 1000 for _, b in timings[runtime]]
                    reference = reference or pct(total, 50)
                    rows.append({"model": model, "runtime": runtime, "messages": len(total),
                                 "p50 ms": f"{pct(total, 50):.0f}", "p95 ms": f"{pct(total, 95):.0f}",
                                 "answer p50": f"{pct(answer, 50):.0f}", "pictures p50": f"{pct(pictures, 50):.0f}",
                                 f"vs {runtimes[0]}": f"{reference / pct(total, 50):.2f}x"})
                for page in pages.values():
                    page.close()
            browser.close()
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(timeout=30)
    print(f"Enter -> gallery shown, headless Chromium, {os.cpu_count()} CPUs, index {args.db}, weights {args.weights}")
    print("answer: Enter -> the reply's text in the page; pictures: from there -> every picture decoded")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
