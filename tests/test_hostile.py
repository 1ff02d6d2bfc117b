"""Issue 7 across the surfaces: hostile uploads through the chat and the HTTP API, fuzzed API
uploads, odd product ids end to end, and a Chroma server restarted under a running assistant."""
from __future__ import annotations

import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from assistant.api import ShopSettings, build_app
from assistant.chat import Assistant
from assistant.settings import AssistantSettings
from catalog import read_catalog
from tests.conftest import ROOT, draw_product, free_port, make_catalog, start_chroma
from tests.hostile_files import hostile_files
from vectorstore import Searcher, StoreSettings, index_catalog, make_client

FILES = hostile_files()


@pytest.fixture(scope="module")
def api(searcher, catalog_dir):
    settings = ShopSettings(models=("resnet18",), model="resnet18", k=5, images_dir=catalog_dir / "images")
    return TestClient(build_app(searcher, settings))


@pytest.fixture(scope="module")
def chat(searcher):
    return Assistant(searcher, AssistantSettings(models=("resnet18",), default_model="resnet18"))


@pytest.mark.parametrize("name", sorted(FILES))
def test_hostile_upload_through_the_api(api, name):
    data, expected = FILES[name]
    response = api.post("/api/recommend", files={"image": (name, data, "application/octet-stream")})
    if expected == "results":
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 5
    else:
        assert 400 <= response.status_code < 500
        assert response.json()["detail"]
    assert api.get("/api/health").status_code == 200


@pytest.mark.parametrize("name", sorted(FILES))
def test_hostile_upload_through_the_chat(chat, tmp_path, name):
    data, expected = FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    reply, state = chat.handle_turn(chat.new_state(), "", [str(path)])
    if expected == "results":
        assert reply.kind == "results" and len(reply.results) == 5, reply
    else:
        assert reply.kind == "error" and reply.headline, reply
        assert "Traceback" not in reply.markdown()
    # the conversation goes on
    follow, _ = chat.handle_turn(state, "show 3")
    assert follow.kind in ("results", "ask_photo")


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048), st.sampled_from(["a.jpg", "b.png", "c.svg", "d", "../../etc/passwd"]))
def test_fuzzed_api_uploads_get_an_answer(api, data, name):
    response = api.post("/api/recommend", files={"image": (name, data, "image/jpeg")})
    assert response.status_code in (200, 400, 413, 422)
    body = response.json()
    assert "results" in body or body.get("detail")


ODD_IDS = ["00123", "a b", "é✓-1"]


def test_odd_ids_round_trip(tmp_path, embedders):
    rows = "".join(f"{pid},Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Odd {i}\n" for i, pid in enumerate(ODD_IDS))
    folder = make_catalog(tmp_path / "cat", per_kind=1, extra_rows=rows)
    for i, pid in enumerate(ODD_IDS):
        draw_product(5000 + i, (200, 20 * i, 30), "rectangle").save(folder / "images" / f"{pid}.jpg")
    db = tmp_path / "db"
    client = make_client(StoreSettings(path=db))
    index_catalog(read_catalog(folder), client, [embedders["resnet18"]], show_progress_bar=False)
    searcher = Searcher(client, weights="random", embedder_factory=lambda name, weights, device="cpu": embedders[name])
    api = TestClient(build_app(searcher, ShopSettings(models=("resnet18",), model="resnet18", images_dir=folder / "images")))
    for pid in ODD_IDS:
        quoted = urllib.parse.quote(pid, safe="")
        with open(folder / "images" / f"{pid}.jpg", "rb") as handle:
            found = api.post("/api/recommend", files={"image": ("p.jpg", handle.read(), "image/jpeg")}).json()
        assert found["results"][0]["id"] == pid
        similar = api.get(f"/api/products/{quoted}/similar").json()
        assert pid not in [r["id"] for r in similar["results"]] and len(similar["results"]) == 5
        image = api.get(f"/images/{quoted}")
        assert image.status_code == 200 and image.content == (folder / "images" / f"{pid}.jpg").read_bytes()
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "search", "--db", str(db), "--weights", "random",
                           "--model", "resnet18", "--json", str(folder / "images" / "00123.jpg")],
                          capture_output=True, text=True, timeout=300)
    assert '"id": "00123"' in done.stdout


@pytest.mark.skipif(not Path(sys.executable).with_name("chroma").exists(), reason="no chroma command")
def test_assistant_answers_again_once_the_chroma_server_is_back(tmp_path, catalog_dir, embedders):
    port = free_port()
    server = start_chroma(tmp_path / "srv", port)
    try:
        client = make_client(StoreSettings(host="127.0.0.1", port=port))
        index_catalog(read_catalog(catalog_dir), client, [embedders["resnet18"]], show_progress_bar=False)
        searcher = Searcher(client, weights="random", embedder_factory=lambda name, weights, device="cpu": embedders[name])
        chat = Assistant(searcher, AssistantSettings(models=("resnet18",), default_model="resnet18"))
        photo = catalog_dir / "images" / "1001.jpg"
        reply, state = chat.handle_turn(chat.new_state(), "", [str(photo)])
        assert reply.kind == "results"
        server.terminate()
        server.wait(20)
        down, state = chat.handle_turn(state, "show 3")
        assert down.kind == "error" and "not reachable" in down.headline
        server = start_chroma(tmp_path / "srv", port)
        back, _ = chat.handle_turn(state, "show 3")
        assert back.kind == "results" and len(back.results) == 3, back
        again, _ = chat.handle_turn(chat.new_state(), "", [str(photo)])
        assert again.kind == "results" and again.results[0].id == "1001"
    finally:
        server.terminate()
        server.wait(20)


