"""Issue 7 across the surfaces: hostile uploads through the chat and the HTTP API, fuzzed API
uploads, odd product ids end to end, and a Chroma server restarted under a running assistant."""
from __future__ import annotations

import subprocess
import sys
import urllib.parse
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from assistant.chat import Assistant
from assistant.mount import mount_assistant
from assistant.settings import AssistantSettings
from catalog import read_catalog
from indexing import index_catalog
from operations import SearchPolicy
from search import Searcher
from shop import ShopSettings, build_app
from tests.conftest import ROOT, draw_product, free_port, make_catalog, running_shop, start_chroma
from tests.hostile_files import hostile_files
from vectorstore import StoreSettings, make_client

RESNET18 = SearchPolicy(models=("resnet18",), default_model="resnet18")

FILES = hostile_files()


@pytest.fixture(scope="module")
def api(searcher, catalog_dir):
    settings = ShopSettings(policy=RESNET18, images_dir=catalog_dir / "images")
    return TestClient(build_app(searcher, settings))


@pytest.fixture(scope="module")
def chat(searcher):
    return Assistant(searcher, AssistantSettings(policy=RESNET18))


@pytest.mark.parametrize("name", sorted(FILES))
def test_hostile_upload_through_the_api(api, name):
    data, expected = FILES[name]
    response = api.post("/api/recommend", files={"image": (name, data, "application/octet-stream")})
    if expected == "results":
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 5
    elif expected == "nothing":
        assert response.status_code == 422 and "can't find a product" in response.json()["detail"], response.text
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
    elif expected == "nothing":
        assert reply.kind == "error" and "can't find a product" in reply.headline, reply
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


@pytest.mark.slow
def test_odd_ids_round_trip(tmp_path, embedders):
    rows = "".join(f"{pid},Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Odd {i}\n" for i, pid in enumerate(ODD_IDS))
    folder = make_catalog(tmp_path / "cat", per_kind=1, extra_rows=rows)
    for i, pid in enumerate(ODD_IDS):
        draw_product(5000 + i, (200, 20 * i, 30), "rectangle").save(folder / "images" / f"{pid}.jpg")
    db = tmp_path / "db"
    client = make_client(StoreSettings(path=db))
    index_catalog(read_catalog(folder), client, [embedders["resnet18"]], show_progress_bar=False)
    searcher = Searcher(client, embedders=embedders)
    api = TestClient(build_app(searcher, ShopSettings(policy=RESNET18, images_dir=folder / "images")))
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
@pytest.mark.server
def test_assistant_answers_again_once_the_chroma_server_is_back(tmp_path, catalog_dir, embedders):
    port = free_port()
    server = start_chroma(tmp_path / "srv", port)
    try:
        client = make_client(StoreSettings(host="127.0.0.1", port=port))
        index_catalog(read_catalog(catalog_dir), client, [embedders["resnet18"]], show_progress_bar=False)
        searcher = Searcher(client, embedders=embedders)
        chat = Assistant(searcher, AssistantSettings(policy=RESNET18))
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
    from indexing import IndexRefused
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


@pytest.mark.slow
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
    searcher = Searcher(client, embedders=embedders)
    shop = TestClient(build_app(searcher, ShopSettings(policy=RESNET18, images_dir=moved / "images")))
    assert shop.get("/images/1001").content == (moved / "images" / "1001.jpg").read_bytes()


