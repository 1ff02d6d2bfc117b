"""Faults: `index` killed with SIGKILL at random points, three times, then run to the end."""
import random
import signal
import subprocess
import sys
import time

from catalog import read_catalog
from tests.conftest import ROOT, make_catalog
from vectorstore import ProductCollection, StoreSettings, make_client


def test_index_survives_three_sigkills(tmp_path):
    folder = make_catalog(tmp_path / "cat", per_kind=8)
    (folder / "images" / "1003.jpg").write_bytes(b"\xff\xd8\xff truncated")  # one unreadable image
    db = tmp_path / "db"
    command = [sys.executable, str(ROOT / "app.py"), "index", "--catalog", str(folder), "--db", str(db),
               "--weights", "random", "--models", "resnet18,resnet34", "--batch-size", "4", "--quiet"]
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(4.0, 12.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 1, "the run finished before any kill: make the catalog larger"
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
    assert "resnet18: indexed 0, unchanged 47, removed 0" in again.stdout
