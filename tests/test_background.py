"""Background indexing (indexing/background.py): searches answer while it runs, progress
rises to the total, and a run stopped midway resumes with no duplicates and no gaps."""
from __future__ import annotations

import threading

from catalog import open_image, read_catalog
from indexing import index_catalog
from indexing.background import BackgroundIndexer
from search import Searcher
from vectorstore import ProductCollection, StoreSettings, make_client


class Stop(Exception):
    pass


def test_searches_answer_during_background_indexing_and_progress_reaches_the_total(tmp_path, catalog_dir, embedders):
    catalog = read_catalog(catalog_dir)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    searcher = Searcher(client, embedders=embedders)
    indexer = BackgroundIndexer(catalog, client, [embedders["resnet18"], embedders["resnet50"]], batch_size=4,
                                on_pass_done=searcher.forget_connection, log=lambda line: None)
    # Hold the indexer after its second batch until a search has been answered.
    searched, seen = threading.Event(), []
    original = indexer.progress.update

    def update(**values):
        original(**values)
        if values.get("done", 0) >= 8 and not searched.is_set() and values.get("total"):
            seen.append(indexer.progress.snapshot())
            searched.wait(120)
    indexer.progress.update = update
    indexer.start()
    assert ProductCollection.open(client, "resnet18").count() >= 0   # created before start() returned
    for _ in range(600):
        if seen:
            break
        threading.Event().wait(0.1)
    assert seen and 8 <= seen[0]["done"] < seen[0]["total"] == len(catalog.products)
    query = catalog.products[0]
    answer = searcher.search_image("resnet18", open_image(query.image), k=3)
    assert answer.results and answer.results[0].id == query.id   # among the first batches
    assert "of 24 products indexed (resnet18)" in indexer.progress.line()
    during = indexer.progress.status()  # what the chat and the shop show meanwhile
    assert "of 24 products indexed" in during and "indexed so far" in during
    searched.set()
    assert indexer.wait(300)
    state = indexer.progress.snapshot()
    assert state["finished"] and state["error"] is None and state["done"] == state["total"]
    assert indexer.progress.line() == "all 24 products indexed"
    assert indexer.progress.status() is None  # the pages stop saying anything
    for model in ("resnet18", "resnet50"):
        assert searcher.collection(model).count() == len(catalog.products)
    last = catalog.products[-1]
    assert searcher.search_image("resnet50", open_image(last.image), k=1).results[0].id == last.id


def test_a_stopped_background_run_resumes_exactly(tmp_path, catalog_dir, embedders):
    catalog = read_catalog(catalog_dir)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    # What a kill leaves: the first batches committed, the rest not.
    def stop_after_two(number):
        if number == 1:
            raise Stop()
    try:
        index_catalog(catalog, client, [embedders["resnet18"]], batch_size=4, show_progress_bar=False,
                      after_batch=stop_after_two)
    except Stop:
        pass
    assert ProductCollection.open(client, "resnet18").count() == 8
    indexer = BackgroundIndexer(catalog, client, [embedders["resnet18"]], batch_size=4, log=lambda line: None).start()
    assert indexer.wait(300) and indexer.progress.finished
    report = indexer.progress.reports[0]
    assert report.indexed["resnet18"] == len(catalog.products) - 8 and report.unchanged["resnet18"] == 8
    collection = ProductCollection.open(client, "resnet18")
    assert collection.count() == len(catalog.products)
    assert sorted(collection.stored_digests()) == sorted(p.id for p in catalog.products)


def test_the_status_says_the_truth_during_the_selected_models_only_pass():
    from indexing.background import IndexProgress
    progress = IndexProgress(total=100, done=40, models=("efficientnet_lite0",), passes_left=0)
    assert "40 of 100 products indexed" in progress.status() and "indexed so far" in progress.status()
    assert "whole catalog" not in progress.status()  # one model served: its own pass is the first
    progress.update(first_pass=False, models=("resnet18",))
    assert "The default model searches the whole catalog" in progress.status()
