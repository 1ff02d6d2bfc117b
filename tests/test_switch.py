"""Switching a served model's weights and index without a restart (Searcher.switch over
ProductCollection.promote): searches running through the swap all answer, each with one
model's weights and the index they built, and the switch is not starved by a steady stream."""
from __future__ import annotations

import threading

import pytest
from conftest import wait_until

from catalog import open_image, read_catalog
from embedding import load_embedder
from indexing import index_catalog
from search import Searcher
from vectorstore import NoIndex, ProductCollection, StoreSettings, make_client
from vectorstore.store import RETIRED_SLOT


def live_and_tuned(tmp_path, catalog_dir):
    """The catalog indexed live with one set of weights, and in slot "tuned" with another."""
    client = make_client(StoreSettings(path=tmp_path / "db"))
    old, new = load_embedder("resnet18", "random:0"), load_embedder("resnet18", "random:1")
    catalog = read_catalog(catalog_dir)
    index_catalog(catalog, client, [old], batch_size=8, show_progress_bar=False)
    index_catalog(catalog, client, [new], batch_size=8, show_progress_bar=False, slot="tuned")
    return client, old, new, catalog


def test_a_slot_is_promoted_by_renaming_and_the_old_handle_keeps_its_collection(tmp_path, catalog_dir):
    client, old, new, catalog = live_and_tuned(tmp_path, catalog_dir)
    live = ProductCollection.open(client, "resnet18", weights_id="random:0")
    assert ProductCollection.open(client, "resnet18", slot="tuned").weights_id == "random:1"
    ProductCollection.promote(client, "resnet18", "tuned")
    assert ProductCollection.open(client, "resnet18").weights_id == "random:1"
    assert ProductCollection.open(client, "resnet18").count() == len(catalog.products)
    assert ProductCollection.open(client, "resnet18", slot=RETIRED_SLOT).weights_id == "random:0"
    with pytest.raises(NoIndex):
        ProductCollection.open(client, "resnet18", slot="tuned")
    # A search that opened the live handle before goes on with the vectors it started with.
    hit = live.search_stored(live.vector_of(catalog.products[0].id), k=1)
    assert hit[0].id == catalog.products[0].id


def test_searches_running_through_a_switch_all_answer_with_one_models_pair(tmp_path, catalog_dir):
    client, old, new, catalog = live_and_tuned(tmp_path, catalog_dir)
    searcher = Searcher(client, embedders={"resnet18": old})
    photos = [(p.id, open_image(p.image)) for p in catalog.products[:6]]
    failures, firsts, stop = [], [], threading.Event()

    def shopper() -> None:
        while not stop.is_set():
            for product_id, photo in photos:
                try:
                    # Its own catalog photo comes first only when the photo is embedded with the
                    # weights that built the index it is searched in: a mixed pair would lose it.
                    with searcher.steady():
                        vector = searcher.embed("resnet18", [photo])[0]
                        answer = searcher.search_vector("resnet18", vector, k=3)
                    firsts.append(answer.results[0].id == product_id)
                except Exception as exc:  # noqa: BLE001 -- any failure is what the test counts
                    failures.append(repr(exc))
    threads = [threading.Thread(target=shopper) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(firsts) >= 12, 300, "searches before the switch")
        searcher.switch("resnet18", new, "tuned")   # three shoppers never stop: it must not starve
        switched_at = len(firsts)
        wait_until(lambda: len(firsts) >= switched_at + 12, 300, "searches after the switch")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert all(firsts), f"{firsts.count(False)} of {len(firsts)} searches lost their own product"
    assert searcher.embedder("resnet18").weights_id == "random:1"
    assert searcher.collection("resnet18").weights_id == "random:1"
    with pytest.raises(NoIndex):
        ProductCollection.open(client, "resnet18", slot=RETIRED_SLOT)   # dropped once no search held it
