"""Shared fixtures: a small catalog made at run time (PIL drawings, never the shared data),
indexed with seeded random weights into a real embedded Chroma."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"
# (gender, master, sub, article, colour name, rgb, shape)
KINDS = [
    ("Women", "Footwear", "Shoes", "Heels", "Black", (20, 20, 20), "triangle"),
    ("Men", "Footwear", "Shoes", "Casual Shoes", "Brown", (120, 70, 20), "ellipse"),
    ("Men", "Apparel", "Topwear", "Shirts", "Navy Blue", (20, 30, 110), "rectangle"),
    ("Women", "Apparel", "Topwear", "Tops", "Red", (200, 30, 30), "rectangle"),
    ("Women", "Accessories", "Bags", "Handbags", "Green", (30, 150, 60), "ellipse"),
    ("Unisex", "Accessories", "Watches", "Watches", "White", (235, 235, 235), "circle"),
]


def draw_product(seed: int, rgb, shape: str, size=(60, 80)) -> Image.Image:
    """A product-like shot: one coloured shape on a white studio background, varied by seed."""
    rnd = random.Random(seed)
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w, h = size
    box = (rnd.randint(2, w // 4), rnd.randint(2, h // 4), rnd.randint(3 * w // 4, w - 2), rnd.randint(3 * h // 4, h - 2))
    colour = tuple(max(0, min(255, c + rnd.randint(-25, 25))) for c in rgb)
    if shape == "triangle":
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    elif shape in ("ellipse", "circle"):
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    for _ in range(rnd.randint(1, 4)):  # some texture so products differ
        x, y = rnd.randint(0, w - 1), rnd.randint(0, h - 1)
        draw.line((x, y, rnd.randint(0, w - 1), rnd.randint(0, h - 1)), fill=tuple(rnd.randint(0, 255) for _ in range(3)), width=2)
    return image


def make_catalog(folder: Path, per_kind: int = 4, extra_rows: str = "") -> Path:
    """Write styles.csv (with the real file's quirks) and images/<id>.jpg under `folder`."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    pid = 1000
    for gender, master, sub, article, colour, rgb, shape in KINDS:
        for i in range(per_kind):
            pid += 1
            name = f"Brand{i} {gender} {colour} {article}"
            if i == 0:
                name = f"Brand{i} {gender} {colour}, Grey and White {article}"  # an unquoted comma
            year = "" if i == 1 else str(2010 + i)
            lines.append(f"{pid},{gender},{master},{sub},{article},{colour},Summer,{year},Casual,{name}\n")
            draw_product(pid, rgb, shape).save(folder / "images" / f"{pid}.jpg", quality=90)
    lines.append(extra_rows)
    (folder / "styles.csv").write_text("".join(lines), encoding="utf-8")
    return folder


# Whole modules by what they start; single slow tests carry @pytest.mark.slow themselves.
MODULE_MARKS = {
    "test_ui_browser": "browser", "test_shop_browser": "browser", "test_ray_indexing": "ray",
    "test_server_mode": "server", "test_finetune": "slow", "test_evaluation": "slow", "test_lite": "slow",
    "test_study": "slow", "test_runtime": "slow", "test_load_smoke": "slow", "test_variants": "slow",
    "test_self_tune": "slow",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        mark = MODULE_MARKS.get(item.module.__name__.rsplit(".", 1)[-1])
        if mark:
            item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="session")
def embedders():
    from embedding import load_embedder
    return {name: load_embedder(name, "random") for name in ("resnet18", "resnet50")}


@pytest.fixture(scope="session")
def indexed_db(tmp_path_factory, catalog_dir, embedders) -> Path:
    """An embedded Chroma folder holding the session catalog for resnet18 and resnet50."""
    from catalog import read_catalog
    from indexing import index_catalog
    from vectorstore import StoreSettings, make_client
    db = tmp_path_factory.mktemp("chroma")
    client = make_client(StoreSettings(path=db))
    index_catalog(read_catalog(catalog_dir), client, list(embedders.values()), batch_size=8,
                  show_progress_bar=False)
    del client
    return db


@pytest.fixture(scope="session")
def searcher(indexed_db, embedders):
    """A Searcher over `indexed_db` reusing the session's embedders."""
    from search import Searcher
    from vectorstore import StoreSettings, make_client
    client = make_client(StoreSettings(path=indexed_db))
    return Searcher(client, embedders=embedders)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMA = Path(sys.executable).with_name("chroma")


def wait_until(condition, timeout: float = 120.0, what: str = "the condition", every: float = 0.1):
    """Poll `condition` until it returns something true (returned), failing after `timeout`
    seconds: tests wait for the state they assert, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)


def _answers(url: str) -> bool:
    import httpx
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_chroma(path: Path, port: int) -> subprocess.Popen:
    """A real `chroma run` server on 127.0.0.1:port, answering when this returns."""
    process = subprocess.Popen([str(CHROMA), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/api/v2/heartbeat"), 60, "chroma run to answer")
    except AssertionError:
        process.kill()
        raise
    return process


@pytest.fixture
def chroma_server(tmp_path):
    """A real `chroma run` for one test; yields the StoreSettings that reach it."""
    from vectorstore import StoreSettings
    if not CHROMA.exists():
        pytest.skip("the chroma command is not installed beside this python")
    port = free_port()
    process = start_chroma(tmp_path / "server-data", port)
    yield StoreSettings(host="127.0.0.1", port=port)
    process.terminate()
    process.wait(10)


# -- accessibility: axe-core in the browser tests ------------------------------------------
AXE_SERIOUS = """() => axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations
    .filter(v => ["serious", "critical"].includes(v.impact))
    .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))})))"""


def axe_serious(page) -> list:
    """axe-core's serious and critical violations on the page; the script is the one bundled
    in the installed axe-playwright-python package (nothing is downloaded)."""
    import axe_playwright_python
    script = Path(axe_playwright_python.__file__).with_name("axe.min.js")
    page.add_script_tag(path=str(script))
    return page.evaluate(AXE_SERIOUS)


@contextmanager
def running_shop(app, wait_s: float = 120):
    """A FastAPI shop app served by uvicorn on a free loopback port, from a thread; yields its
    base URL once /api/health says the assistant is up."""
    import threading

    import httpx
    import uvicorn
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    def started() -> bool:
        try:
            return bool(httpx.get(f"{base}/api/health", timeout=5).json()["assistant"])
        except (httpx.TransportError, ValueError, KeyError):
            return False
    try:
        wait_until(started, wait_s, "the shop to start")
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
