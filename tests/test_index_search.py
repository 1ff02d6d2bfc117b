"""Index -> search round trips in a real embedded Chroma, with random weights."""
import json
import subprocess
import sys

import numpy as np
import pytest

from catalog import open_image, read_catalog
from embedding.builder import EmbedderBuilder
from indexing import index_catalog
from search import NO_RERANK, Searcher
from tests.conftest import ROOT, draw_product, make_catalog
from vectorstore import (
    Filters,
    NoIndex,
    NoProduct,
    ProductCollection,
    StoreSettings,
    UnknownFilterValue,
    WeightsMismatch,
    make_client,
)


def test_every_indexed_image_finds_itself_first(searcher, indexed_db, embedders, catalog_dir):
    catalog = read_catalog(catalog_dir)
    images = [open_image(p.image) for p in catalog.products]
    # `--rerank off`: cosine order, the scores falling down the list.
    cosine = Searcher(make_client(StoreSettings(path=indexed_db)), embedders=embedders,
                      rerank=NO_RERANK)
    for model in ("resnet18", "resnet50"):
        answers = searcher.search_images(model, images, k=5)
        plain = cosine.search_images(model, images, k=5)
        for product, answer, cosines in zip(catalog.products, answers, plain):
            assert answer.results[0].id == product.id
            assert answer.results[0].score > 0.99
            assert len(answer.results) == 5
            assert [r.score for r in cosines.results] == sorted((r.score for r in cosines.results), reverse=True)
            assert cosines.results[0].id == product.id and cosines.reranked_by == ()


def test_collections_hold_every_product_with_metadata(indexed_db, catalog_dir):
    client = make_client(StoreSettings(path=indexed_db))
    catalog = read_catalog(catalog_dir)
    for model, dim in (("resnet18", 512), ("resnet50", 2048)):
        coll = ProductCollection.open(client, model)
        assert coll.count() == len(catalog.products)
        meta = coll.metadata.record("1001")
        assert meta["name"] == "Brand0 Women Black, Grey and White Heels"
        assert meta["year"] == 2010 and "year" not in coll.metadata.record("1002")
        assert len(coll.vector_of("1001")) == dim
        assert abs(np.linalg.norm(coll.vector_of("1001")) - 1) < 1e-5
        assert coll.center is not None and coll.center.shape == (dim,)


def test_filters_combine_with_and_and_category_matches_any_level(searcher, catalog_dir):
    image = open_image(read_catalog(catalog_dir).by_id()["1003"].image)
    for category in ("Footwear", "Shoes", "heels"):
        answer = searcher.search_image("resnet18", image, k=5, filters={"gender": ["women"], "category": [category]})
        assert answer.results and all(r.get("gender") == "Women" and "Footwear" == r.get("masterCategory")
                                      for r in answer.results)
    answer = searcher.search_image("resnet18", image, k=10, filters={"baseColour": ["Green"], "gender": ["Women"]})
    assert {r.get("articleType") for r in answer.results} == {"Handbags"} and len(answer.results) == 4


def test_excluded_values_are_left_out(searcher, catalog_dir):
    image = open_image(read_catalog(catalog_dir).by_id()["1003"].image)  # a black heel
    filters = searcher.resolve("resnet18", {"gender": ["women"]}, {"baseColour": ["black"], "category": ["bags"]})
    assert filters.describe() == "Women · not Bags · not Black"
    answer = searcher.search_image("resnet18", image, k=20, filters=filters)
    assert answer.results and {r.get("articleType") for r in answer.results} == {"Tops"}
    unfiltered = searcher.search_image("resnet18", image, k=20, filters={"gender": ["women"]})
    assert "Black" in {r.get("baseColour") for r in unfiltered.results}
    with pytest.raises(UnknownFilterValue, match="Black"):
        searcher.resolve("resnet18", {}, {"baseColour": ["blak"]})


def test_unknown_filter_value_names_the_closest(searcher):
    with pytest.raises(UnknownFilterValue) as err:
        searcher.resolve("resnet18", {"baseColour": ["blak"]})
    assert err.value.suggestions == ["Black"]
    with pytest.raises(UnknownFilterValue, match="closest known: gender"):
        searcher.resolve("resnet18", {"gendr": ["Men"]})