@pytest.mark.parametrize("engine", ["chroma", "lancedb"])
def test_labels_edited_in_the_catalog_reach_the_index_without_embedding_again(tmp_path, embedders, engine):
    """A shop renames a product, files it under another kind and colour, and empties its season:
    the chat and the filters must answer with what the catalog now says."""
    from vectorstore import CATEGORY, Filters, ProductCollection
    folder = make_catalog(tmp_path / "cat", per_kind=2)
    client = make_client(StoreSettings(path=tmp_path / "db", engine=engine))
    index = partial(index_catalog, client=client, embedders=[embedders["resnet18"]], show_progress_bar=False)
    index(read_catalog(folder))
    collection = ProductCollection.open(client, "resnet18")
    vector = collection.vector_of("1001")
    path = folder / "styles.csv"
    rows = path.read_text().splitlines(keepends=True)
    rows[1] = "1001,Women,Footwear,Shoes,Flats,Purple,,2011,Casual,Renamed Purple Flats\n"
    path.write_text("".join(rows))
    report = index(read_catalog(folder))
    assert report.indexed == {"resnet18": 0} and report.relabelled == {"resnet18": 1}
    assert "labels updated 1" in report.summary()
    [record] = ProductCollection.open(client, "resnet18").records_of(["1001"])[2]
    assert (record["articleType"], record["baseColour"], record["name"]) == \
        ("Flats", "Purple", "Renamed Purple Flats")
    assert "season" not in record   # emptied in the catalog: gone from the index too
    assert np.allclose(ProductCollection.open(client, "resnet18").vector_of("1001"), vector)
    hits = ProductCollection.open(client, "resnet18").search(vector, k=3, filters=Filters({CATEGORY: ("Flats",)}))
    assert [h.id for h in hits] == ["1001"]
    again = index(read_catalog(folder))
    assert again.indexed == {"resnet18": 0} and again.relabelled == {"resnet18": 0}
    # An index written before labels were digested: its records get theirs once, nothing embedded.
    collection = ProductCollection.open(client, "resnet18")
    ids, _, metas = collection.records_of(sorted(collection.stored_records()))
    collection.relabel({pid: {**meta, "digest": meta["digest"].split(":")[0]} for pid, meta in zip(ids, metas)})
    upgraded = index(read_catalog(folder))
    assert upgraded.indexed == {"resnet18": 0} and upgraded.relabelled == {"resnet18": len(ids)} and len(ids) == 12
    assert index(read_catalog(folder)).relabelled == {"resnet18": 0}


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
    import hashlib
    import tracemalloc

    from catalog.digests import file_digest
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


# -- the shop process served for real: every route that serves a file, every entry point ------
# Ids by class: non-ASCII digits, URL delimiters, escapes, spaces, HTML, leading zeros.
URL_IDS = ["\u00b2", "\u0663", "a?b", "a#b", "50%", "a%41b", "a b", "a:b", "<i>x<i>", "007", "x&y=z", "caf\u00e9"]
MARKUP_NAMES = {"8001": "<img src=x onerror=alert(1)> Top", "8002": "![x](/api/health) Top",
                "8003": "[click](javascript:alert(1)) **bold** Top", "8004": "$$x^2$$ Top"}
MARKUP_TYPE = "<b>Tops</b>"


