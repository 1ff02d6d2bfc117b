"""Helpers shared by the benchmarks: percentiles, a table printer, a free port."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_CATALOG = ROOT.parent / "shared" / "catalog"


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys), "  ".join("-" * widths[k] for k in keys)]
    lines += ["  ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def add_search_arguments(parser) -> None:
    """The options every search benchmark takes: the store, the model and its weights."""
    parser.add_argument("--db", default="data/chroma")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="auto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
