"""The main job from a shop's point of view: `bash scripts/serve.sh` on an empty index, timed.

    python -m bench.serve_start [--catalog ../shared/catalog] [--runtime-cache DIR]

Starts `scripts/serve.sh` (the README's main command, the environment already installed) with
a fresh index folder and prints, in seconds from the start:
  page      the chat's page answers;
  answer    the first search answered with products (the chat's API event, a catalog photo,
            asked again each second until it finds some): from what is indexed so far, since
            indexing runs in the background;
  indexed   the selected model's whole catalog indexed (its pass's report on stderr).
`--runtime-cache` points the int8 cache at a folder (an empty one: the first start on a new
machine, which builds the int8 model; the default: the machine's cache, a later start).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import DEFAULT_CATALOG, ROOT, free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--runtime-cache", help="the int8 models' cache folder (default: the machine's)")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    photo = next(iter(sorted((Path(args.catalog) / "images").glob("*.jpg"))))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="serve-start-") as tmp:
        command = ["bash", str(ROOT / "scripts" / "serve.sh"), "--db", str(Path(tmp) / "db"), "--port", str(port),
                   "--quiet"]
        if args.runtime_cache:
            command += ["--runtime-cache", args.runtime_cache]
        env = {**os.environ, "CATALOG": args.catalog}
        started = time.perf_counter()
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        marks: dict[str, float] = {}
        lines: list[str] = []

        def read_stderr():
            for line in server.stderr:
                lines.append(line.rstrip())
                # the selected model's pass ends with its report: "<model>: indexed N, unchanged M, ..."
                if "indexed" not in marks and re.match(r"^\S+: indexed \d+, unchanged \d+", line):
                    marks["indexed"] = time.perf_counter() - started
        threading.Thread(target=read_stderr, daemon=True).start()
        try:
            from gradio_client import Client, handle_file
            url = f"http://127.0.0.1:{port}/"
            client = None
            while time.perf_counter() - started < args.timeout and server.poll() is None:
                try:
                    client = Client(url, verbose=False)
                    marks["page"] = time.perf_counter() - started
                    break
                except Exception:
                    time.sleep(0.5)
            if client is None:
                print("\n".join(lines[-20:]), file=sys.stderr)
                return 1
            found, first_reply = 0, None
            while not found and time.perf_counter() - started < args.timeout and server.poll() is None:
                answer = client.predict(handle_file(str(photo)), "", 5, "", "", api_name="/recommend")
                first_reply = first_reply or answer
                found = len(answer.get("results") or []) if isinstance(answer, dict) else 0
                if not found:
                    time.sleep(1)
            marks["answer"] = time.perf_counter() - started
            while "indexed" not in marks and time.perf_counter() - started < args.timeout and server.poll() is None:
                time.sleep(1)
        finally:
            server.terminate()
            server.wait(60)
    print(f"bash scripts/serve.sh, fresh index, catalog {args.catalog}, {os.cpu_count()} CPUs, "
          f"int8 cache {args.runtime_cache or 'the machine s'}")
    for line in lines:
        if "runtime" in line or "selected" in line or "images in" in line:
            print("  " + line)
    for name in ("page", "answer", "indexed"):
        print(f"{name:8s} {marks.get(name, float('nan')):7.1f} s")
    print(f"first answer: {found} products; the first reply of all: {str(first_reply)[:160]}")
    return 0 if "indexed" in marks else 1


if __name__ == "__main__":
    sys.exit(main())