def _call(base: str, api_name: str, data: list, *, prefix: str = "/assistant") -> tuple[str, object]:
    """Gradio's plain-HTTP API: POST the inputs, then read the event stream's last message."""
    import json

    import httpx
    started = httpx.post(f"{base}{prefix}/gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    if started.status_code != 200:
        return f"http {started.status_code}", started.text
    event_id = started.json()["event_id"]
    stream = httpx.get(f"{base}{prefix}/gradio_api/call/{api_name}/{event_id}", timeout=120).text
    kind, payload = "", None
    for line in stream.splitlines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = json.loads(line.split(":", 1)[1].strip() or "null")
    return kind, payload


def _upload(base: str, name: str, data: bytes, *, prefix: str = "/assistant") -> str:
    import httpx
    answer = httpx.post(f"{base}{prefix}/gradio_api/upload", files={"files": (name, data)}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()[0]


@pytest.fixture(scope="module")
def live_shop(tmp_path_factory, embedders):
    """The whole shop (pages, API, images, the chat mounted) on uvicorn, over a catalog whose
    ids and names are hostile, with non-product files beside its images and a secret outside."""
    root = tmp_path_factory.mktemp("live")
    rows = "".join(f'{pid},Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Odd {i}\n' for i, pid in enumerate(URL_IDS))
    rows += "".join(f'{pid},Women,Apparel,Topwear,{MARKUP_TYPE if pid == "8004" else "Tops"},Red,Summer,2012,Casual,"{name}"\n'
                    for pid, name in MARKUP_NAMES.items())
    folder = make_catalog(root / "catalog", per_kind=1, extra_rows=rows)
    for i, pid in enumerate([*URL_IDS, *MARKUP_NAMES]):
        draw_product(7000 + i, (200, 20 + 10 * i, 30), "rectangle").save(folder / "images" / f"{pid}.jpg")
    (folder / "images" / "evil.html").write_text("<script>alert(1)</script>")
    (folder / "images" / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    secret = root / "secret.png"
    secret.write_text(f"a server-side secret, not an image: {uuid.uuid4()}")  # unique: no earlier run's copy matches
    client = make_client(StoreSettings(path=root / "db"))
    index_catalog(read_catalog(folder), client, [embedders["resnet18"]], show_progress_bar=False)
    searcher = Searcher(client, embedders=embedders)
    chat = AssistantSettings(policy=SearchPolicy(models=("resnet18",), default_model="resnet18", k=5, max_pixels=1_000_000))
    settings = ShopSettings(policy=chat.policy, images_dir=folder / "images")
    app = build_app(searcher, settings, mount_chat=partial(mount_assistant, searcher=searcher, settings=chat))
    with running_shop(app) as base:
        yield {"base": base, "folder": folder, "secret": secret, "searcher": searcher}


def test_the_mounted_chat_serves_no_file_named_by_a_request(live_shop):
    import httpx
    base, secret = live_shop["base"], live_shop["secret"]
    named = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    kind, payload = _call(base, "recommend", [named, "resnet18", 1, "", ""])
    assert kind == "error" or (isinstance(payload, list) and "results" not in payload[0]), payload
    assert secret.read_text() not in str(payload)
    # nothing of the secret made it into Gradio's cache, under any name
    import tempfile
    cache = Path(tempfile.gettempdir()) / "gradio"
    assert not any(p.is_file() and p.read_bytes() == secret.read_bytes() for p in cache.rglob("secret.png"))
    # run/predict with `files` is the same check
    predict = httpx.post(f"{base}/assistant/gradio_api/run/predict",
                         json={"data": [named, "resnet18", 1, "", ""], "fn_index": 0, "files": [str(secret)]}, timeout=60)
    assert secret.read_text() not in predict.text
    assert httpx.get(f"{base}/assistant/gradio_api/file={secret}", timeout=30).status_code == 403


@pytest.mark.parametrize("name", ["evil.html", "evil.svg", "1001.jpg", "../styles.csv"])
def test_no_file_of_the_images_folder_is_served_by_the_chat_as_it_is(live_shop, name):
    import httpx
    path = live_shop["folder"] / "images" / name
    answer = httpx.get(f"{live_shop['base']}/assistant/gradio_api/file={path}", timeout=30)
    assert answer.status_code == 403


def test_the_shop_images_route_serves_product_images_only(live_shop):
    import httpx
    base = live_shop["base"]
    for name in ("evil", "evil.html", "evil.svg", "..%2Fstyles.csv", "%2E%2E"):
        assert httpx.get(f"{base}/images/{name}", timeout=30).status_code == 404


def test_every_route_works_for_every_id_in_the_alphabet(live_shop):
    import httpx
    base, folder = live_shop["base"], live_shop["folder"]
    assert httpx.get(f"{base}/", timeout=30).status_code == 200
    listed = httpx.get(f"{base}/api/products", params={"per_page": 200}, timeout=30).json()["products"]
    by_id = {p["id"]: p for p in listed}
    for pid in URL_IDS:
        quoted = urllib.parse.quote(pid, safe="")
        # the URL the API gives for its image is one that works, byte for byte
        image = httpx.get(by_id[pid]["image"], timeout=30)
        assert image.status_code == 200 and image.content == (folder / "images" / f"{pid}.jpg").read_bytes(), pid
        assert httpx.get(f"{base}/api/products/{quoted}", timeout=30).json()["id"] == pid
        page = httpx.get(f"{base}/products/{quoted}", timeout=30)
        assert page.status_code == 200, pid
        similar = httpx.get(f"{base}/api/products/{quoted}/similar", timeout=30).json()["results"]
        assert len(similar) == 5 and all(httpx.get(r["image"], timeout=30).status_code == 200 for r in similar)
    # the shop's own links to those pages and images are the same working URLs
    grid = httpx.get(f"{base}/", params={"category": "Tops"}, timeout=30).text
    for pid in URL_IDS:
        assert f'href="{base}/products/{urllib.parse.quote(pid, safe="")}"' in grid, pid


def test_the_chat_api_gives_its_reasons(live_shop):
    from gradio_client import Client, handle_file
    base, root = live_shop["base"], live_shop["folder"].parent
    client = Client(f"{base}/assistant/", verbose=False)
    text = root / "notes.txt"
    text.write_text("not a photo")
    page = root / "photo.png"
    page.write_bytes(b"<html><script>alert(1)</script></html>")
    bomb = root / "bomb.png"
    bomb.write_bytes(FILES["bomb.png"][0])  # declares 900 megapixels in 150 bytes
    wide = root / "wide.png"  # a real 2-megapixel photo, over this chat's 1-megapixel limit
    from PIL import Image
    Image.new("RGB", (2000, 1000), (10, 20, 30)).save(wide)
    expected = {text: "not an image", page: "not an image", bomb: "megapixels", wide: "the limit is 1 megapixels"}
    for path, reason in expected.items():
        answer = client.predict(handle_file(str(path)), "resnet18", 3, "", "", api_name="/recommend")
        assert "results" not in answer and answer["error"] and reason in answer["error"], (path.name, answer)
    good = client.predict(handle_file(str(live_shop["folder"] / "images" / "1001.jpg")), "resnet18", 3, "", "", api_name="/recommend")
    assert len(good["results"]) == 3


def test_the_chat_event_takes_a_non_image_to_the_assistant(live_shop):
    """The message box passes any uploaded file on (the assistant's reply about a non-image is
    test_hostile_upload_through_the_chat); Gradio's own type check answered HTTP 500."""
    import httpx
    base = live_shop["base"]
    uploaded = _upload(base, "notes.txt", b"not a photo at all")
    config = httpx.get(f"{base}/assistant/config", timeout=30).json()
    submit = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") in ("post_user",) or
                  (d.get("targets") and d["targets"][0][1] == "submit"))
    box = {"text": "", "files": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": "notes.txt"}]}
    answer = httpx.post(f"{base}/assistant/gradio_api/run/predict",
                        json={"data": [box, []], "fn_index": submit, "session_hash": "s1"}, timeout=60)
    assert answer.status_code == 200, answer.text
    shown = answer.json()["data"][1]  # the chat, with the shopper's file as their message
    assert shown[-1]["role"] == "user" and shown[-1]["content"][0]["file"]["path"] == uploaded


# -- fuzz: every HTTP route of the shop process answers, never with a 5xx ---------------------
PATH_TEXT = st.one_of(st.sampled_from(URL_IDS + ["1001", "..", "evil.html"]),
                     st.text(alphabet=st.sampled_from(list("a0\u00b2\u0663 ?#%&/\\.:;<>\"'=+~\x00\x7f\u00e9\u200d\U0001f600")),
                             max_size=12))
QUERY_TEXT = st.one_of(st.none(), PATH_TEXT, st.sampled_from(["Women", "Tops", "resnet18", "resnet50", "0", "-1",
                                                             "99999999999999999999", "1e999", "nan"]))
GET_ROUTES = ["/products/{}", "/images/{}", "/api/products/{}", "/api/products/{}/similar", "/shop-static/{}",
              "/assistant/gradio_api/file={}", "/assets/{}"]


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(GET_ROUTES), value=PATH_TEXT, params=st.dictionaries(
    st.sampled_from(["gender", "category", "page", "per_page", "model", "k"]), QUERY_TEXT, max_size=4))
def test_fuzzed_get_routes_never_fail(live_shop, route, value, params):
    import httpx
    url = live_shop["base"] + route.format(urllib.parse.quote(value, safe="" if "file=" not in route else "/"))
    answer = httpx.get(url, params={k: v for k, v in params.items() if v is not None}, timeout=60)
    assert answer.status_code < 500, (url, params, answer.text[:300])


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/", "/api/products", "/api/health", "/embed", "/docs", "/openapi.json"]),
       params=st.dictionaries(st.sampled_from(["gender", "category", "page", "per_page"]), QUERY_TEXT, max_size=4))
def test_fuzzed_listing_routes_never_fail(live_shop, path, params):
    import httpx
    answer = httpx.get(live_shop["base"] + path, params={k: v for k, v in params.items() if v is not None}, timeout=60)
    assert answer.status_code < 500, (path, params, answer.text[:300])


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=512), st.sampled_from([v[0] for v in FILES.values()])),
       fields=st.dictionaries(st.sampled_from(["model", "k", "gender", "category"]), QUERY_TEXT.filter(lambda v: v is not None),
                              max_size=4), name=PATH_TEXT)
