"""A shop that tunes itself (training/tuning.py, training/background_tune.py): the tuning run on
a generated catalog, its resume after a kill, the switch taken only when the rule says so, the
swap with searches running through it, and what every surface reports."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import free_port, make_catalog, wait_until

from catalog import open_image, read_catalog
from training.tune_state import INDEXING, READY, REJECTED, SWITCHED, TRAINING, TuneState
from training.tuning import MIN_PER_TYPE, SwitchRule, state_path, untunable, work_dir

ROOT = Path(__file__).resolve().parents[1]
MODEL = "efficientnet_lite0"
SMALL = ["--image-size", "64", "--photos", "none", "--runtime", "eager"]


@pytest.fixture(scope="module")
def tunable_catalog(tmp_path_factory) -> Path:
    # 6 kinds x 15 products: the recipe holds out 2 of each, 12 held-out queries in all.
    return make_catalog(tmp_path_factory.mktemp("tune_catalog"), per_kind=MIN_PER_TYPE)


def tune_argv(catalog: Path, db: Path, weights_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "app.py"), "tune", "--catalog", str(catalog), "--db", str(db),
            "--weights-dir", str(weights_dir), "--model", MODEL, *SMALL, *extra]


def test_the_switch_rule_wants_a_gain_on_photos_and_no_loss_elsewhere():
    rule = SwitchRule()
    before = {"p_photo": 0.60, "p_clean": 0.85, "p_real_kind": 0.70}
    assert rule.refuses(before, {"p_photo": 0.80, "p_clean": 0.86, "p_real_kind": 0.71}) is None
    assert rule.refuses(before, {"p_photo": 0.80, "p_clean": 0.845, "p_real_kind": 0.70}) is None  # within 0.01
    assert "shopper-like" in rule.refuses(before, {"p_photo": 0.60, "p_clean": 0.90, "p_real_kind": 0.9})
    assert "catalog shots" in rule.refuses(before, {"p_photo": 0.80, "p_clean": 0.80, "p_real_kind": 0.9})
    # Better on the catalog, worse on the photos people take: kept out (the 0.61 -> 0.32).
    assert "real photos" in rule.refuses(before, {"p_photo": 0.81, "p_clean": 0.86, "p_real_kind": 0.32})
    assert "real photos" in rule.refuses(before, {"p_photo": 0.81, "p_clean": 0.86})  # not scored: not trusted
    assert rule.refuses({"p_photo": 0.6, "p_clean": 0.8}, {"p_photo": 0.7, "p_clean": 0.8}) is None
    assert SwitchRule(min_gain=0.2).refuses(before, {"p_photo": 0.75, "p_clean": 0.9, "p_real_kind": 0.9})


def test_a_catalog_too_small_to_validate_is_not_tuned(tmp_path):
    small = read_catalog(make_catalog(tmp_path / "small", per_kind=MIN_PER_TYPE - 1))
    assert f"at least {MIN_PER_TYPE} products" in untunable(small)
    assert untunable(read_catalog(make_catalog(tmp_path / "big", per_kind=MIN_PER_TYPE))) is None


def test_the_state_file_reads_back_and_says_where_it_is(tmp_path):
    path = tmp_path / "state.json"
    assert TuneState.read(path) is None
    state = TuneState(MODEL, "/shop/catalog", epoch=1, epochs=4, epoch_seconds=420.0).write(path)
    assert TuneState.read(path) == state
    assert state.line() == "learning your catalog: epoch 2 of 4, about 21 minutes left"
    done = state.moved(phase=SWITCHED, before={"p_photo": 0.61, "p_clean": 0.85},
                       after={"p_photo": 0.81, "p_clean": 0.86, "queries": 1218, "k": 5})
    assert done.line() == ("switched to the tuned model: P@5 on shopper-like photos 0.61 -> 0.81, catalog shots "
                           "0.85 -> 0.86 on 1,218 held-out products")
    path.write_text("{not json")
    assert TuneState.read(path) is None   # a damaged state: tuning starts over, nothing breaks


def test_tuning_resumes_after_a_kill_and_builds_its_index_beside_the_live_one(tmp_path, tunable_catalog):
    from vectorstore import NoIndex, ProductCollection, StoreSettings, make_client
    db, weights = tmp_path / "db", tmp_path / "weights"
    state_file = state_path(work_dir(weights), MODEL)
    first = subprocess.Popen(tune_argv(tunable_catalog, db, weights, "--epochs", "2", "--min-gain", "-1",
                                       "--tolerance", "1"), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: (TuneState.read(state_file) or TuneState(MODEL, "")).epoch >= 1, 600,
                   "the first epoch's checkpoint")
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert TuneState.read(state_file).phase == TRAINING
    done = subprocess.run(tune_argv(tunable_catalog, db, weights, "--epochs", "2", "--min-gain", "-1",
                                    "--tolerance", "1"), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr and "1 of 2 epochs done" in done.stderr
    state = TuneState.read(state_file)
    assert state.phase == READY and state.epoch == 2 and state.indexed == state.total == 90
    assert json.loads(done.stdout)["phase"] == READY
    client = make_client(StoreSettings(path=db))
    assert ProductCollection.open(client, MODEL, slot="tuned").count() == 90
    with pytest.raises(NoIndex):
        ProductCollection.open(client, MODEL)  # nothing live was touched: the server promotes it
    # Run again: nothing to do, the state says so.
    again = subprocess.run(tune_argv(tunable_catalog, db, weights, "--epochs", "2"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["phase"] == READY


def _served(tmp_path: Path, catalog: Path):
    """A live ImageNet index of the catalog and a Searcher on it, as serve starts."""
    from embedding.builder import EmbedderBuilder
    from indexing import index_catalog
    from search import Searcher
    from vectorstore import StoreSettings, make_client
    builder = EmbedderBuilder(weights="auto", weights_dir=tmp_path / "weights", runtime=None)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    imagenet = builder.build(MODEL)
    index_catalog(read_catalog(catalog), client, [imagenet], batch_size=16, show_progress_bar=False)
    return builder, Searcher(client, embedders={MODEL: imagenet}), imagenet


def _tuner(tmp_path: Path, catalog: Path, builder, searcher, *rule: str):
    from dataclasses import replace

    from training.background_tune import BackgroundTuner, TunePlan
    folder = work_dir(tmp_path / "weights")
    plan = TunePlan(model=MODEL, catalog=catalog, state_path=state_path(folder, MODEL),
                    command=tuple(tune_argv(catalog, tmp_path / "db", tmp_path / "weights", "--epochs", "1", *rule)),
                    candidate=folder / f"{MODEL}.pt", weights_dir=tmp_path / "weights", log_path=folder / "tune.log")
    return BackgroundTuner(plan, searcher, lambda path: replace(builder, weights=str(path)).build(MODEL),
                           log=lambda line: None)


def test_the_server_switches_to_the_tuned_model_with_searches_running_through_it(tmp_path, tunable_catalog):
    from embedding import tuned_file
    from vectorstore import NoIndex, ProductCollection
    builder, searcher, imagenet = _served(tmp_path, tunable_catalog)
    catalog = read_catalog(tunable_catalog)
    queries = [open_image(p.image) for p in catalog.products[::15]]
    failures, answered, stop = [], [0], threading.Event()

    def shop() -> None:  # a shopper searching all along: every answer must come
        while not stop.is_set():
            for query in queries:
                try:
                    assert len(searcher.search_image(MODEL, query, k=5).results) == 5
                    answered[0] += 1
                except Exception as exc:  # noqa: BLE001 -- any failure is what the test counts
                    failures.append(repr(exc))
    shoppers = [threading.Thread(target=shop) for _ in range(2)]
    for thread in shoppers:
        thread.start()
    tuner = _tuner(tmp_path, tunable_catalog, builder, searcher, "--min-gain", "-1", "--tolerance", "1").start()
    seen = set()
    try:
        wait_until(lambda: (seen.add(tuner.status()) or tuner.wait(0.05)), 900, "the tuning run's end")
        before_end = answered[0]
        wait_until(lambda: answered[0] > before_end + 4, 120, "searches after the switch")
    finally:
        stop.set()
        for thread in shoppers:
            thread.join()
    assert failures == []
    state = tuner.snapshot()
    assert state["phase"] == SWITCHED, state
    assert any(s and s.startswith("Learning your catalog: epoch 1 of 1") for s in seen)
    assert tuner.status().startswith("Switched to the tuned model: P@5 on shopper-like photos")
    # The tuned file is now what --weights auto serves; the live index is the one it built.
    final = tuned_file(MODEL, tmp_path / "weights")
    served = searcher.embedder(MODEL)
    assert final.is_file() and served.weights_id != imagenet.weights_id
    assert served.weights_id == builder.build(MODEL).weights_id  # a restart serves the same
    assert searcher.collection(MODEL).weights_id == served.weights_id
    assert searcher.collection(MODEL).count() == len(catalog.products)
    for slot in ("tuned", "retired"):
        with pytest.raises(NoIndex):
            ProductCollection.open(searcher.client, MODEL, slot=slot)
    first = catalog.products[0]
    assert searcher.search_image(MODEL, open_image(first.image), k=1).results[0].id == first.id


def test_a_tuned_model_that_is_not_better_is_not_switched_to(tmp_path, tunable_catalog):
    from embedding import tuned_file
    from vectorstore import NoIndex, ProductCollection
    builder, searcher, imagenet = _served(tmp_path, tunable_catalog)
    # No model gains a whole 1.0 of P@5: the rule refuses, whatever the run learned.
    tuner = _tuner(tmp_path, tunable_catalog, builder, searcher, "--min-gain", "1").start()
    assert tuner.wait(900)
    state = tuner.snapshot()
    assert state["phase"] == REJECTED and "shopper-like photos" in state["reason"]
    assert tuner.status().startswith("Kept the model served: the tuned one was not better")
    assert searcher.embedder(MODEL).weights_id == imagenet.weights_id
    assert not tuned_file(MODEL, tmp_path / "weights").exists()
    with pytest.raises(NoIndex):
        ProductCollection.open(searcher.client, MODEL, slot="tuned")  # no index built for nothing
    # A restart does not train again: the decision stands for this catalog.
    again = _tuner(tmp_path, tunable_catalog, builder, searcher).start()
    assert again.wait(60) and again.snapshot()["phase"] == REJECTED and again._process is None


def _labels_moved(folder: Path) -> Path:
    """The catalog's own images under other kinds' labels (each kind's rows say what the kind two
    further on is): an index of it answers with the right pictures and the wrong kinds."""
    import conftest
    n = len(conftest.KINDS)   # labels (gender ... colour) of kind i + 2; the picture (rgb, shape) of kind i
    moved = [(*conftest.KINDS[(i + 2) % n][:5], *kind[5:]) for i, kind in enumerate(conftest.KINDS)]
    original, conftest.KINDS = conftest.KINDS, moved
    try:
        return make_catalog(folder, per_kind=MIN_PER_TYPE)
    finally:
        conftest.KINDS = original


def _home_photos(folder: Path, catalog: Path) -> Path:
    """train/ and validation/ class folders of the catalog's shoes and tops, as photos sent in."""
    import shutil
    products = read_catalog(catalog).products
    for split, picked in (("train", products[:1]), ("validation", products[0:30:5])):
        for product in picked:
            kind = "shoes" if product.masterCategory == "Footwear" else "shirt"
            (folder / split / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(product.image, folder / split / kind / f"{product.id}.jpg")
    return folder


def test_the_switch_is_judged_on_real_photos_searched_as_the_shop_searches_them(tmp_path, tunable_catalog):
    from indexing import index_catalog
    from training.photo_check import ServedSearch
    from training.settings import FinetuneSettings
    from training.tuning import TUNED_SLOT, TuneSettings, _checked
    from vectorstore import NoIndex, ProductCollection, StoreSettings, make_client
    builder, searcher, imagenet = _served(tmp_path, tunable_catalog)
    photos = _home_photos(tmp_path / "photos", tunable_catalog)
    settings = TuneSettings(finetune=FinetuneSettings(model=MODEL, catalog=tunable_catalog, out=tmp_path / "c.pt",
                                                      real_photos=(photos,)),
                            store=StoreSettings(path=tmp_path / "db"), builder=builder, served=ServedSearch())
    client, state = searcher.client, TuneState(MODEL, str(tunable_catalog), phase=INDEXING,
                                               before={"p_photo": 0.5, "p_clean": 0.8},
                                               after={"p_photo": 0.6, "p_clean": 0.8, "queries": 12, "k": 5})
    lines = []
    # A tuned index whose answers keep the photos' kind: switched to.
    index_catalog(read_catalog(tunable_catalog), client, [imagenet], batch_size=16, show_progress_bar=False,
                  slot=TUNED_SLOT)
    kept = _checked(settings, client, imagenet, state, lines.append)
    assert kept.phase == READY and TuneState.read(settings.state_path) == kept
    assert kept.before["p_real_served"] == kept.after["p_real_served"] >= 0.8
    assert kept.after["real_served_queries"] == 6 and kept.before["p_photo"] == 0.5   # the run's own figures kept
    assert "real photos' kind as shoppers search them" in kept.line()
    # One that finds the same pictures under the wrong kinds: kept out, its index dropped.
    ProductCollection.drop(client, MODEL, TUNED_SLOT)
    index_catalog(read_catalog(_labels_moved(tmp_path / "moved")), client, [imagenet],
                  batch_size=16, show_progress_bar=False, slot=TUNED_SLOT)
    refused = _checked(settings, client, imagenet, state, lines.append)
    assert refused.phase == REJECTED and refused.after["p_real_served"] < 0.2
    assert refused.reason.startswith("real photos' kind as shoppers search them")
    with pytest.raises(NoIndex):
        ProductCollection.open(make_client(StoreSettings(path=tmp_path / "db")), MODEL, slot=TUNED_SLOT)
    assert searcher.search_image(MODEL, open_image(read_catalog(tunable_catalog).products[0].image)).results
    # Without held-out photos there is nothing to judge by: ready at once.
    plain = TuneSettings(finetune=FinetuneSettings(model=MODEL, catalog=tunable_catalog, out=tmp_path / "c.pt"),
                         store=settings.store, builder=builder, served=ServedSearch())
    assert _checked(plain, client, imagenet, state, lines.append).phase == READY


def _shop(tmp_path: Path, catalog: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (tmp_path / f"shop-{port}.log").open("w")
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "shop", "--catalog", str(catalog), "--db",
                               str(tmp_path / "db"), "--weights-dir", str(tmp_path / "weights"), "--models", MODEL,
                               "--port", str(port), "--quiet", "--runtime", "eager", "--photos", "none", *extra],
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    return server, f"http://127.0.0.1:{port}"


def _health(base: str) -> dict | None:
    try:
        return httpx.get(f"{base}/api/health", timeout=5).json()
    except httpx.HTTPError:
        return None


def test_the_shop_says_what_tuning_does_and_tune_off_does_nothing(tmp_path, tunable_catalog):
    server, base = _shop(tmp_path, tunable_catalog, "--tune-epochs", "1")
    phases = set()
    try:
        def ended():
            health = _health(base)
            tuning = (health or {}).get("tuning")
            if tuning:
                phases.add(tuning["phase"])
                return tuning["phase"] in (SWITCHED, REJECTED) and health
            return None
        health = wait_until(ended, 900, "the background tuning's end", every=0.3)
        assert health["tuning"]["line"].startswith(("switched to the tuned model", "kept the model served"))
        assert TRAINING in phases and health["tuning"]["epochs"] == 1
        page = httpx.get(f"{base}/", timeout=30).text
        assert "the tuned model" in page
        status = subprocess.run([sys.executable, str(ROOT / "app.py"), "tune-status", "--weights-dir",
                                 str(tmp_path / "weights")], capture_output=True, text=True, cwd=tmp_path)
        assert json.loads(status.stdout)["phase"] == health["tuning"]["phase"]
        if health["tuning"]["phase"] == SWITCHED:
            assert INDEXING in phases or READY in phases or SWITCHED in phases
    finally:
        server.terminate()
        server.wait(60)
    off_dir = tmp_path / "off"
    off_dir.mkdir()
    server, base = _shop(off_dir, tunable_catalog, "--tune", "off")
    try:
        health = wait_until(lambda: _health(base), 300, "the shop")
        assert health["tuning"] is None
        assert not (off_dir / "weights" / "tuning").exists()
    finally:
        server.terminate()
        server.wait(60)


def test_a_killed_server_leaves_no_tuning_behind(tmp_path, tunable_catalog):
    # The server is the tuning process's parent; killed, it cannot stop its child, so the child
    # watches it and ends (its checkpoint stays for the next start to resume).
    argv = " ".join(tune_argv(tunable_catalog, tmp_path / "db", tmp_path / "weights", "--epochs", "3"))
    pid_file = tmp_path / "child.pid"
    server = subprocess.Popen(["sh", "-c", f"{argv} --parent $$ & echo $! > {pid_file}; wait"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = state_path(work_dir(tmp_path / "weights"), MODEL)
    wait_until(lambda: TuneState.read(state_file), 300, "the tuning run to start")
    child = int(pid_file.read_text())
    server.kill()
    server.wait()

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie (its new parent has not reaped it yet) has ended too
            return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
        except FileNotFoundError:
            return True
    wait_until(gone, 120, "the orphaned tuning process to end")
