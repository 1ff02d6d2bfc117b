"""Searches while the shop tunes itself: chat and API latency with no training beside them,
with a fine-tune beside them at the lowest priority (what `serve`/`shop` do: nice 19), and with
the same fine-tune at normal priority (for contrast), in one run.

A shop process (`app.py shop --tune off`, over an existing index) answers; two real fine-tunes
(`app.py finetune`, one under `nice -n 19`, one not) are started and held with SIGSTOP once they
train. Then, round after round, each condition gets its block of requests: idle (both held),
nice 19 (that one running), nice 0 (the other running). Every request is a catalog photo, sent
to POST /api/recommend and to the chat's own API event (Gradio's `recommend`, the chat's search
path), one after the other, the chat paced under its upload limit (30 a minute).

    python bench/tune_beside.py --db data/chroma --catalog ../shared/catalog
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.common import DEFAULT_CATALOG, free_port, pct, table  # noqa: E402

CONDITIONS = ("idle", "training at nice 19", "training at nice 0")


def start_shop(args, port: int, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "shop", "--catalog", "", "--db", args.db,
                             "--weights", "imagenet", "--models", args.model, "--model", args.model, "--tune", "off",
                             "--port", str(port), "--quiet"], stdout=log, stderr=subprocess.STDOUT)


def start_trainer(args, out: Path, nice: int) -> tuple[subprocess.Popen, Path]:
    log = out.with_suffix(".log")
    command = [sys.executable, str(ROOT / "app.py"), "finetune", "--catalog", args.catalog, "--model", args.model,
               "--out", str(out), "--limit", str(args.train_limit), "--epochs", "100", "--photos", "none", "--quiet"]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True), log


def wait_for(condition, what: str, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def hold(process: subprocess.Popen, running: bool) -> None:
    os.killpg(process.pid, signal.SIGCONT if running else signal.SIGSTOP)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="an index of --model with ImageNet weights")
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-block", type=int, default=10, help="photos per condition and round (each sent to both)")
    parser.add_argument("--train-limit", type=int, default=1500, help="products the fine-tunes beside train on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import httpx
    from gradio_client import Client, handle_file
    photos = sorted((Path(args.catalog) / "images").glob("*.jpg"))
    queries = random.Random(args.seed).sample(photos, args.rounds * args.per_block * len(CONDITIONS) + 2)
    work = Path(tempfile.mkdtemp(prefix="tune_beside_"))
    port = free_port()
    shop = start_shop(args, port, (work / "shop.log").open("w"))
    trainers = {}
    times = {(c, s): [] for c in CONDITIONS for s in ("API", "chat")}
    try:
        base = f"http://127.0.0.1:{port}"
        api = httpx.Client(base_url=base, timeout=120)
        wait_for(lambda: _ready(api), "the shop")
        chat = Client(f"{base}/assistant/", verbose=False)
        for nice in (19, 0):
            trainers[nice] = start_trainer(args, work / f"nice{nice}.pt", nice)
        for nice, (process, log) in trainers.items():
            wait_for(lambda p=process, f=log: "epoch 0 (start)" in f.read_text() or p.poll() is not None,
                     f"the nice {nice} fine-tune to train")
            if process.poll() is not None:
                raise SystemExit(f"the nice {nice} fine-tune ended: {log.read_text()[-500:]}")
            hold(process, False)
        for photo in queries[:2]:  # first-call costs, not counted
            _ask(api, chat, handle_file, photo, args.model)
        print(f"shop ready; {args.rounds} rounds x {args.per_block} photos per condition, each to the API and "
              f"the chat; fine-tunes beside on {args.train_limit} products; {os.cpu_count()} CPUs", flush=True)
        at = 2
        for _ in range(args.rounds):
            for condition in CONDITIONS:
                running = {19: condition.endswith("19"), 0: condition.endswith(" 0")}
                for nice, (process, _) in trainers.items():
                    hold(process, running[nice])
                time.sleep(2.0)  # the trainer back at full speed (or the cores quiet) before timing
                for photo in queries[at:at + args.per_block]:
                    api_ms, chat_ms = _ask(api, chat, handle_file, photo, args.model)
                    times[(condition, "API")].append(api_ms)
                    times[(condition, "chat")].append(chat_ms)
                at += args.per_block
        for process, _ in trainers.values():
            hold(process, False)
    finally:
        for process, _ in trainers.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shop.terminate()
        try:
            shop.wait(30)
        except subprocess.TimeoutExpired:  # the chat client's open stream holds uvicorn's graceful stop
            shop.kill()
            shop.wait()
    rows = []
    for surface in ("API", "chat"):
        idle = pct(times[("idle", surface)], 50)
        for condition in CONDITIONS:
            ms = times[(condition, surface)]
            rows.append({"surface": surface, "beside": condition, "requests": len(ms), "p50 ms": f"{pct(ms, 50):.0f}",
                         "p95 ms": f"{pct(ms, 95):.0f}", "p50 vs idle": f"{pct(ms, 50) / idle:.2f}x"})
    print(table(rows))
    return 0


def _ready(api) -> bool:
    import httpx
    try:
        return bool(api.get("/api/health").json()["assistant"])
    except (httpx.HTTPError, ValueError, KeyError):
        return False


# The chat takes at most 30 uploads a minute from one client (assistant/gate.py): one every 2 s.
UPLOAD_INTERVAL_S = 2.1
_last_upload = [0.0]


def _ask(api, chat, handle_file, photo: Path, model: str) -> tuple[float, float]:
    time.sleep(max(0.0, _last_upload[0] + UPLOAD_INTERVAL_S - time.monotonic()))
    _last_upload[0] = time.monotonic()
    started = time.perf_counter()
    response = api.post("/api/recommend", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
                        data={"model": model, "k": "5"})
    api_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"API {photo.name}: HTTP {response.status_code} {response.text[:200]}")
    started = time.perf_counter()
    answer = chat.predict(handle_file(str(photo)), model, 5, "", "", api_name="/recommend")
    chat_ms = (time.perf_counter() - started) * 1000
    if not answer.get("results"):
        raise SystemExit(f"chat {photo.name}: {answer}")
    return api_ms, chat_ms


if __name__ == "__main__":
    sys.exit(main())
