"""Faults: `index` killed with SIGKILL at random points, three times, then run to the end."""
import os
import random
import re
import signal
import subprocess
import sys

import pytest

from catalog import read_catalog
from tests.conftest import ROOT, make_catalog
from vectorstore import ProductCollection, StoreSettings, make_client


def _run_and_kill_at(command, target_fraction: float, env) -> bool:
    """Start `index`, SIGKILL it once its progress bar passes `target_fraction` of its work.

    Killing at a point in the work rather than after a fixed sleep keeps the test meaningful
    on machines of any speed. Returns whether the process was killed before it finished.
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    buffer = b""
    killed = False
    while True:
        chunk = process.stderr.read1(4096)
        if not chunk:
            break
        buffer = (buffer + chunk)[-400:]
        counts = PROGRESS.findall(buffer)
        if counts:
            done, total = map(int, counts[-1])
            if total and done >= max(1, int(total * target_fraction)) and done < total:
                process.send_signal(signal.SIGKILL)
                killed = True
                break
    process.wait()
    return killed


PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


@pytest.mark.slow
def test_index_survives_three_sigkills(tmp_path):
    folder = make_catalog(tmp_path / "cat", per_kind=8)
    (folder / "images" / "1003.jpg").write_bytes(b"\xff\xd8\xff truncated")  # one unreadable image
    db = tmp_path / "db"
    command = [sys.executable, str(ROOT / "app.py"), "index", "--catalog", str(folder), "--db", str(db),
               "--weights", "random", "--models", "resnet18,resnet34", "--batch-size", "4"]
    # Every progress update is printed, so a kill point is never skipped over.
    env = {**os.environ, "TQDM_MININTERVAL": "0"}
    rng = random.Random(7)
    kills = sum(_run_and_kill_at(command, rng.uniform(0.1, 0.6), env) for _ in range(3))
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
    assert "resnet18: indexed 0, unchanged 47, removed 0" in again.stdout
