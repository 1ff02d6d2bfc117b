"""The hostile suite, by class: what operators and clients do to a serving shop and its store.

Real parts only: embedded Chroma folders, `app.py index` in another process, the shop's FastAPI
app, the chat mounted through Gradio. States are polled for with a deadline, never slept for.
"""
from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import ROOT, make_catalog, running_shop

PY = sys.executable
CLI = [PY, str(ROOT / "app.py")]
MODEL = "resnet18"
STORE_FLAGS = ["--models", MODEL, "--weights", "random", "--runtime", "eager"]


def wait_for(check, what: str, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def index_cli(catalog: Path, db: Path, *extra: str, wait: bool = True):
    command = [*CLI, "index", "--catalog", str(catalog), "--db", str(db), *STORE_FLAGS, "--batch-size", "4",
               "--quiet", *extra]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def big_catalog(tmp_path_factory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("reliability-catalog"), per_kind=10)


def shop_over(db: Path, embedders, status=None, mount_chat=None):
    from operations import SearchPolicy
    from search import Searcher
    from shop import ShopSettings, build_app
    from vectorstore import StoreSettings, make_client
    searcher = Searcher(make_client(StoreSettings(path=db)), embedders={MODEL: embedders[MODEL]})
    policy = SearchPolicy(models=(MODEL,), default_model=MODEL)
    return build_app(searcher, ShopSettings(policy=policy), status=status, mount_chat=mount_chat), searcher


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


# -- a rebuild under a serving process -------------------------------------------------------------
@pytest.mark.slow
def test_a_shop_keeps_serving_through_a_rebuild_by_another_process(tmp_path, big_catalog, embedders):
    db = tmp_path / "db"
    assert index_cli(big_catalog, db).returncode == 0
    app, _ = shop_over(db, embedders)
    photo = (big_catalog / "images").iterdir().__next__()
    product = photo.stem
    statuses: list[int] = []
    with TestClient(app) as client:
        assert client.get("/api/health").json()["models"][MODEL] == 60
        rebuild = index_cli(big_catalog, db, "--rebuild", wait=False)
        while rebuild.poll() is None:
            statuses.append(client.get("/api/health").status_code)
            statuses.append(client.post("/api/recommend", files={"image": (photo.name, photo.read_bytes())},
                                        data={"items": "false"}).status_code)
            statuses.append(client.get(f"/api/products/{product}/similar").status_code)
        assert rebuild.returncode == 0, rebuild.stderr
        # 503 while the collection is gone, never a 500; then whole again, without a restart.
        assert set(statuses) <= {200, 404, 503}, statuses
        assert 500 not in statuses

        def whole():
            health = client.get("/api/health")
            assert health.status_code == 200
            return health.json()["models"][MODEL] == 60 and health.json()["status"] == "ok"
        wait_for(whole, "the shop to see the rebuilt index")
        # The vectors written after the shop reopened the folder are searched: the photo of a
        # product finds that product first.
        def finds_itself():
            answer = client.post("/api/recommend", files={"image": (photo.name, photo.read_bytes())},
                                 data={"items": "false"})
            results = answer.json().get("results") if answer.status_code == 200 else None
            return bool(results) and results[0]["id"] == product
        wait_for(finds_itself, "the rebuilt vectors to be searched")


@pytest.mark.slow
def test_a_removed_collection_answers_503_then_comes_back(tmp_path, catalog_dir, embedders):
    from vectorstore import ProductCollection, StoreSettings, make_client
    db = tmp_path / "db"
    assert index_cli(catalog_dir, db).returncode == 0
    app, searcher = shop_over(db, embedders)
    with TestClient(app) as client:
        assert client.get("/api/health").json()["status"] == "ok"
        ProductCollection.drop(make_client(StoreSettings(path=db)), MODEL)
        answer = wait_for(lambda: (r := client.get("/api/health")).json()["status"] == "degraded" and r,
                          "health to see the removal")
        assert answer.status_code == 200
        products = client.get("/api/products")
        assert products.status_code == 503 and "no index" in products.json()["detail"]
        assert index_cli(catalog_dir, db).returncode == 0
        wait_for(lambda: client.get("/api/health").json()["status"] == "ok", "the recreated index")
        assert client.get("/api/products").status_code == 200


# -- one indexer at a time ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_indexer_is_refused_with_the_holder_named(tmp_path, catalog_dir):
    from vectorstore.guard import IndexLock
    db = tmp_path / "db"
    db.mkdir()
    with IndexLock(db):
        second = index_cli(catalog_dir, db)
    assert second.returncode == 2
    assert "another indexer is writing" in second.stderr and f"process {os.getpid()}" in second.stderr
    assert "Traceback" not in second.stderr
    assert index_cli(catalog_dir, db).returncode == 0


def test_the_background_indexer_waits_for_an_index_run_and_then_finishes(tmp_path, catalog_dir, embedders):
    from catalog import read_catalog
    from indexing.background import BackgroundIndexer
    from vectorstore import StoreSettings, make_client
    from vectorstore.guard import IndexLock
    db = tmp_path / "db"
    client = make_client(StoreSettings(path=db))
    lock = IndexLock(db).acquire()
    try:
        indexer = BackgroundIndexer(read_catalog(catalog_dir), client, [embedders[MODEL]], log=lambda line: None)
        indexer.start()
        wait_for(lambda: indexer.progress.snapshot()["waiting"], "the indexer to wait for the lock")
        assert "waits while another indexer writes" in indexer.progress.status()
    finally:
        lock.release()
    assert indexer.wait(300)
    assert indexer.progress.finished and indexer.progress.error is None


def test_a_stopped_background_indexer_says_how_to_resume():
    from indexing.background import IndexProgress
    progress = IndexProgress(total=10)
    progress.update(error="DiskFull: the disk is full")
    assert "resume" in progress.status() and "resume" in progress.line()


# -- disk full and read-only folders (a real tmpfs; needs root to mount) ---------------------------
@contextmanager
def small_disk(folder: Path, megabytes: int):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                                            str(folder)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_indexing_whole_and_the_same_command_resumes(tmp_path, catalog_dir):
    with small_disk(tmp_path / "disk", 16) as disk:
        db = disk / "db"
        full = index_cli(catalog_dir, db)
        assert full.returncode == 2
        assert "disk" in full.stderr and "free" in full.stderr and "resume" in full.stderr
        assert "Traceback" not in full.stderr
        remount(disk, "size=64m")
        resumed = index_cli(catalog_dir, db)
        assert resumed.returncode == 0, resumed.stderr
        image = next((catalog_dir / "images").iterdir())
        found = subprocess.run([*CLI, "search", "--db", str(db), *STORE_FLAGS[2:], "--model", MODEL, "--json",
                                str(image)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert found.returncode == 0, found.stderr
        assert f'"id": "{image.stem}"' in found.stdout.splitlines()[0]


@pytest.mark.slow
def test_a_read_only_store_is_said_in_one_sentence(tmp_path, catalog_dir):
    with small_disk(tmp_path / "disk", 64) as disk:
        db = disk / "db"
        assert index_cli(catalog_dir, db).returncode == 0
        remount(disk, "ro")
        image = next((catalog_dir / "images").iterdir())
        found = subprocess.run([*CLI, "search", "--db", str(db), *STORE_FLAGS[2:], "--model", MODEL, str(image)],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert found.returncode == 2 and "read-only" in found.stderr and "Traceback" not in found.stderr
        again = index_cli(catalog_dir, db)
        assert again.returncode == 2 and "read-only" in again.stderr and "Traceback" not in again.stderr


PROBE = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from vectorstore import ProductCollection, StoreError, StoreSettings, make_client
try:
    collection = ProductCollection.open(make_client(StoreSettings(path={db!r})), "probe")
    print(len(collection.search(np.ones(8, dtype=np.float32), k=3)))
except StoreError as exc:
    print("StoreError:", exc)
"""


def test_damaged_hnsw_files_are_named_with_the_way_back(tmp_path):
    db = tmp_path / "db"
    writer = subprocess.run([PY, "-c", f"""
import sys, numpy as np
sys.path.insert(0, {str(ROOT)!r})
from vectorstore import ProductCollection, StoreSettings, make_client
collection = ProductCollection.open(make_client(StoreSettings(path={str(db)!r})), "probe", dim=8, create=True)
vectors = np.random.default_rng(0).normal(size=(1500, 8)).astype(np.float32)
collection.write([str(i) for i in range(1500)], vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                 [{{"name": str(i)}} for i in range(1500)])
"""], capture_output=True, text=True, timeout=300)
    assert writer.returncode == 0, writer.stderr
    probe = PROBE.format(root=str(ROOT), db=str(db))
    assert subprocess.run([PY, "-c", probe], capture_output=True, text=True).stdout.strip() == "3"
    for segment in (p for p in db.iterdir() if p.is_dir()):
        for part in segment.iterdir():
            part.write_bytes(b"")  # what a full disk left: 0-byte files
    damaged = subprocess.run([PY, "-c", probe], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in damaged.stderr, damaged.stderr
    assert "damaged" in damaged.stdout and "--rebuild" in damaged.stdout, damaged.stdout


# -- uploads through Gradio -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mounted_shop(indexed_db, embedders):
    from assistant.mount import mount_assistant
    from assistant.settings import AssistantSettings
    from operations import SearchPolicy
    policy = SearchPolicy(models=(MODEL,), default_model=MODEL)
    _, searcher = shop_over(indexed_db, embedders)
    from shop import ShopSettings, build_app
    app = build_app(searcher, ShopSettings(policy=policy),
                    mount_chat=partial(mount_assistant, searcher=searcher, settings=AssistantSettings(policy=policy)))
    with running_shop(app) as base:
        yield base


def test_gradio_uploads_are_one_bounded_file_at_a_time(mounted_shop):
    upload = f"{mounted_shop}/assistant/gradio_api/upload"
    small = png_bytes(Image.new("RGB", (20, 20), "red"))
    one = httpx.post(upload, files={"files": ("a.png", small)}, timeout=30)
    assert one.status_code == 200
    many = httpx.post(upload, files=[("files", (f"{i}.png", small)) for i in range(5)], timeout=30)
    assert many.status_code == 400 and "one file" in many.json()["detail"]
    huge = httpx.post(upload, files={"files": ("big.png", b"\0" * (11 * 2**20))}, timeout=60)
    assert huge.status_code == 413


def test_an_upload_flood_is_rate_limited_per_client(mounted_shop):
    upload = f"{mounted_shop}/assistant/gradio_api/upload"
    small = png_bytes(Image.new("RGB", (20, 20), "blue"))
    started = time.monotonic()
    statuses = [httpx.post(upload, files={"files": ("f.png", small)}, timeout=30).status_code for _ in range(40)]
    elapsed = time.monotonic() - started
    assert 429 in statuses and 500 not in statuses
    # The bucket holds 30 and refills evenly at 30 a minute: a slow machine earns a few more.
    assert statuses.count(200) <= 30 + math.ceil(elapsed * 30 / 60)


def test_routes_the_chat_does_not_use_are_closed_and_nul_bytes_are_refused(mounted_shop):
    recording = httpx.post(f"{mounted_shop}/assistant/gradio_api/process_recording",
                           files={"files": ("a.wav", b"RIFF")}, timeout=30)
    assert recording.status_code == 404
    proxy = httpx.get(f"{mounted_shop}/assistant/gradio_api/proxy=%00", timeout=30)
    assert proxy.status_code == 400


def test_the_upload_folder_is_swept(tmp_path):
    from assistant.gate import sweep_folder
    for i in range(10):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    assert sweep_folder(tmp_path, max_age_s=3600, max_bytes=5000) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{i}" for i in range(5, 10)]
    assert sweep_folder(tmp_path, max_age_s=1, max_bytes=10**9) == 5


def test_the_sweep_removes_the_empty_upload_folders_it_leaves_but_not_new_ones(tmp_path):
    from assistant.gate import EMPTY_FOLDER_GRACE_S, sweep_folder
    old_time = time.time() - EMPTY_FOLDER_GRACE_S - 100
    for name in ("a1", "b2"):
        upload = tmp_path / name / "photo.jpg"
        upload.parent.mkdir()
        upload.write_bytes(b"x" * 100)
        os.utime(upload, (old_time, old_time))
        os.utime(upload.parent, (old_time, old_time))
    fresh = tmp_path / "c3"
    fresh.mkdir()                       # Gradio is about to write into this one
    assert sweep_folder(tmp_path, max_age_s=1, max_bytes=10**9) == 2
    # deleting a file touches its folder, so the emptied folders go at the next sweep
    for name in ("a1", "b2"):
        os.utime(tmp_path / name, (old_time, old_time))
    sweep_folder(tmp_path, max_age_s=1, max_bytes=10**9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c3"]


# -- pixel floods --------------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_a_pixel_flood_is_bounded_by_one_gate_and_memory_comes_back(indexed_db, embedders):
    from catalog.images import DECODE_GATE
    app, _ = shop_over(indexed_db, embedders)
    from PIL import ImageDraw
    picture = Image.new("RGB", (6000, 6000), (255, 255, 255))
    ImageDraw.Draw(picture).rectangle((1500, 1000, 4500, 5000), fill=(200, 30, 30))
    bomb = png_bytes(picture)
    assert len(bomb) < 200_000
    with TestClient(app) as client:
        def post():
            return client.post("/api/recommend", files={"image": ("bomb.png", bomb)}, data={"items": "false"})
        assert post().status_code == 200
        before = rss_bytes()
        DECODE_GATE.peak = 0
        with ThreadPoolExecutor(8) as pool:
            statuses = [r.status_code for r in pool.map(lambda _: post(), range(8))]
        after = rss_bytes()
    assert statuses == [200] * 8
    # Never more pixels in flight than the budget: eight 36 MP photos decode one after another.
    assert DECODE_GATE.peak <= DECODE_GATE.budget
    # What the burst took is handed back (one decode's worth of slack).
    assert after - before < 400 * 2**20, (before, after)


# -- an operator's damaged files ------------------------------------------------------------------------
def test_a_damaged_head_only_features_cache_is_computed_again(tmp_path):
    from training import FinetuneSettings, finetune
    catalog = make_catalog(tmp_path / "catalog", per_kind=4)
    def head_only(epochs: int) -> FinetuneSettings:
        return FinetuneSettings(catalog=catalog, model=MODEL, out=tmp_path / "head.pt", epochs=epochs, image_size=64,
                                batch_size=16, device="cpu", weights="random", seed=3, val_fraction=0.25,
                                workers=0, threads=1, progress=False, head_only=True)
    finetune(head_only(1), log=lambda line: None)
    features = head_only(1).features_path
    stored = features.read_bytes()
    features.write_bytes(stored[:len(stored) // 2])   # a copy cut short
    messages: list[str] = []
    resumed = finetune(head_only(2), log=messages.append)   # resumes from the checkpoint, needs the features
    assert resumed.resumed_from == 1 and [h["epoch"] for h in resumed.history] == [0, 1, 2]
    damaged = [m for m in messages if "unreadable" in m]
    assert len(damaged) == 1 and str(features) in damaged[0] and "computing them again" in damaged[0]
    assert not any(m.startswith("frozen features from") for m in messages)
    import torch
    assert len(torch.load(features, weights_only=True)["rows"]) > 0   # stored again, whole
    messages.clear()
    finetune(head_only(3), log=messages.append)
    assert any(m.startswith("frozen features from") for m in messages)


# -- what a client sends and what answers repeat of it ---------------------------------------------------
BIDI = "\u202e\u2066\u200f"


@pytest.fixture(scope="module")
def chat(searcher):
    from assistant.chat import Assistant
    from assistant.events import ChatEvents
    from assistant.settings import AssistantSettings
    from operations import SearchPolicy
    settings = AssistantSettings(policy=SearchPolicy(models=(MODEL,), default_model=MODEL, k=3, max_k=12))
    return ChatEvents(Assistant(searcher, settings), settings)


def test_a_huge_chat_message_is_cut_before_it_is_kept_or_answered(chat):
    from assistant.chat import MAX_MESSAGE_CHARS
    flood = "zqxv " * 200_000   # a megabyte of words nobody knows
    history, _, _, pending = chat.post_user({"text": flood, "files": []}, [])
    assert len(pending["text"]) <= MAX_MESSAGE_CHARS + 1 and pending["text"].endswith("…")
    assert sum(len(m["content"]) for m in history) < 2 * MAX_MESSAGE_CHARS   # the echo, escaped
    reply, _ = chat.assistant.handle_turn(chat.assistant.new_state(), flood)
    assert len(reply.markdown()) < 2 * MAX_MESSAGE_CHARS


def test_every_turn_is_saved_before_the_screen_shows_it(chat):
    # The browser reloads the conversation its key names: a save in an event after the turn's
    # would run after the screen changed, and a reload in between brought back the turn before.
    key = chat.conversations.new_key()
    history, _, _, pending = chat.post_user({"text": "black heels for women", "files": []}, [])
    shown = chat.answer(pending, history, chat.assistant.new_state(), key)
    assert len(shown[0]) > len(history) and chat.conversations.get(key).history == shown[0]
    assert chat.restore(key)[0] == key and chat.restore(key)[1] == shown[0]
    again = chat.on_reapply(shown[0], shown[2], key)   # any other turn, the same way
    assert len(again[0]) > len(shown[0]) and chat.conversations.get(key).history == again[0]
    chat.new_conversation(key)   # "New chat" forgets it before the screen empties
    assert chat.conversations.get(key).history == []
    chat.new_conversation("not a key the server gave")   # a hostile key is ignored, not kept
    assert chat.conversations.get("not a key the server gave") is None


def test_the_chat_api_names_files_never_server_paths(chat, tmp_path):
    from assistant.events import recommend_json
    from tests.conftest import KINDS, draw_product
    photo = tmp_path / "uploads" / "heel.jpg"
    photo.parent.mkdir()
    draw_product(999_001, KINDS[0][5], KINDS[0][6], size=(120, 160)).save(photo)
    out = recommend_json(chat.assistant, str(photo), k=3)
    assert out["query"] == "heel.jpg" and len(out["results"]) == 3
    images = [r["image"] for r in out["results"]] + [r["image"] for item in out["items"] for r in item["results"]]
    assert images and all(image and "/" not in image and image.startswith(r["id"])
                          for image, r in zip(images, out["results"] + [r for i in out["items"] for r in i["results"]]))
    assert str(tmp_path) not in str(out)


def test_echoed_values_are_cut_short(tmp_path):
    from catalog import ImageError, open_image
    from vectorstore import UnknownFilterValue
    from vectorstore.filters import canonical_value
    with pytest.raises(UnknownFilterValue) as unknown:
        canonical_value("gender", "W" * 100_000 + BIDI, {"gender": ["Women", "Men"]})
    assert len(str(unknown.value)) < 200 and "…" in str(unknown.value)
    with pytest.raises(ImageError) as unreadable:
        open_image(tmp_path / ("n" * 240 + ".jpg"))
    assert "cannot read nnn" in str(unreadable.value) and len(str(unreadable.value)) < 160


def test_full_width_words_are_understood():
    from assistant.words import words
    assert words("ｗｏｍｅｎ's ＨＥＥＬＳ, ﬁt") == ["women", "heels", "fit"]


def test_bidi_controls_never_reach_the_chat_or_the_shop_pages(indexed_db, embedders):
    from assistant.chat import as_text, caption
    from search import Result
    named = Result("1001", 0.9, {"name": f"Heel{BIDI}s 99{BIDI}", "articleType": f"Heels{BIDI}", "gender": "Women"})
    for shown in (caption(named), as_text(named.get("name"))):
        assert not set(BIDI) & set(shown) and "Heels 99" in shown
    app, _ = shop_over(indexed_db, embedders)
    with TestClient(app) as client:
        missing = client.get("/products/ab%E2%80%AEcd")
        long_id = "7" * 5000
        long_page, long_api = client.get(f"/products/{long_id}"), client.get(f"/api/products/{long_id}")
        long_similar = client.get(f"/api/products/{long_id}/similar")
        filtered = client.get("/", params={"gender": f"Wo{BIDI}men" + "x" * 5000})
        grid = client.get("/")
    assert missing.status_code == 404 and "abcd" in missing.text and not set(BIDI) & set(missing.text)
    for answer in (long_page, long_api, long_similar):  # an id is echoed, cut short
        assert answer.status_code == 404 and "7" * 60 in answer.text and "7" * 200 not in answer.text
    assert filtered.status_code == 400 and not set(BIDI) & set(filtered.text) and "x" * 200 not in filtered.text
    assert grid.status_code == 200 and "&lt;a" not in grid.text and 'class="card"' in grid.text  # markup intact


def test_a_skipped_catalog_row_is_named_by_its_id(tmp_path):
    from catalog import read_catalog
    rows = ("9998,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual," + "x" * 10_000_000 + "\n"
            '9999,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,"a quote left open\n')
    catalog = read_catalog(make_catalog(tmp_path, per_kind=1, extra_rows=rows))
    skipped = {s.id: s.reason for s in catalog.skipped}
    assert set(skipped) >= {"9998", "9999"} and None not in skipped
    assert "field larger than field limit" in skipped["9998"] and "quote" in skipped["9999"]
