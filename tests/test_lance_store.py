"""The LanceDB store adapter against the Chroma one and exact search, on a real embedded LanceDB:
the same catalog indexed into both answers the same products under every kind of filter, and the
adapter keeps what the project's store promises (incremental runs, promotion by name, hostile
values, the vector index once a collection is large)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import make_catalog

from catalog import open_image, read_catalog
from indexing import index_catalog
from search import Searcher
from vectorstore import CATEGORY, Filters, NoIndex, ProductCollection, StoreSettings, lance_store, make_client
from vectorstore.store import RETIRED_SLOT

ROOT = Path(__file__).resolve().parents[1]
FILTERS = [
    Filters(),
    Filters({"gender": ("Women",)}),
    Filters({CATEGORY: ("Footwear",)}),
    Filters({CATEGORY: ("Topwear", "Watches")}),
    Filters({"gender": ("Men",), "baseColour": ("Black", "Blue")}),
    Filters(excluded={"baseColour": ("Black",)}),
    Filters({"year": (2010,)}),
    Filters({CATEGORY: ("Footwear",)}, {"gender": ("Men",)}),
]


@pytest.fixture(scope="module")
def both(tmp_path_factory, catalog_dir, embedders):
    """The session catalog indexed for resnet18 into a Chroma folder and a LanceDB folder."""
    catalog = read_catalog(catalog_dir)
    clients = {}
    for engine in ("chroma", "lancedb"):
        client = make_client(StoreSettings(path=tmp_path_factory.mktemp(engine), engine=engine))
        index_catalog(catalog, client, [embedders["resnet18"]], batch_size=8, show_progress_bar=False)
        clients[engine] = client
    return catalog, clients


def exact(collection: ProductCollection, vector: np.ndarray, filters: Filters, k: int) -> list[str]:
    frame = collection.metadata.frame()
    allowed = frame.index[filters.mask(frame)].tolist()
    stored = collection.vectors_of(allowed)
    order = sorted(stored, key=lambda pid: (-float(stored[pid] @ vector), pid))
    return order[:k]


def test_both_engines_answer_every_filter_as_exact_search(both, embedders):
    catalog, clients = both
    chroma = ProductCollection.open(clients["chroma"], "resnet18")
    lance = ProductCollection.open(clients["lancedb"], "resnet18")
    assert lance.count() == chroma.count() == len(catalog.products)
    assert lance.weights_id == chroma.weights_id and lance.runtime == chroma.runtime
    np.testing.assert_allclose(lance.center, chroma.center, atol=1e-6)
    for product in catalog.products[::5]:
        vector = embedders["resnet18"].embed([open_image(product.image)])[0]
        prepared = lance.prepare(vector[None])[0]
        for filters in FILTERS:
            want = exact(lance, prepared, filters, 6)
            lance_hits = lance.search(vector, k=6, filters=filters)
            chroma_hits = chroma.search(vector, k=6, filters=filters)
            assert [h.id for h in lance_hits] == want, filters
            assert [h.id for h in chroma_hits] == want, filters
            np.testing.assert_allclose([h.score for h in lance_hits], [h.score for h in chroma_hits], atol=1e-4)
            for hit in lance_hits:
                assert filters.mask(lance.metadata.frame().loc[[hit.id]]).all()
                assert hit.metadata["articleType"] == chroma.metadata.record(hit.id)["articleType"]
        left_out = lance.search(vector, k=3, exclude=(product.id,))
        assert product.id not in [h.id for h in left_out] and len(left_out) == 3


def test_counts_vocabulary_and_records_agree_with_chroma(both):
    _, clients = both
    chroma = ProductCollection.open(clients["chroma"], "resnet18")
    lance = ProductCollection.open(clients["lancedb"], "resnet18")
    assert lance.vocabulary() == chroma.vocabulary()
    for filters in FILTERS:
        assert lance.count_matching(filters) == chroma.count_matching(filters)
    assert lance.stored_records() == chroma.stored_records()
    some = sorted(chroma.stored_records())[:5]
    for pid, vector in chroma.vectors_of(some).items():
        np.testing.assert_allclose(lance.vector_of(pid), vector, atol=1e-6)
    assert lance.vector_of("no such product") is None


def test_a_rerun_is_incremental_and_follows_the_catalog(tmp_path, embedders):
    folder = make_catalog(tmp_path / "catalog", per_kind=2)
    client = make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb"))
    first = index_catalog(read_catalog(folder), client, [embedders["resnet18"]], batch_size=8,
                          show_progress_bar=False)
    again = index_catalog(read_catalog(folder), client, [embedders["resnet18"]], batch_size=8,
                          show_progress_bar=False)
    assert first.indexed["resnet18"] > 0 and again.indexed["resnet18"] == 0
    lines = (folder / "styles.csv").read_text().splitlines(keepends=True)
    gone = lines[1].split(",")[0]
    (folder / "styles.csv").write_text("".join(lines[:1] + lines[2:]))
    third = index_catalog(read_catalog(folder), client, [embedders["resnet18"]], batch_size=8,
                          show_progress_bar=False)
    collection = ProductCollection.open(client, "resnet18")
    assert third.removed["resnet18"] == 1 and collection.vector_of(gone) is None
    assert collection.count() == len(lines) - 2


def test_promotion_by_name_keeps_an_open_handle_and_retires_the_old_table(tmp_path, catalog_dir):
    from embedding import load_embedder
    client = make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb"))
    old, new = load_embedder("resnet18", "random:0"), load_embedder("resnet18", "random:1")
    catalog = read_catalog(catalog_dir)
    index_catalog(catalog, client, [old], batch_size=8, show_progress_bar=False)
    index_catalog(catalog, client, [new], batch_size=8, show_progress_bar=False, slot="tuned")
    live = ProductCollection.open(client, "resnet18", weights_id="random:0")
    ProductCollection.promote(client, "resnet18", "tuned")
    assert ProductCollection.open(client, "resnet18").weights_id == "random:1"
    assert ProductCollection.open(client, "resnet18", slot=RETIRED_SLOT).weights_id == "random:0"
    with pytest.raises(NoIndex):
        ProductCollection.open(client, "resnet18", slot="tuned")
    first = catalog.products[0].id
    assert live.search_stored(live.vector_of(first), k=1)[0].id == first
    ProductCollection.drop(client, "resnet18", RETIRED_SLOT)
    with pytest.raises(NoIndex):
        ProductCollection.open(client, "resnet18", slot=RETIRED_SLOT)
    tables = client.db.list_tables().tables
    assert len([t for t in tables if t.startswith("products_resnet18")]) == 1


def test_hostile_ids_and_values_are_data_not_sql(tmp_path):
    client = make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb"))
    collection = ProductCollection.open(client, "m", dim=4, create=True)
    ids = ["o'neil", "x') OR 1=1 --", "plain", "back\\slash`"]
    vectors = np.eye(4, dtype=np.float32)
    metas = [{"gender": "Men's", "baseColour": "Red' OR '1'='1", "name": "a"},
             {"gender": "Women", "baseColour": "Blue", "year": 2012},
             {"gender": "Women", "baseColour": "Red' OR '1'='1"},
             {"gender": "Men's", "articleType": "`Shoes`"}]
    collection.write(ids, vectors, metas)
    assert collection.count() == 4
    hits = collection.search(vectors[2], k=4, filters=Filters({"baseColour": ("Red' OR '1'='1",)}))
    assert [h.id for h in hits] == ["plain", "o'neil"]
    left = [h.id for h in collection.search(vectors[0], k=4, exclude=("o'neil", "x') OR 1=1 --"))]
    assert sorted(left) == sorted(["plain", "back\\slash`"])
    assert collection.count_matching(Filters({"gender": ("Men's",)})) == 2
    collection.delete(["x') OR 1=1 --"])
    assert collection.count() == 3 and collection.vector_of("o'neil") is not None


def test_a_search_writes_nothing_to_the_servers_log(tmp_path, capfd):
    """LanceDB warns on stderr, once per search, when the score is not asked for by name: a
    serving process would write a line per shopper's search, and lose its scores when the
    engine stops adding them unasked."""
    client = make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb"))
    collection = ProductCollection.open(client, "m", dim=4, create=True)
    collection.write(["a", "b"], np.eye(4, dtype=np.float32)[:2], [{"gender": "Men"}, {"gender": "Women"}])
    capfd.readouterr()
    hits = collection.search(np.eye(4, dtype=np.float32)[0], k=2, filters=Filters({"gender": ("Men", "Women")}))
    assert [h.id for h in hits] == ["a", "b"] and hits[0].score > hits[1].score
    assert all("_distance" not in h.metadata for h in hits)
    assert capfd.readouterr().err == ""


def test_a_large_collection_is_searched_through_its_vector_index(tmp_path, monkeypatch):
    monkeypatch.setattr(lance_store, "INDEX_MIN_ROWS", 500)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 32))
    kinds = rng.integers(0, 8, 2000)
    vectors = centres[kinds] + 0.5 * rng.normal(size=(2000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{i}" for i in range(2000)]
    metas = [{"articleType": f"kind{k}", "gender": ("Men", "Women")[i % 2]} for i, k in enumerate(kinds)]
    client = make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb"))
    collection = ProductCollection.open(client, "m", dim=32, create=True)
    collection.write_prepared(ids, vectors, metas)
    collection.tidy()
    table = collection._table()
    assert {tuple(i.columns) for i in table.list_indices()} >= {("vector",), ("gender",), ("articleType",)}
    assert collection._vector_index_kind(table) == "IvfRq"
    # The breadth is a share of the partitions the index was built with, kept with the collection.
    assert collection.notes[lance_store.PARTITIONS_KEY] == max(1, 2000 // lance_store.PARTITION_ROWS)
    found = 0
    for i in range(0, 2000, 100):
        hits = collection.search_stored(vectors[i], k=5, filters=Filters({"gender": (metas[i]["gender"],)}))
        assert all(h.metadata["gender"] == metas[i]["gender"] for h in hits)
        found += hits[0].id == ids[i]
    assert found >= 18   # an approximate index: its own vector first nearly always
    collection.write_prepared(["late"], vectors[:1], [{"gender": "Men"}])   # after the index: still found
    assert collection.search_stored(vectors[0], k=2)[0].id in ("p0", "late")
    assert "late" in [h.id for h in collection.search_stored(vectors[0], k=2)]


def old_schema(dim, made=lance_store.schema):
    """The table as written before the one-column metadata and the route column."""
    new = made(dim)
    return pa.schema([f for f in new if f.name not in (lance_store.RECORD, lance_store.ROUTE)])


def test_a_table_written_before_the_record_column_is_read_searched_and_written(tmp_path, monkeypatch):
    # A store from before the one-column metadata and the route index: every read falls back to
    # the columns, a later run's writes keep to the table's own schema, and a category filter
    # searches the plain index.
    monkeypatch.setattr(lance_store, "schema", old_schema)
    client = make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb"))
    collection = ProductCollection.open(client, "m", dim=8, create=True)
    vectors = np.eye(8, dtype=np.float32)
    metas = [{"gender": "Men", "articleType": "Shirts", "year": 2012}, {"gender": "Women", "articleType": "Heels"}]
    collection.write_prepared(["a", "b"], vectors[:2], metas)
    monkeypatch.undo()
    assert lance_store.RECORD not in collection._table().schema.names
    assert lance_store.ROUTE not in collection._table().schema.names
    collection.write_prepared(["c"], vectors[2:3], [{"gender": "Women", "articleType": "Flats"}])
    hits = collection.search(vectors[0], k=3, filters=Filters({"gender": ("Men",)}))
    assert [(h.id, h.metadata["articleType"], h.metadata["year"]) for h in hits] == [("a", "Shirts", 2012)]
    assert collection.records(["b", "c"]) == {"b": {"gender": "Women", "articleType": "Heels", "centered": False},
                                              "c": {"gender": "Women", "articleType": "Flats", "centered": False}}
    # Its vector index, and the look near the photo a filtered search takes, read the columns too.
    monkeypatch.setattr(lance_store, "INDEX_MIN_ROWS", 3)
    collection.tidy()
    assert collection._vector_index_kind(collection._table()) == "IvfRq"
    hits = collection.search(vectors[1], k=3, filters=Filters({"gender": ("Women",)}))
    assert [(h.id, h.metadata["articleType"]) for h in hits] == [("b", "Heels"), ("c", "Flats")]
    assert collection._route(collection._table(), Filters({CATEGORY: ("Heels",)})) is None
    assert [h.id for h in collection.search(vectors[2], k=3, filters=Filters({CATEGORY: ("Heels", "Flats")}))] == ["c", "b"]
    monkeypatch.undo()
    fresh = ProductCollection.open(client, "n", dim=8, create=True)
    fresh.write_prepared(["a", "b"], vectors[:2], metas)
    assert {lance_store.RECORD, lance_store.ROUTE} <= set(fresh._table().schema.names)
    assert fresh.records(["a", "b"]) == collection.records(["a", "b"])
    assert [(h.id, h.metadata) for h in fresh.search(vectors[0], k=2)] == \
        [(h.id, h.metadata) for h in collection.search(vectors[0], k=2, filters=Filters({"gender": ("Men", "Women")}))]


@pytest.mark.parametrize("routed", [False, True], ids=["plain index", "route index"])
def test_a_broad_filter_that_disagrees_with_the_photo_still_finds_its_nearest_products(tmp_path, monkeypatch, routed):
    # Shoes and clothes in two regions of the space, 20 partitions: "apparel", which half the
    # products pass, would visit the 4 partitions nearest a shoe's photo, all of them shoes.
    # Through the plain index (a store from before the route column), and through the route's.
    if not routed:
        monkeypatch.setattr(lance_store, "schema", old_schema)
    monkeypatch.setattr(lance_store, "INDEX_MIN_ROWS", 500)
    monkeypatch.setattr(lance_store, "PARTITION_ROWS", 300)
    monkeypatch.setattr(lance_store, "NPROBES", 2)
    monkeypatch.setattr(lance_store, "FILTERED_PROBES", 4)
    rng = np.random.default_rng(1)
    regions = rng.normal(size=(2, 64))
    centres = np.repeat(regions, 4, axis=0) + 0.5 * rng.normal(size=(8, 64))
    kinds = rng.integers(0, 8, 6000)
    vectors = centres[kinds] + 0.3 * rng.normal(size=(6000, 64))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{i}" for i in range(6000)]
    metas = [{"masterCategory": "Footwear" if k < 4 else "Apparel", "articleType": f"kind{k}"} for k in kinds]
    collection = ProductCollection.open(make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb")), "m",
                                        dim=64, create=True)
    collection.write_prepared(ids, vectors, metas)
    collection.tidy()
    table = collection._table()
    assert (collection._route(table, Filters({CATEGORY: ("Apparel",)})) is not None) == routed
    shoe = next(i for i, m in enumerate(metas) if m["masterCategory"] == "Footwear")
    # Near a shoe's photo, shoes; none of the clothes.
    assert collection._near(table, vectors[shoe], Filters({CATEGORY: ("Apparel",)})) == 0
    assert collection._near(table, vectors[shoe], Filters({CATEGORY: ("Footwear",)})) == lance_store.NEAR_ROWS
    # How much less similar the first 5 found are than the true 5 nearest that pass, asked for
    # 50 as serving asks: an approximate index swaps near-ties (a gap of a few thousandths);
    # partitions left out lose whole neighbourhoods.
    gap = {"agree": [], "disagree": []}
    for i in range(0, 6000, 150):
        own = metas[i]["masterCategory"]
        other = "Apparel" if own == "Footwear" else "Footwear"
        for name, value in (("agree", own), ("disagree", other)):
            passing = np.array([m["masterCategory"] == value for m in metas])
            truth = np.sort(np.where(passing, vectors @ vectors[i], -np.inf))[::-1][:5]
            hits = collection.search_stored(vectors[i], k=50, filters=Filters({CATEGORY: (value,)}))[:5]
            assert len(hits) == 5 and all(h.metadata["masterCategory"] == value for h in hits)
            gap[name].append(float(truth.mean() - np.mean([h.score for h in hits])))
    assert np.mean(gap["agree"]) < 0.01 and np.mean(gap["disagree"]) < 0.01, gap


def test_a_chat_on_lancedb_searches_filters_and_relaxes_without_loading_the_metadata_table(both, embedders):
    from assistant.chat import Assistant
    from assistant.settings import AssistantSettings
    from operations import SearchPolicy
    catalog, clients = both
    searcher = Searcher(clients["lancedb"], embedders={"resnet18": embedders["resnet18"]})
    assistant = Assistant(searcher, AssistantSettings(policy=SearchPolicy(models=("resnet18",),
                                                                          default_model="resnet18", k=4, max_k=8)))
    product = catalog.products[3]
    reply, state = assistant.handle_turn(assistant.new_state(), "", [str(product.image)])
    assert reply.kind == "results" and reply.results[0].id == product.id
    reply, state = assistant.handle_turn(state, "women's shoes")
    assert reply.results and all(r.get("gender") == "Women" and r.get("masterCategory") == "Footwear"
                                 for r in reply.results)
    reply, state = assistant.handle_turn(state, "men red")   # nothing passes both: the narrowest goes
    assert reply.notes and reply.notes[0] == "No product matches Men · Footwear · Red; without Red:"
    assert {(r.get("gender"), r.get("masterCategory")) for r in reply.results} == {("Men", "Footwear")}
    reply, _ = assistant.handle_turn(state, "more like the first one")
    assert reply.kind == "results" and reply.results
    assert searcher.product("resnet18", product.id)["articleType"] == product.articleType
    # The engine filtered, counted, described and gave each record: no table of every product.
    assert searcher.collection("resnet18").metadata._frame is None


def test_the_shops_grid_on_lancedb_pages_and_counts_without_the_metadata_table(both, embedders):
    """The grid's pages, totals, category choices and product pages come from the engine, the
    same products as Chroma's table gives (in the order they were written: the catalog's)."""
    from fastapi.testclient import TestClient

    from operations import SearchPolicy
    from shop import ShopSettings, build_app
    from shop.browse import CatalogBrowser
    catalog, clients = both
    browsers = {engine: CatalogBrowser(lambda client=client: ProductCollection.open(client, "resnet18").metadata)
                for engine, client in clients.items()}
    assert browsers["lancedb"].category_groups() == browsers["chroma"].category_groups()
    for filters in (Filters(), Filters({"gender": ("Women",)}), Filters({CATEGORY: ("Footwear", "Watches")})):
        count = browsers["chroma"].page(filters, 1, 5).pages
        pages = {engine: [browser.page(filters, n, 5) for n in range(1, count + 2)]   # one past the end: the last
                 for engine, browser in browsers.items()}
        assert [(p.number, p.pages, p.total) for p in pages["lancedb"]] == \
            [(p.number, p.pages, p.total) for p in pages["chroma"]]
        shown = {engine: [product["id"] for page in found[:-1] for product in page.products]
                 for engine, found in pages.items()}
        assert sorted(shown["lancedb"]) == sorted(shown["chroma"]) and len(set(shown["lancedb"])) == len(shown["lancedb"])
    wanted = catalog.products[5]
    assert browsers["lancedb"].product(wanted.id) == browsers["chroma"].product(wanted.id)
    assert browsers["lancedb"].product("no such id") is None
    searcher = Searcher(clients["lancedb"], embedders={"resnet18": embedders["resnet18"]})
    shop = TestClient(build_app(searcher, ShopSettings(policy=SearchPolicy(models=("resnet18",), default_model="resnet18"),
                                                       images_dir=catalog.folder / "images")))
    assert shop.get("/").status_code == 200 and shop.get("/?category=Footwear&page=2").status_code == 200
    listed = shop.get("/api/products", params={"category": "Footwear"}).json()
    assert listed["total"] == sum(p.masterCategory == "Footwear" for p in catalog.products)
    assert shop.get(f"/products/{wanted.id}").status_code == 200
    # Without an images folder given, the shop finds it from the stored paths: still no table.
    bare = TestClient(build_app(searcher, ShopSettings(policy=SearchPolicy(models=("resnet18",),
                                                                           default_model="resnet18"))))
    assert bare.get(f"/images/{wanted.id}").content == wanted.image.read_bytes()
    assert searcher.collection("resnet18", check_weights=False).metadata._frame is None


def test_the_cli_indexes_and_searches_a_lancedb_store(tmp_path, catalog_dir):
    db = tmp_path / "lance"
    base = [sys.executable, str(ROOT / "app.py")]
    common = ["--store", "lancedb", "--db", str(db), "--weights", "random", "--runtime", "eager"]
    done = subprocess.run([*base, "index", "--catalog", str(catalog_dir), "--quiet", "--models", "resnet18", *common],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    photo = next((catalog_dir / "images").iterdir())
    found = subprocess.run([*base, "search", str(photo), "--json", "--items", "off", "--model", "resnet18", *common],
                           capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert results[0]["id"] == photo.stem


def test_the_search_breadth_is_set_by_the_indexer_and_kept(tmp_path):
    from vectorstore.store import EF_SEARCH
    client = make_client(StoreSettings(path=tmp_path / "chroma"))
    made = ProductCollection.open(client, "m", dim=4, create=True)
    assert made.ef_search == EF_SEARCH
    made.collection.modify(configuration={"hnsw": {"ef_search": 64}})
    assert ProductCollection.open(client, "m").ef_search == 64          # a reader changes nothing
    assert ProductCollection.open(client, "m", create=True).ef_search == EF_SEARCH   # an indexer restores it
    lance = make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb"))
    assert ProductCollection.open(lance, "m", dim=4, create=True).ef_search == EF_SEARCH


def test_a_vector_that_rabitq_cannot_pack_is_indexed_with_pq(tmp_path, monkeypatch):
    monkeypatch.setattr(lance_store, "INDEX_MIN_ROWS", 50)
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(300, 20)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    collection = ProductCollection.open(make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb")), "m",
                                        dim=20, create=True)
    collection.write_prepared([f"p{i}" for i in range(300)], vectors, [{"gender": "Men"}] * 300)
    collection.tidy()
    assert collection._vector_index_kind(collection._table()) == "IvfPq"
    assert collection.search_stored(vectors[7], k=1)[0].id == "p7"


def test_the_breadth_follows_what_passes_near_the_photo():
    partitions = 488
    unfiltered = lance_store._breadth(1.0, None, partitions, "IvfRq")
    assert unfiltered == (lance_store.NPROBES, lance_store.REFINE)
    # Rare in the catalog but near the photo as much as a broad filter: as wide as it.
    assert lance_store._breadth(0.02, 1.0, partitions, "IvfRq") == lance_store._breadth(0.6, 1.0, partitions, "IvfRq")
    assert lance_store._breadth(0.02, 1.0, partitions, "IvfRq")[0] == lance_store.FILTERED_PROBES
    # Half as many near the photo: twice as wide. None of it there (shoes asked of a shirt's
    # photo): every partition.
    assert lance_store._breadth(0.3, 0.5, partitions, "IvfRq")[0] == 2 * lance_store.FILTERED_PROBES
    assert lance_store._breadth(0.3, 0.0, partitions, "IvfRq")[0] >= partitions
    # PQ codes of a rare filter's products are re-ranked more; RaBitQ's are not.
    assert lance_store._breadth(0.02, 0.6, partitions, "IvfPq")[1] > lance_store.REFINE
    assert lance_store._breadth(0.02, 0.6, partitions, "IvfRq")[1] == lance_store.REFINE


def test_a_filter_within_one_category_searches_that_categorys_partitions_only(tmp_path, monkeypatch):
    # Three categories in three regions of the space, 30 partitions. Shoes asked of a bag's photo
    # lie in the partitions farthest from it: the plain index would visit every partition; the
    # route index visits a few of the shoes' own, nearest the bag first.
    monkeypatch.setattr(lance_store, "INDEX_MIN_ROWS", 500)
    monkeypatch.setattr(lance_store, "PARTITION_ROWS", 300)
    monkeypatch.setattr(lance_store, "NPROBES", 3)
    rng = np.random.default_rng(3)
    masters = ("Footwear", "Apparel", "Accessories")
    regions = 2.0 * rng.normal(size=(3, 64))
    centres = np.repeat(regions, 3, axis=0) + 0.5 * rng.normal(size=(9, 64))
    kinds = rng.integers(0, 9, 9000)
    vectors = centres[kinds] + 0.3 * rng.normal(size=(9000, 64))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{i}" for i in range(9000)]
    metas = [{"masterCategory": masters[k // 3], "subCategory": f"sub{k // 3}", "articleType": f"kind{k}",
              "gender": ("Men", "Women")[i % 2]} for i, k in enumerate(kinds)]
    collection = ProductCollection.open(make_client(StoreSettings(path=tmp_path / "lance", engine="lancedb")), "m",
                                        dim=64, create=True)
    collection.write_prepared(ids, vectors, metas)
    collection.tidy()
    table = collection._table()
    assert collection._vector_index_kind(table, lance_store.ROUTE) == "IvfRq"
    # Which filters keep to one category: the category's name, a type or subcategory within it,
    # every category but one left out; not a gender, nor types of two categories.
    count = {m: sum(x["masterCategory"] == m for x in metas) for m in masters}
    assert collection._route(table, Filters({CATEGORY: ("Footwear",)})) == ("Footwear", count["Footwear"])
    assert collection._route(table, Filters({"articleType": ("kind4",), "gender": ("Men",)})) == \
        ("Apparel", count["Apparel"])
    assert collection._route(table, Filters(excluded={CATEGORY: ("Footwear", "sub2")})) == ("Apparel", count["Apparel"])
    assert collection._route(table, Filters({CATEGORY: ("kind1", "kind7")})) is None
    assert collection._route(table, Filters({"gender": ("Men",)})) is None
    visited = []
    breadth = lance_store._route_breadth
    monkeypatch.setattr(lance_store, "_route_breadth", lambda *a: visited.append(breadth(*a)[0]) or breadth(*a))
    monkeypatch.setattr(lance_store, "ROUTE_PROBES", 6)
    partitions = collection.notes[lance_store.PARTITIONS_KEY]
    frame = pd.DataFrame(metas)
    gaps = []
    for i in range(0, 9000, 300):
        for value in masters:
            if value == metas[i]["masterCategory"]:
                continue
            for filters in (Filters({CATEGORY: (value,)}), Filters({CATEGORY: (value,), "gender": ("Women",)})):
                passing = filters.mask(frame)
                similarity = vectors @ vectors[i]
                truth = np.sort(np.where(passing, similarity, -np.inf))[::-1][:5]
                hits = collection.search_stored(vectors[i], k=5, filters=filters)
                assert len(hits) == 5 and all(filters.mask(pd.DataFrame([h.metadata])).all() for h in hits)
                # Scores are the photo's cosine similarity, as through the plain index.
                assert np.allclose([h.score for h in hits], [similarity[int(h.id[1:])] for h in hits], atol=1e-4)
                gaps.append(float(truth.mean() - np.mean([h.score for h in hits])))
                # ROUTE_PROBES of the category's partitions: far fewer than every one.
                assert visited[-1] == 6
    assert np.mean(gaps) < 0.01, np.mean(gaps)
    # A filter too rare for ROUTE_PROBES partitions to hold k x REFINE of its products visits
    # more of them, up to all of the category's: every product that passes is found.
    rare = Filters({"articleType": ("kind0",), "gender": ("Women",)}, {"baseColour": ("Black",)})
    wanted = int(rare.mask(frame).sum())
    assert len(collection.search_stored(vectors[0], k=wanted + 5, filters=rare)) == wanted
    assert 6 < visited[-1] < partitions


def test_a_categorys_route_code_is_the_same_in_every_process():
    code = subprocess.run([sys.executable, "-c", "from vectorstore.lance_store import route_code; "
                           "print(list(route_code('Footwear')))"], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "7"}, check=True).stdout
    assert json.loads(code) == list(lance_store.route_code("Footwear"))
    assert np.isclose(np.linalg.norm(lance_store.route_code("Footwear")), 1.0)
    assert abs(np.dot(lance_store.route_code("Footwear"), lance_store.route_code("Apparel"))) < 0.9
    assert not any(lance_store.route_code(None))
