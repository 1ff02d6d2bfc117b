"""The Ray engine against a real local Ray (2 CPUs) and a real `chroma run`: the index it
builds equals the single-process one, and a run killed mid-way resumes to the exact index."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from catalog import read_catalog
from indexing import index_catalog
from tests.conftest import ROOT, draw_product, make_catalog
from vectorstore import ProductCollection, StoreSettings, make_client
from vectorstore.store import CENTER_KEY

ray = pytest.importorskip("ray", reason="the Ray engine's tests need requirements-ray.txt")
from indexing.ray_engine import RaySettings, index_catalog_ray  # noqa: E402

MODELS = ("resnet18", "resnet50")


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module; its address lets a subprocess join it."""
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def awkward_catalog(folder):
    """Every path the indexer treats specially: a row without an image, an unreadable image."""
    folder = make_catalog(folder, per_kind=3, extra_rows="9001,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,No image\n")
    (folder / "images" / "1003.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return folder


def snapshot(client, model):
    """Everything a collection holds, by id: (vector, metadata), plus its own metadata."""
    coll = ProductCollection.open(client, model)
    got = coll.collection.get(include=["embeddings", "metadatas"])
    records = {pid: (np.asarray(v, dtype=np.float32), m) for pid, v, m in zip(got["ids"], got["embeddings"], got["metadatas"])}
    assert len(records) == len(got["ids"]), "duplicate ids"
    return records, dict(coll.collection.metadata or {})


def assert_same_index(client_a, client_b, models):
    for model in models:
        (a, meta_a), (b, meta_b) = snapshot(client_a, model), snapshot(client_b, model)
        assert sorted(a) == sorted(b)
        for pid in a:
            np.testing.assert_allclose(a[pid][0], b[pid][0], atol=1e-5, err_msg=f"{model} {pid}")
            assert a[pid][1] == b[pid][1], f"{model} {pid}"
        centers = [np.frombuffer(__import__("base64").b64decode(m[CENTER_KEY]), dtype=np.float32) for m in (meta_a, meta_b)]
        np.testing.assert_allclose(*centers, atol=1e-5)
        assert {k: v for k, v in meta_a.items() if k != CENTER_KEY} == {k: v for k, v in meta_b.items() if k != CENTER_KEY}


def same_report(ray_report, reference):
    assert ray_report.indexed == reference.indexed
    assert ray_report.unchanged == reference.unchanged
    assert ray_report.removed == reference.removed
    assert sorted((s.id, s.reason) for s in ray_report.skipped) == sorted((s.id, s.reason) for s in reference.skipped)
    assert ray_report.images == reference.images


def test_ray_index_equals_the_single_process_index(local_ray, chroma_server, tmp_path, embedders):
    folder = awkward_catalog(tmp_path / "cat")
    chosen = [embedders[m] for m in MODELS]
    reference_client = make_client(StoreSettings(path=tmp_path / "reference"))
    ray_settings = RaySettings(workers=2, batch_size=4)

    def both_engines():
        catalog = read_catalog(folder)
        reference = index_catalog(catalog, reference_client, chosen, batch_size=4, show_progress_bar=False)
        built = index_catalog_ray(catalog, chroma_server, chosen, weights="random", settings=ray_settings,
                                  show_progress_bar=False)
        return built, reference

    built, reference = both_engines()
    same_report(built, reference)
    assert built.indexed == {m: len(read_catalog(folder).products) - 1 for m in MODELS}
    assert "unreadable image" in built.summary() and "1003" in built.summary()
    assert_same_index(make_client(chroma_server), reference_client, MODELS)

    # Incremental: one image changed, one product gone, one new; both engines agree again.
    draw_product(77, (200, 200, 20), "circle").save(folder / "images" / "1002.jpg", quality=90)
    lines = (folder / "styles.csv").read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("1004,")]
    shutil.copy(folder / "images" / "1005.jpg", folder / "images" / "1200.jpg")
    kept.append("1200,Women,Footwear,Shoes,Heels,Black,Summer,2015,Casual,Brand9 Women Black Heels\n")
    (folder / "styles.csv").write_text("".join(kept))
    built, reference = both_engines()
    same_report(built, reference)
    assert built.indexed == {m: 2 for m in MODELS} and built.removed == {m: 1 for m in MODELS}
    assert_same_index(make_client(chroma_server), reference_client, MODELS)

    # Current: nothing embedded; only the unreadable image is tried again, by both.
    built, reference = both_engines()
    same_report(built, reference)
    assert built.indexed == {m: 0 for m in MODELS} and built.images == 1