def test_fuzzed_recommend_posts_never_fail(live_shop, data, fields, name):
    import httpx
    answer = httpx.post(live_shop["base"] + "/api/recommend", files={"image": (name or "x", data, "image/png")},
                        data=fields, timeout=120)
    assert answer.status_code < 500, (fields, answer.text[:300])


# -- catalog text reaches the chat as text ------------------------------------------------------
def _rendered(markdown: str) -> tuple[str, list[str]]:
    """What a CommonMark renderer (with GFM tables and strikethrough) shows: text and tags."""
    import html
    import re

    from markdown_it import MarkdownIt
    out = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)
    return html.unescape(re.sub(r"<[^>]+>", "", out)).strip(), re.findall(r"<(\w+)", out)


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab <>&\"'!#$%()*+-./:;=?@[\\]^_`{|}~\n\t0123456789")), max_size=40))
def test_as_text_renders_to_exactly_its_text(text):
    import re

    from assistant.chat import as_text
    shown, tags = _rendered(as_text(text))
    assert shown == re.sub(r"\s*\n\s*", " ", text).strip(" \t\n")
    assert set(tags) <= {"p"}


def test_chat_replies_show_catalog_markup_as_text(live_shop, tmp_path):
    from assistant.messages import reply_messages
    settings = AssistantSettings(policy=RESNET18)
    chat = Assistant(live_shop["searcher"], settings)
    for pid, name in MARKUP_NAMES.items():
        reply, state = chat.more_like(chat.new_state(), pid)
        shown, tags = _rendered(reply.markdown())
        assert f"like “{name}”" in shown and set(tags) <= {"p", "strong"}, (name, reply.markdown())
    photo = tmp_path / "red.jpg"
    draw_product(1, (200, 40, 30), "rectangle").save(photo)
    # the photo first, then the filter: a new photo starts a fresh search (issue 18)
    state = chat.handle_turn(chat.new_state(), "", [str(photo)])[1]
    reply, _ = chat.apply_controls(state, category=[MARKUP_TYPE])
    shown, tags = _rendered(reply.markdown())
    assert f"1 Women's {MARKUP_TYPE} like your photo" in shown and set(tags) <= {"p", "strong"}, reply.markdown()
    assert f"Filters: {MARKUP_TYPE}" in shown
    # the gallery's pictures are copies named so that no URL needs encoding them
    gallery = reply_messages(reply, settings)[-1]["content"]
    paths = [Path(item["image"]["path"]) for item in gallery.value]
    assert paths and all(urllib.parse.quote(p.name) == p.name for p in paths)