def test_filtered_search_matches_exact_search_at_every_selectivity(searcher, indexed_db, catalog_dir):
    coll = searcher.collection("resnet18")
    got = coll.collection.get(include=["embeddings", "metadatas"])
    vectors = np.asarray(got["embeddings"])
    query = vectors[3]
    for filters in (Filters(), Filters({"gender": ("Women",)}), Filters({"articleType": ("Watches",)}),
                    Filters(excluded={"baseColour": ("Black",)}),
                    Filters({"gender": ("Women",)}, {"category": ("Footwear", "Bags")})):
        hits = coll.search_stored(query, k=3, filters=filters)
        allowed = filters.mask(coll.metadata.frame().loc[got["ids"]])
        order = np.argsort(-(vectors @ query))
        expected = [got["ids"][i] for i in order if allowed[i]][:3]
        assert [h.id for h in hits] == expected


def test_similar_to_excludes_the_product(searcher):
    answer = searcher.similar_to("resnet18", "1001", k=5)
    assert len(answer.results) == 5 and "1001" not in [r.id for r in answer.results]
    with pytest.raises(NoProduct):  # a structured store error: 404 in the shop, a sentence in the chat
        searcher.similar_to("resnet18", "nope")


def test_search_with_other_weights_is_refused(indexed_db):
    client = make_client(StoreSettings(path=indexed_db))
    searcher = Searcher(client, build=EmbedderBuilder(weights="random:7", runtime=None))
    with pytest.raises(WeightsMismatch, match="built with weights 'random:0'"):
        searcher.collection("resnet18")


def test_no_index_says_how_to_build_it(tmp_path):
    searcher = Searcher(make_client(StoreSettings(path=tmp_path)), index_hint="python app.py index --catalog X")
    with pytest.raises(NoIndex, match="python app.py index --catalog X"):
        searcher.collection("resnet18")


def _counts(client, model):
    coll = ProductCollection.open(client, model)
    ids = coll.collection.get(include=[])["ids"]
    return len(ids), len(set(ids))


def test_reindex_is_incremental(tmp_path, embedders):
    folder = make_catalog(tmp_path / "cat", per_kind=2)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    e18 = [embedders["resnet18"]]
    first = index_catalog(read_catalog(folder), client, e18, batch_size=4, show_progress_bar=False)
    assert first.indexed == {"resnet18": 12}
    again = index_catalog(read_catalog(folder), client, e18, batch_size=4, show_progress_bar=False)
    assert again.indexed == {"resnet18": 0} and again.unchanged == {"resnet18": 12}
    # change one image, remove one product from styles.csv, empty a field of another
    draw_product(99, (0, 255, 0), "circle").save(folder / "images" / "1001.jpg")
    lines = (folder / "styles.csv").read_text().splitlines(keepends=True)
    lines = [l for l in lines if not l.startswith("1002,")]
    (folder / "styles.csv").write_text("".join(lines))
    third = index_catalog(read_catalog(folder), client, e18, batch_size=4, show_progress_bar=False)
    assert third.indexed == {"resnet18": 1} and third.removed == {"resnet18": 1} and third.unchanged == {"resnet18": 10}
    assert _counts(client, "resnet18") == (11, 11)
    coll = ProductCollection.open(client, "resnet18")
    new_vector = embedders["resnet18"].embed([open_image(folder / "images" / "1001.jpg")])[0]
    assert np.allclose(coll.vector_of("1001"), coll.prepare(new_vector), atol=1e-5)


def test_unreadable_image_is_skipped_with_its_reason(tmp_path, embedders):
    folder = make_catalog(tmp_path / "cat", per_kind=1)
    (folder / "images" / "1002.jpg").write_bytes(b"not a jpeg at all")
    client = make_client(StoreSettings(path=tmp_path / "db"))
    report = index_catalog(read_catalog(folder), client, [embedders["resnet18"]], batch_size=4, show_progress_bar=False)
    assert report.indexed == {"resnet18": 5}
    assert [(s.id, s.reason.split(":")[0]) for s in report.skipped] == [("1002", "unreadable image")]
    assert "1 unreadable image" in report.summary()