def test_ray_indexes_a_lancedb_store_as_the_single_process_does(local_ray, tmp_path, embedders):
    folder = awkward_catalog(tmp_path / "cat")
    catalog = read_catalog(folder)
    chosen = [embedders[m] for m in MODELS]
    lance = StoreSettings(path=tmp_path / "lance", engine="lancedb")
    reference_client = make_client(StoreSettings(path=tmp_path / "reference", engine="lancedb"))
    built = index_catalog_ray(catalog, lance, chosen, weights="random", settings=RaySettings(workers=2, batch_size=4),
                              show_progress_bar=False)
    reference = index_catalog(catalog, reference_client, chosen, batch_size=4, show_progress_bar=False)
    same_report(built, reference)
    for model in MODELS:
        a, b = ProductCollection.open(make_client(lance), model), ProductCollection.open(reference_client, model)
        assert a.stored_records().keys() == b.stored_records().keys()
        ids = sorted(b.stored_records())
        va, vb = a.vectors_of(ids), b.vectors_of(ids)
        for pid in ids:
            np.testing.assert_allclose(va[pid], vb[pid], atol=1e-5, err_msg=f"{model} {pid}")
        np.testing.assert_allclose(a.center, b.center, atol=1e-5)
        assert a.weights_id == b.weights_id


def _count(client, model) -> int:
    try:
        return ProductCollection.open(client, model).count()
    except Exception:  # not created yet, or the server busy
        return 0


def test_a_killed_ray_run_resumes_to_the_exact_index(local_ray, chroma_server, tmp_path, embedders):
    folder = make_catalog(tmp_path / "cat", per_kind=16)
    total = len(read_catalog(folder).products)
    command = [sys.executable, str(ROOT / "app.py"), "index", "--catalog", str(folder), "--engine", "ray",
               "--chroma-host", chroma_server.host, "--chroma-port", str(chroma_server.port),
               "--weights", "random", "--models", "resnet18", "--batch-size", "4", "--quiet"]
    # The first run starts its own local Ray; killed as a process group, its Ray dies with it
    # (as on a crashed machine), whatever it had in flight.
    log = tmp_path / "first-run.log"
    first = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                             start_new_session=True)
    client = make_client(chroma_server)
    at_kill = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        at_kill = _count(client, "resnet18")
        if at_kill >= 8:  # a few whole batches are in: kill now, mid-way
            os.killpg(first.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    first.wait(30)
    assert first.returncode == -signal.SIGKILL, f"the first run was not killed mid-way: {log.read_text()[-2000:]}"
    assert 0 < at_kill < total
    time.sleep(2)
    written = _count(client, "resnet18")
    assert written < total, "the killed run went on writing"
    assert written % 4 == 0, "a batch was committed in part"

    # The rerun joins a running cluster (--ray-address) and does only what is missing.
    done = subprocess.run([*command, "--ray-address", local_ray], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resnet18: indexed {total - written}, unchanged {written}, removed 0" in done.stdout

    reference_client = make_client(StoreSettings(path=tmp_path / "reference"))
    index_catalog(read_catalog(folder), reference_client, [embedders["resnet18"]], batch_size=4, show_progress_bar=False)
    assert_same_index(client, reference_client, ["resnet18"])
    again = subprocess.run([*command, "--ray-address", local_ray], capture_output=True, text=True, timeout=600)
    assert f"resnet18: indexed 0, unchanged {total}, removed 0" in again.stdout


def test_ray_engine_needs_a_chroma_server(tmp_path, catalog_dir):
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "index", "--catalog", str(catalog_dir), "--engine", "ray",
                           "--db", str(tmp_path / "db"), "--weights", "random", "--models", "resnet18"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "--engine ray writes from Ray workers into a Chroma server" in done.stderr


def test_the_default_engine_never_imports_ray(tmp_path, catalog_dir):
    script = ("import sys, app; code = app.main(['index', '--catalog', sys.argv[1], '--db', sys.argv[2], "
              "'--weights', 'random', '--models', 'resnet18', '--quiet', '--limit', '4']); "
              "assert code == 0; assert 'ray' not in sys.modules, 'ray was imported'; print('ok')")
    done = subprocess.run([sys.executable, "-c", script, str(catalog_dir), str(tmp_path / "db")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