# -- in a browser: clicks on products whose files need URL encoding; markup stays text ---------
@pytest.fixture(scope="module")
def chromium():
    chromium_path = Path("/usr/bin/chromium")
    if not chromium_path.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.mark.browser
def test_clicks_on_odd_ids_and_markup_names_in_the_chat(live_shop, chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(live_shop["base"] + "/assistant/")
    page.wait_for_function("window.__vsaBridge === true")
    folder = live_shop["folder"]
    page.locator('#message input[data-testid="file-upload"]').set_input_files(str(folder / "images" / "a:b.jpg"))
    page.locator("#message textarea").fill("show 20")
    page.locator("#message textarea").press("Enter")
    page.locator("#chat .thumbnail-item").first.wait_for()
    names = {"a?b": "Odd 2", "a:b": "Odd 7", "50%": "Odd 4", "8001": MARKUP_NAMES["8001"], "8002": MARKUP_NAMES["8002"]}
    for pid, name in names.items():
        users = page.locator("#chat .user-row").count()
        page.locator("#chat .grid-container").last.locator(".thumbnail-item", has_text=name).first.click()
        page.wait_for_function(f"document.querySelectorAll('#chat .user-row').length > {users}")
        assert page.locator("#chat .user-row").last.inner_text().strip() == f"More like “{name}”", pid
        page.locator('#chat [data-testid="bot"]', has_text=f"like “{name}”").last.wait_for()
        page.wait_for_function("!document.querySelector('#message textarea').disabled")
        page.locator("#message textarea").fill("show 20")  # the next click needs every product shown again
        page.locator("#message textarea").press("Enter")
        page.wait_for_function(f"document.querySelectorAll('#chat .user-row').length > {users + 1}")
        page.wait_for_function("!document.querySelector('#message textarea').disabled")
    assert page.locator('#chat img[src="x"]').count() == 0 and page.locator("#chat a[href*='javascript']").count() == 0
    assert dialogs == []
    context.close()


def test_strips_and_bad_numbers_in_a_catalog_index_like_any_product(tmp_path, embedders):
    from tests.hostile_files import aspect_files
    rows = "".join(f"{6000 + i},Women,Apparel,Topwear,Tops,Red,Summer,{year},Casual,Strip {i}\n"
                   for i, year in enumerate(["inf", "1e999", "-inf", "nan", "\u00b2", "2012"]))
    folder = make_catalog(tmp_path / "cat", per_kind=1, extra_rows=rows)
    strips = list(aspect_files().values())
    for i in range(6):  # the strip's own format under a catalog image name: decoding goes by content
        (folder / "images" / f"{6000 + i}.png").write_bytes(strips[i % len(strips)][0])
    client = make_client(StoreSettings(path=tmp_path / "db"))
    report = index_catalog(read_catalog(folder), client, [embedders["resnet18"]], show_progress_bar=False)
    assert report.indexed == {"resnet18": 12} and report.skipped == []
    stored = Searcher(client, embedders=embedders).collection("resnet18").metadata.frame()
    assert stored.loc["6005", "year"] == 2012
    assert all(stored.loc[f"600{i}"].get("year") != stored.loc[f"600{i}"].get("year") or
               stored.loc[f"600{i}"].get("year") is None for i in range(5))  # blank: missing, not a number


def test_serve_is_as_strict_as_the_mounted_chat(live_shop):
    import httpx

    from assistant.ui import launch
    settings = AssistantSettings(policy=RESNET18, allowed_paths=(live_shop["folder"] / "images",))
    port = free_port()
    demo = launch(live_shop["searcher"], settings, host="127.0.0.1", port=port, block=False, quiet=True)
    try:
        base, secret = f"http://127.0.0.1:{port}", live_shop["secret"]
        for name in ("evil.html", "evil.svg", "1001.jpg"):
            path = live_shop["folder"] / "images" / name
            assert httpx.get(f"{base}/gradio_api/file={path}", timeout=30).status_code == 403, name
        named = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
        kind, payload = _call(base, "recommend", [named, "resnet18", 1, "", ""], prefix="")
        assert secret.read_text() not in str(payload) and (kind == "error" or "results" not in payload[0])
    finally:
        demo.close()