def test_interrupted_run_resumes_without_duplicates_or_gaps(tmp_path, embedders):
    folder = make_catalog(tmp_path / "cat", per_kind=3)
    catalog = read_catalog(folder)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    models = list(embedders.values())

    class Killed(Exception):
        pass

    def kill_after_two(batch_number):
        if batch_number == 1:
            raise Killed()

    with pytest.raises(Killed):
        index_catalog(catalog, client, models, batch_size=4, show_progress_bar=False, after_batch=kill_after_two)
    partial = _counts(client, "resnet18")[0]
    assert 0 < partial < 18
    report = index_catalog(catalog, client, models, batch_size=4, show_progress_bar=False)
    assert report.unchanged["resnet18"] == partial
    for model in embedders:
        assert _counts(client, model) == (18, 18)


def _run_app(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_cli_index_then_search_json(tmp_path):
    folder = make_catalog(tmp_path / "cat", per_kind=2)
    db = tmp_path / "db"
    done = _run_app("index", "--catalog", str(folder), "--db", str(db), "--weights", "random",
                    "--models", "resnet18", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "resnet18: indexed 12, unchanged 0, removed 0" in done.stdout
    broken = tmp_path / "broken.jpg"
    broken.write_text("<html>")
    query = folder / "images" / "1001.jpg"
    found = _run_app("search", "--db", str(db), "--weights", "random", "--model", "resnet18", "--json",
                     "--k", "3", "--gender", "women", str(query), str(broken), str(query))
    assert found.returncode == 1
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert [l["query"] for l in lines] == [str(query), str(broken), str(query)]
    assert "error" in lines[1] and "not an image" in lines[1]["error"]
    first = lines[0]
    assert first["model"] == "resnet18" and len(first["results"]) == 3
    assert first["results"][0]["id"] == "1001" and first["results"][0]["score"] > 0.99
    assert set(first["results"][0]) >= {"id", "score", "name", "gender", "masterCategory", "subCategory",
                                        "articleType", "baseColour", "season", "year", "usage", "image"}
    assert all(r["gender"] == "Women" for r in first["results"])
    table = _run_app("search", "--db", str(db), "--weights", "random", "--model", "resnet18",
                     "--where", "baseColour=blak", str(query))
    assert table.returncode == 2 and "closest known: Black" in table.stderr
    left_out = _run_app("search", "--db", str(db), "--weights", "random", "--model", "resnet18", "--json",
                        "--k", "12", "--gender", "women", "--where", "baseColour!=black", str(query))
    results = json.loads(left_out.stdout)["results"]
    assert left_out.returncode == 0 and results and "1001" not in {r["id"] for r in results}
    assert {r["gender"] for r in results} == {"Women"} and "Black" not in {r["baseColour"] for r in results}
    other = _run_app("search", "--db", str(db), "--weights", "random:3", "--model", "resnet18", str(query))
    assert other.returncode == 2 and "built with weights" in other.stderr


@pytest.mark.slow
def test_cli_errors_are_one_clear_line(tmp_path):
    done = _run_app("index", "--catalog", str(tmp_path), "--db", str(tmp_path / "db"), "--weights", "random")
    assert done.returncode == 2 and "no styles.csv" in done.stderr and "Traceback" not in done.stderr
    done = _run_app("search", "--db", str(tmp_path / "empty"), "--weights", "random", "--model", "resnet18", "x.jpg")
    assert done.returncode == 2 and "python app.py index" in done.stderr


def test_centering_spreads_similarities_and_survives_a_kill(tmp_path, embedders):
    """Stored vectors are centered on the collection's mean; a run killed while centering an
    older index finishes the job on the next run."""
    from vectorstore.store import CENTER_KEY
    folder = make_catalog(tmp_path / "cat", per_kind=2)
    catalog = read_catalog(folder)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    embedder = embedders["resnet18"]
    raw = embedder.embed([open_image(p.image) for p in catalog.products])
    index_catalog(catalog, client, [embedder], batch_size=4, show_progress_bar=False)
    coll = ProductCollection.open(client, "resnet18")
    center = raw.mean(axis=0)
    assert np.allclose(coll.center, center, atol=1e-5)
    stored = np.asarray(coll.collection.get(ids=[p.id for p in catalog.products], include=["embeddings"])["embeddings"])
    expected = (raw - center) / np.linalg.norm(raw - center, axis=1, keepdims=True)
    assert np.allclose(stored, expected, atol=1e-4)
    # raw similarities are all near 1 with random weights; centered ones spread out
    assert (raw @ raw.T).min() > 0.9 and (stored @ stored.T).min() < 0.5
    # an index made before centering (no center, no flags) is centered in place, resumably
    legacy = ProductCollection.open(make_client(StoreSettings(path=tmp_path / "legacy")), "resnet18",
                                    weights_id=embedder.weights_id, dim=512, create=True)
    legacy.write([p.id for p in catalog.products], raw, [p.metadata() for p in catalog.products])
    assert legacy.center is None and CENTER_KEY not in legacy.collection.metadata
    assert legacy.ensure_centered() == len(catalog.products)
    assert legacy.ensure_centered() == 0
    again = np.asarray(legacy.collection.get(ids=[p.id for p in catalog.products], include=["embeddings"])["embeddings"])
    assert np.allclose(again, expected, atol=1e-4)


def test_a_table_read_while_another_writer_rebuilds_is_read_again(tmp_path):
    """The size is read before the pages: a rebuild that empties the collection in between and
    ends with as many products as before must not leave the table empty for good (a shop that
    answered nothing after a rebuild by another process)."""
    from vectorstore.metadata import MetadataTable
    coll = ProductCollection.open(make_client(StoreSettings(path=tmp_path)), "resnet18", create=True, dim=4)
    vectors = np.eye(4, dtype=np.float32)[:2]
    metadatas = [{"gender": "Women"}, {"gender": "Men"}]
    coll.write(["1", "2"], vectors, metadatas)
    emptied = []

    def pages_read_during_a_rebuild():
        if not emptied:  # the other writer drops every product between the count and the read
            emptied.append(True)
            coll.delete(["1", "2"])
        yield from coll.metadata_pages()

    table = MetadataTable(pages_read_during_a_rebuild, coll.count)
    assert len(table.frame()) == 0
    coll.write(["1", "2"], vectors, metadatas)  # the rebuild ends: as many products as before
    assert sorted(table.frame(fresh=True).index) == ["1", "2"]


def test_the_metadata_table_and_what_is_derived_from_it_follow_the_collection(tmp_path):
    """One in-memory table per collection: the vocabulary and whatever a surface derives from it
    are built once per load, and again when the collection's size changes."""
    coll = ProductCollection.open(make_client(StoreSettings(path=tmp_path)), "resnet18", create=True, dim=4)
    vectors = np.eye(4, dtype=np.float32)
    coll.write(["1", "2"], vectors[:2], [{"gender": "Women", "baseColour": "Black"},
                                         {"gender": "Men", "baseColour": "Red", "year": 2012}])
    built = []
    derive = lambda frame: built.append(len(frame)) or len(frame)  # noqa: E731
    assert coll.metadata.derived("count", derive) == 2 and coll.metadata.derived("count", derive) == 2
    assert built == [2]  # once per load, however often it is asked for
    assert coll.metadata.vocabulary()["gender"] == ["Men", "Women"]
    assert coll.metadata.record("2") == {"gender": "Men", "baseColour": "Red", "year": 2012}
    coll.write(["3"], vectors[2:3], [{"gender": "Unisex", "baseColour": "Blue"}])
    coll.metadata.frame(fresh=True)  # what a read does once its time to re-check has come
    assert coll.metadata.derived("count", derive) == 3 and built == [2, 3]
    assert coll.metadata.vocabulary()["gender"] == ["Men", "Unisex", "Women"]
    # an embedder's vector and a stored one are searched in their own spaces
    stored = coll.vector_of("3")
    assert coll.search_stored(stored, k=1)[0].id == "3"
    assert coll.search(vectors[2], k=1)[0].id == "3"
