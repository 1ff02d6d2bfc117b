"""Faults: `index` killed with SIGKILL at random points, three times, then run to the end."""
import random
import signal
import subprocess
import sys

import pytest

from catalog import read_catalog
from tests.conftest import ROOT, make_catalog
from vectorstore import ProductCollection, StoreSettings, make_client

# Indexes with the project's own pipeline, and SIGKILLs itself from the progress callback once
# `fraction` of this run's work is committed: a kill -9 at a chosen point of the work, whatever
# the machine's speed (a kill sent from outside raced a fast machine to the end).
KILLER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from catalog import read_catalog
from embedding import load_embedder
from indexing import index_catalog
from vectorstore import StoreSettings, make_client
folder, db, fraction = sys.argv[2], sys.argv[3], float(sys.argv[4])
start = {}
def kill_midway(done, total):
    start.setdefault("done", done)
    if done < total and done >= start["done"] + max(1, int((total - start["done"]) * fraction)):
        os.kill(os.getpid(), signal.SIGKILL)
embedders = [load_embedder(m, "random") for m in ("resnet18", "resnet34")]
index_catalog(read_catalog(folder), make_client(StoreSettings(path=db)), embedders, batch_size=4,
              show_progress_bar=False, on_progress=kill_midway)
"""


def _run_and_kill_at(folder, db, target_fraction: float) -> bool:
    """Index until `target_fraction` of the remaining work is committed, killed there with
    SIGKILL; returns whether the process died that way (not finished, not failed)."""
    process = subprocess.run([sys.executable, "-c", KILLER, str(ROOT), str(folder), str(db), str(target_fraction)],
                             capture_output=True, timeout=600)
    return process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_index_survives_three_sigkills(tmp_path):
    folder = make_catalog(tmp_path / "cat", per_kind=8)
    (folder / "images" / "1003.jpg").write_bytes(b"\xff\xd8\xff truncated")  # one unreadable image
    db = tmp_path / "db"
    command = [sys.executable, str(ROOT / "app.py"), "index", "--catalog", str(folder), "--db", str(db),
               "--weights", "random", "--models", "resnet18,resnet34", "--batch-size", "4"]
    rng = random.Random(7)
    kills = sum(_run_and_kill_at(folder, db, rng.uniform(0.1, 0.6)) for _ in range(3))
    assert kills == 3, f"only {kills} of 3 runs were killed before they finished"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    indexable = len(read_catalog(folder).products) - 1
    client = make_client(StoreSettings(path=db))
    for model in ("resnet18", "resnet34"):
        ids = ProductCollection.open(client, model).collection.get(include=[])["ids"]
        assert len(ids) == len(set(ids)) == indexable
        assert "1003" not in ids
    assert "1 unreadable image" in done.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert f"resnet18: indexed 0, unchanged {indexable}, removed 0" in again.stdout
