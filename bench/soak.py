"""Soak: one `app.py shop` on loopback over a generated catalog, N clients for D seconds, and an
`app.py index --rebuild` of the same --db halfway through.

    python -m bench.soak [--clients 20] [--seconds 600] [--products 120] [--keep DIR]

Each client loops over a mix: searches (POST /api/recommend with a small photo), pixel-heavy
uploads (a 6000x6000 PNG to /api/recommend), /api/health, and single-file uploads to the
chat's Gradio route. It prints the answers by status per kind, the 5xx other than 503 (a
serving process must never answer those, whatever the store is doing), the shop's resident
memory after one request of each kind, at its peak and after the load, the upload folder's size, and whether the index
left by the rebuild equals a clean build of the same catalog (same ids, vectors within 1e-5).

Loopback only; clients, seconds and every request's time are bounded.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

from bench.common import ROOT, free_port

MODEL = "resnet18"
FLAGS = ["--models", MODEL, "--weights", "random", "--runtime", "eager"]
MAX_CLIENTS, MAX_SECONDS = 64, 3600
REQUEST_TIMEOUT_S = 120.0
SETTLE_S = 10.0  # idle after the load before the end's memory is read, as a shop between bursts
# The mix each client draws from: (kind, weight).
MIX = (("search", 6), ("pixels", 1), ("health", 2), ("upload", 1))
KINDS = [("Women", "Footwear", "Shoes", "Heels", "Black", (20, 20, 20)),
         ("Men", "Apparel", "Topwear", "Shirts", "Navy Blue", (20, 30, 110)),
         ("Women", "Apparel", "Topwear", "Tops", "Red", (200, 30, 30)),
         ("Women", "Accessories", "Bags", "Handbags", "Green", (30, 150, 60)),
         ("Unisex", "Accessories", "Watches", "Watches", "White", (235, 235, 235)),
         ("Men", "Footwear", "Shoes", "Casual Shoes", "Brown", (120, 70, 20))]


# ---- the catalog and the photos ----------------------------------------------------------

def drawn(seed: int, rgb: tuple, size=(120, 160)) -> Image.Image:
    rnd = random.Random(seed)
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w, h = size
    box = (rnd.randint(5, w // 4), rnd.randint(5, h // 4), rnd.randint(3 * w // 4, w - 5), rnd.randint(3 * h // 4, h - 5))
    (draw.ellipse if seed % 2 else draw.rectangle)(box, fill=tuple(min(255, max(0, c + rnd.randint(-20, 20))) for c in rgb))
    return image


def make_catalog(folder: Path, products: int) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"]
    for i in range(products):
        pid = 10_000 + i
        gender, master, sub, article, colour, rgb = KINDS[i % len(KINDS)]
        lines.append(f"{pid},{gender},{master},{sub},{article},{colour},Summer,2012,Casual,Soak {colour} {article} {i}\n")
        drawn(pid, rgb).save(folder / "images" / f"{pid}.jpg", quality=90)
    (folder / "styles.csv").write_text("".join(lines))
    return folder


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def pixel_heavy_png() -> bytes:
    """36 MP that compress to little: what a client sends to make a server decode a lot."""
    image = Image.new("RGB", (6000, 6000), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((1500, 1000, 4500, 5000), fill=(200, 30, 30))
    return encoded(image, "PNG")


# ---- the processes ------------------------------------------------------------------------

def app_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "app.py"), *args]


def index(catalog: Path, db: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(app_command("index", "--catalog", str(catalog), "--db", str(db), *FLAGS, "--quiet", *extra),
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)


def start_shop(db: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    command = app_command("shop", "--catalog", "", "--db", str(db), *FLAGS, "--model", MODEL,
                          "--host", "127.0.0.1", "--port", str(port), "--quiet")
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the shop exited: {log.read_text()[-2000:]}")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
            if health.status_code == 200 and health.json().get("assistant"):
                return process
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the shop did not start in 300 s")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


# ---- the load -----------------------------------------------------------------------------

@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)      # (kind, status or error name) -> count
    server_errors: list[str] = field(default_factory=list)  # 5xx other than 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome, detail: str = "") -> None:
        with self.lock:
            self.statuses[(kind, outcome)] += 1
            if isinstance(outcome, int) and outcome >= 500 and outcome != 503 and len(self.server_errors) < 20:
                self.server_errors.append(f"{kind} {outcome} {detail[:200]}")


def request(client: httpx.Client, kind: str, photos: list[bytes], heavy: bytes, rnd: random.Random) -> httpx.Response:
    if kind == "search":
        return client.post("/api/recommend", files={"image": ("photo.jpg", rnd.choice(photos), "image/jpeg")},
                           data={"items": "false", "k": "5"})
    if kind == "pixels":
        return client.post("/api/recommend", files={"image": ("big.png", heavy, "image/png")}, data={"items": "false"})
    if kind == "upload":
        return client.post("/assistant/gradio_api/upload",
                           files={"files": ("photo.jpg", rnd.choice(photos), "image/jpeg")})
    return client.get("/api/health")


def client_loop(base: str, index_: int, stop_at: float, photos: list[bytes], heavy: bytes, tally: Tally) -> None:
    rnd = random.Random(index_)
    kinds, weights = zip(*MIX)
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        while time.monotonic() < stop_at:
            kind = rnd.choices(kinds, weights)[0]
            try:
                answer = request(client, kind, photos, heavy, rnd)
                tally.add(kind, answer.status_code, answer.text)
            except httpx.HTTPError as exc:
                tally.add(kind, type(exc).__name__)


def warm_up(base: str, photos: list[bytes], heavy: bytes) -> None:
    """Each kind of request once, so that the start's memory holds what serving needs (models,
    routes, the first decode) and the comparison with the end measures what the load left behind."""
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        for kind, _ in MIX:
            request(client, kind, photos, heavy, random.Random(0))


def rebuild_halfway(catalog: Path, db: Path, at: float, outcome: dict) -> None:
    time.sleep(max(0.0, at - time.monotonic()))
    started = time.monotonic()
    done = index(catalog, db, "--rebuild")
    outcome.update(rc=done.returncode, seconds=time.monotonic() - started,
                   said=(done.stderr.strip().splitlines() or [""])[-1][:300])


def watch_memory(pid: int, stop: threading.Event, samples: list[float]) -> None:
    while not stop.wait(1.0):
        samples.append(rss_mb(pid))


# ---- the index against a clean build -------------------------------------------------------

def stored(db: Path) -> dict[str, np.ndarray]:
    from vectorstore import ProductCollection, StoreSettings, make_client
    collection = ProductCollection.open(make_client(StoreSettings(path=db)), MODEL)
    out = {}
    for page in collection._pages(["embeddings"]):
        out.update(zip(page["ids"], np.asarray(page["embeddings"], dtype=np.float32)))
    return out


def same_index(db: Path, clean: Path) -> str:
    after, fresh = stored(db), stored(clean)
    if set(after) != set(fresh):
        return f"NO: ids differ ({len(set(after) - set(fresh))} extra, {len(set(fresh) - set(after))} missing)"
    worst = max(float(np.abs(after[i] - fresh[i]).max()) for i in fresh) if fresh else 0.0
    verdict = "yes" if worst <= 1e-5 else "NO"
    return f"{verdict}: {len(fresh)} ids, largest vector difference {worst:.2e}"


# ---- the run ------------------------------------------------------------------------------

def run(args, work: Path) -> None:
    catalog = make_catalog(work / "catalog", args.products)
    db, clean, uploads = work / "db", work / "clean", work / "gradio-uploads"
    first = index(catalog, db)
    if first.returncode != 0:
        raise SystemExit(f"the first index failed: {first.stderr[-2000:]}")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(uploads)}
    shop = start_shop(db, port, env, work / "shop.log")
    photos = [encoded(drawn(50_000 + i, KINDS[i % len(KINDS)][5]), "JPEG") for i in range(12)]
    heavy = pixel_heavy_png()
    tally, rebuilt, samples, stop = Tally(), {}, [], threading.Event()
    try:
        warm_up(f"http://127.0.0.1:{port}", photos, heavy)
        start_rss = rss_mb(shop.pid)
        samples.append(start_rss)
        watcher = threading.Thread(target=watch_memory, args=(shop.pid, stop, samples), daemon=True)
        watcher.start()
        began = time.monotonic()
        stop_at = began + args.seconds
        rebuilder = threading.Thread(target=rebuild_halfway, args=(catalog, db, began + args.seconds / 2, rebuilt))
        rebuilder.start()
        clients = [threading.Thread(target=client_loop, args=(f"http://127.0.0.1:{port}", i, stop_at, photos, heavy, tally))
                   for i in range(args.clients)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(args.seconds + REQUEST_TIMEOUT_S + 30)
        rebuilder.join(1800)
        time.sleep(SETTLE_S)
        end_rss = rss_mb(shop.pid)
        stop.set()
        watcher.join(5)
        elapsed = time.monotonic() - began
        alive = shop.poll() is None
    finally:
        shop.terminate()
        try:
            shop.wait(30)
        except subprocess.TimeoutExpired:
            shop.kill()
    clean_build = index(catalog, clean)
    report(args, tally, rebuilt, start_rss, max(samples), end_rss, elapsed, alive, folder_bytes(uploads),
           same_index(db, clean) if clean_build.returncode == 0 else f"the clean build failed: {clean_build.stderr[-300:]}")


def report(args, tally: Tally, rebuilt: dict, start: float, peak: float, end: float, elapsed: float, alive: bool,
           upload_bytes: int, index_verdict: str) -> None:
    print(f"soak: {args.clients} clients for {args.seconds:.0f} s ({elapsed:.0f} s with the last answers), "
          f"{args.products} products, model {MODEL} (random weights, eager)")
    total = sum(tally.statuses.values())
    print(f"answers: {total}")
    for kind, _ in MIX:
        outcomes = {o: n for (k, o), n in sorted(tally.statuses.items(), key=lambda kv: str(kv[0])) if k == kind}
        print(f"  {kind:7} " + ", ".join(f"{o}: {n}" for o, n in outcomes.items()))
    by_status = Counter()
    for (_, outcome), n in tally.statuses.items():
        by_status[outcome] += n
    print("by status: " + ", ".join(f"{o}: {n}" for o, n in sorted(by_status.items(), key=lambda kv: str(kv[0]))))
    print(f"5xx other than 503: {len(tally.server_errors) if len(tally.server_errors) < 20 else '20+'}")
    for line in tally.server_errors[:5]:
        print(f"  {line}")
    print(f"index --rebuild halfway: rc {rebuilt.get('rc')}, {rebuilt.get('seconds', float('nan')):.0f} s"
          + (f" ({rebuilt['said']})" if rebuilt.get("said") else ""))
    print(f"shop RSS MB: start {start:.0f}, peak {peak:.0f}, end {end:.0f} (end/start {end / start:.2f}); "
          f"{'still serving' if alive else 'EXITED'}")
    print(f"upload folder: {upload_bytes / 1024:.0f} KB")
    print(f"index after the soak equals a clean build: {index_verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--products", type=int, default=120)
    parser.add_argument("--keep", help="a folder to keep the catalog, stores and the shop's log in")
    args = parser.parse_args()
    if not (1 <= args.clients <= MAX_CLIENTS and 1 <= args.seconds <= MAX_SECONDS and 6 <= args.products <= 5000):
        raise SystemExit(f"--clients 1..{MAX_CLIENTS}, --seconds 1..{MAX_SECONDS}, --products 6..5000")
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
        run(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as folder:
            run(args, Path(folder))


if __name__ == "__main__":
    main()