# -- catalogs that would wipe or strand an index (issue 13) -----------------------------------
def _indexed(tmp_path, embedders, per_kind=2):
    folder = make_catalog(tmp_path / "cat", per_kind=per_kind)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    index_catalog(read_catalog(folder), client, [embedders["resnet18"]], show_progress_bar=False)
    return folder, client


def _stored(client) -> dict:
    from vectorstore import ProductCollection
    return ProductCollection.open(client, "resnet18").stored_records()


@pytest.mark.parametrize("styles", [HEADER_ONLY := "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n",
                                    "keep"], ids=["empty", "three-quarters-gone"])
def test_an_index_run_that_would_remove_most_products_is_refused_unless_allowed(tmp_path, embedders, styles):
    from vectorstore import IndexRefused
    folder, client = _indexed(tmp_path, embedders)
    before = _stored(client)
    path = folder / "styles.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(styles if styles != "keep" else "".join(lines[:4]))
    catalog = read_catalog(folder)
    with pytest.raises(IndexRefused, match="--allow-removal") as refused:
        index_catalog(catalog, client, [embedders["resnet18"]], show_progress_bar=False)
    assert refused.value.stored == len(before) and refused.value.removing == len(before) - len(catalog.products)
    assert _stored(client) == before  # nothing changed
    report = index_catalog(catalog, client, [embedders["resnet18"]], show_progress_bar=False, allow_removal=True)
    assert report.removed == {"resnet18": len(before) - len(catalog.products)}
    assert set(_stored(client)) == {p.id for p in catalog.products}


def test_removing_a_few_products_needs_no_confirmation(tmp_path, embedders):
    folder, client = _indexed(tmp_path, embedders)
    path = folder / "styles.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))
    report = index_catalog(read_catalog(folder), client, [embedders["resnet18"]], show_progress_bar=False)
    assert report.removed == {"resnet18": 2}


def test_the_command_line_refuses_a_cr_only_mistake_and_reads_cr_only_files(tmp_path, embedders):
    folder, client = _indexed(tmp_path, embedders, per_kind=1)
    del client
    path = folder / "styles.csv"
    good = path.read_text()
    path.write_text(HEADER_ONLY + "\n")
    command = [sys.executable, str(ROOT / "app.py"), "index", "--catalog", str(folder), "--db", str(tmp_path / "db"),
               "--weights", "random", "--models", "resnet18", "--quiet"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "reads as 0 products" in refused.stderr and "--allow-removal" in refused.stderr
    path.write_bytes(good.replace("\n", "\r").encode())  # old Mac / Excel line ends
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resnet18: indexed 0, unchanged 6, removed 0" in done.stdout and "CR line ends" in done.stderr


def test_a_moved_catalog_updates_its_image_paths_without_embedding_again(tmp_path, embedders):
    import shutil
    folder, client = _indexed(tmp_path, embedders)
    moved = tmp_path / "elsewhere" / "catalog"
    shutil.move(str(folder), str(moved))
    report = index_catalog(read_catalog(moved), client, [embedders["resnet18"]], show_progress_bar=False)
    assert report.indexed == {"resnet18": 0} and report.relocated == {"resnet18": 12}
    assert "image paths updated 12" in report.summary()
    assert all(Path(image).parent == (moved / "images").resolve() for _, image in _stored(client).values())
    searcher = Searcher(client, weights="random", embedder_factory=lambda name, weights, device="cpu": embedders[name])
    shop = TestClient(build_app(searcher, ShopSettings(models=("resnet18",), model="resnet18", images_dir=moved / "images")))
    assert shop.get("/images/1001").content == (moved / "images" / "1001.jpg").read_bytes()


def test_an_oversized_catalog_image_is_skipped_unread(tmp_path, embedders):
    folder, client = _indexed(tmp_path, embedders)
    big = folder / "images" / "1001.jpg"
    with open(big, "r+b") as handle:  # sparse: 1 GB on paper, nothing on disk
        handle.truncate(1 << 30)
    report = index_catalog(read_catalog(folder), client, [embedders["resnet18"]], show_progress_bar=False)
    reasons = {s.id: s.reason for s in report.skipped}
    assert reasons["1001"].startswith("unreadable image: 1001.jpg is 1073.7 MB; the limit is 10 MB")
    assert "1001" not in _stored(client)


def test_file_digest_reads_in_chunks(tmp_path):
    import tracemalloc
    from vectorstore.indexing import file_digest
    import hashlib
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as handle:
        handle.truncate(64 << 20)
    expected = hashlib.sha1(bytes(64 << 20)).hexdigest()
    tracemalloc.start()
    try:
        digest = file_digest(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest == expected
    assert peak < 8 << 20  # a whole read would hold 64 MB
