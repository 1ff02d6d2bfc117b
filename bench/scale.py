"""One Chroma server at catalog scale: fill it with N synthetic products and measure what a shop
would feel. Runs a real `chroma run` (data in a temp folder) and the project's own write and
search paths (`ProductCollection.write`, `ProductCollection.search` with the chat's filters).

    python -m bench.scale --n 1000000 [--dim 512] [--extra-dims 1280,2048 --extra-n 100000]
                          [--queries 200] [--budget-min 25] [--catalog ../shared/catalog]

Prints, per size and dimension: upsert throughput, the server's RSS and disk, the time to the
first answer after a restart, query p50/p95 and recall@5 against exact search (unfiltered and
with gender / category / colour filters), and the memory of the project's in-memory metadata
table; then the cost per million products. `--budget-min` stops the fill at that many minutes
(the figures are then for the size reached, and say so).

Vectors are synthetic but clustered like CNN features (article type, colour, gender and style
directions plus noise), because HNSW's recall on uniformly random vectors says nothing about
real ones. Metadata follows a fashion catalog's mix (hand-set shares below), or, with
`--catalog`, rows sampled from that catalog's styles.csv. Exact search (numpy) is kept as a
running top-5 while filling, so the ground truth never needs every vector in memory.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import free_port, pct, table
from vectorstore import Filters, ProductCollection, StoreSettings, make_client
from vectorstore.filters import CATEGORY

K = 5
# Approximate shares of a fashion marketplace's catalog, set by hand.
GENDERS = {"Men": .50, "Women": .42, "Unisex": .05, "Boys": .02, "Girls": .01}
ARTICLES = [  # (masterCategory, subCategory, articleType, share)
    ("Apparel", "Topwear", "Tshirts", .16), ("Apparel", "Topwear", "Shirts", .07), ("Apparel", "Topwear", "Kurtas", .04),
    ("Apparel", "Topwear", "Tops", .04), ("Apparel", "Topwear", "Sweatshirts", .01), ("Apparel", "Bottomwear", "Jeans", .02),
    ("Apparel", "Bottomwear", "Trousers", .01), ("Apparel", "Bottomwear", "Shorts", .01), ("Apparel", "Dress", "Dresses", .01),
    ("Apparel", "Innerwear", "Briefs", .02), ("Apparel", "Innerwear", "Bra", .01), ("Apparel", "Saree", "Sarees", .01),
    ("Footwear", "Shoes", "Casual Shoes", .06), ("Footwear", "Shoes", "Sports Shoes", .04), ("Footwear", "Shoes", "Heels", .03),
    ("Footwear", "Shoes", "Formal Shoes", .01), ("Footwear", "Shoes", "Flats", .01), ("Footwear", "Flip Flops", "Flip Flops", .02),
    ("Footwear", "Sandal", "Sandals", .02), ("Accessories", "Watches", "Watches", .06), ("Accessories", "Bags", "Handbags", .04),
    ("Accessories", "Bags", "Backpacks", .01), ("Accessories", "Wallets", "Wallets", .02), ("Accessories", "Belts", "Belts", .02),
    ("Accessories", "Eyewear", "Sunglasses", .02), ("Accessories", "Jewellery", "Earrings", .01), ("Accessories", "Socks", "Socks", .02),
    ("Accessories", "Headwear", "Caps", .01), ("Personal Care", "Fragrance", "Perfume and Body Mist", .02),
    ("Personal Care", "Lips", "Lipstick", .01), ("Personal Care", "Nails", "Nail Polish", .01),
    ("Sporting Goods", "Sports Equipment", "Footballs", .001), ("Free Items", "Free Gifts", "Free Gifts", .002),
]
COLOURS = {"Black": .18, "White": .12, "Blue": .11, "Brown": .08, "Grey": .06, "Red": .06, "Green": .05, "Pink": .04,
           "Navy Blue": .04, "Purple": .04, "Silver": .03, "Yellow": .03, "Beige": .02, "Gold": .02, "Maroon": .02,
           "Orange": .02, "Olive": .02, "Multi": .02, "Cream": .02, "Steel": .02, "Teal": .01, "Peach": .01}
SEASONS = {"Summer": .48, "Fall": .26, "Winter": .19, "Spring": .07}
USAGES = {"Casual": .78, "Sports": .09, "Ethnic": .07, "Formal": .05, "Party": .01}
# The chat's filters (vectorstore/filters.py): gender, category (any category level), colour.
CASES = [("unfiltered", Filters()),
         ("gender=Women", Filters({"gender": ("Women",)})),
         ("category=Footwear", Filters({CATEGORY: ("Footwear",)})),
         ("colour=Black", Filters({"baseColour": ("Black",)})),
         ("Women+Footwear+Black", Filters({"gender": ("Women",), CATEGORY: ("Footwear",), "baseColour": ("Black",)})),
         ("Men+Watches+Silver", Filters({"gender": ("Men",), CATEGORY: ("Watches",), "baseColour": ("Silver",)}))]


def _weights(shares) -> np.ndarray:
    w = np.asarray(list(shares), dtype=float)
    return w / w.sum()


class Catalogue:
    """Seeded synthetic products: metadata rows and their vectors, batch by batch."""

    def __init__(self, dim: int, n: int, seed: int = 0, rows: list[dict] | None = None):
        self.dim, self.rng = dim, np.random.default_rng(seed)
        self.rows = rows  # sampled real metadata, or None for the hand-set mix
        basis = np.random.default_rng(1234 + dim)
        unit = lambda m: _unit(basis.normal(size=(m, dim)).astype(np.float32))  # noqa: E731
        articles = sorted({r["articleType"] for r in rows} if rows else {a[2] for a in ARTICLES})
        colours = sorted({r.get("baseColour") or "" for r in rows} if rows else COLOURS)
        self.article_dir = dict(zip(articles, unit(len(articles))))
        self.colour_dir = dict(zip(colours, unit(len(colours))))
        self.gender_dir = dict(zip(sorted({r.get("gender") or "" for r in rows} if rows else GENDERS), unit(8)))
        # Styles: many small groups (a model in several sizes or prints) give the near neighbours
        # a shopper's photo should find.
        self.styles = unit(max(64, n // 40))

    def metadata(self, count: int) -> list[dict]:
        rng = self.rng
        if self.rows:
            picks = rng.integers(0, len(self.rows), size=count)
            return [dict(self.rows[i]) for i in picks]
        arts = rng.choice(len(ARTICLES), size=count, p=_weights(a[3] for a in ARTICLES))
        out = []
        for a, g, c, s, u, y in zip(arts, rng.choice(list(GENDERS), size=count, p=_weights(GENDERS.values())),
                                    rng.choice(list(COLOURS), size=count, p=_weights(COLOURS.values())),
                                    rng.choice(list(SEASONS), size=count, p=_weights(SEASONS.values())),
                                    rng.choice(list(USAGES), size=count, p=_weights(USAGES.values())),
                                    rng.integers(2008, 2019, size=count)):
            master, sub, article, _ = ARTICLES[a]
            out.append({"gender": str(g), "masterCategory": master, "subCategory": sub, "articleType": article,
                        "baseColour": str(c), "season": str(s), "year": int(y), "usage": str(u),
                        "name": f"Brand{int(y) % 97} {g} {c} {article}"})
        return out

    def vectors(self, metas: list[dict]) -> np.ndarray:
        n = len(metas)
        v = np.stack([self.article_dir[m["articleType"]] + 0.45 * self.colour_dir[m.get("baseColour") or ""]
                      + 0.25 * self.gender_dir[m.get("gender") or ""] for m in metas])
        v += 0.55 * self.styles[self.rng.integers(0, len(self.styles), size=n)]
        v += self.rng.normal(scale=0.45 / np.sqrt(self.dim), size=v.shape).astype(np.float32)
        return _unit(v)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def catalog_rows(folder: str) -> list[dict]:
    from catalog import read_catalog
    return [p.metadata() for p in read_catalog(folder).products]


@dataclass
class ExactTopK:
    """Running exact top-k per filter case, fed batch by batch (the ground truth)."""
    queries: np.ndarray
    scores: dict = field(default_factory=dict)
    ids: dict = field(default_factory=dict)

    def add(self, ids: np.ndarray, vectors: np.ndarray, masks: dict[str, np.ndarray]) -> None:
        sims = self.queries @ vectors.T
        for case, mask in masks.items():
            s = np.where(mask[None, :], sims, -np.inf)
            top = np.argpartition(-s, min(K, s.shape[1] - 1), axis=1)[:, :K]
            cand_s = np.concatenate([self.scores.get(case, np.full((len(s), 0), -np.inf)), np.take_along_axis(s, top, 1)], 1)
            cand_i = np.concatenate([self.ids.get(case, np.zeros((len(s), 0), dtype=object)), ids[top]], 1)
            best = np.argsort(-cand_s, axis=1, kind="stable")[:, :K]
            self.scores[case], self.ids[case] = np.take_along_axis(cand_s, best, 1), np.take_along_axis(cand_i, best, 1)

    def truth(self, case: str, q: int) -> set:
        return {i for i, s in zip(self.ids[case][q], self.scores[case][q]) if np.isfinite(s)}


# -- the server ------------------------------------------------------------------------------
CHROMA = Path(sys.executable).with_name("chroma")


def start_server(path: Path, port: int) -> tuple[subprocess.Popen, float]:
    """`chroma run` niced like the bench; returns it and the seconds until its port answered."""
    started = time.perf_counter()
    process = subprocess.Popen([str(CHROMA), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    while time.perf_counter() - started < 120:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("chroma run did not start")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_bytes(pid: int) -> int:
    """RSS of a process and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MB"


# -- one measurement -----------------------------------------------------------------------
def fill(coll: ProductCollection, gen: Catalogue, n: int, batch: int, exact: ExactTopK, budget_s: float, label: str) -> tuple[int, float]:
    """Write up to n products through the project's write path; returns (written, seconds)."""
    written, started, last = 0, time.perf_counter(), time.perf_counter()
    while written < n and time.perf_counter() - started < budget_s:
        count = min(batch, n - written)
        metas = gen.metadata(count)
        ids = np.asarray([f"p{written + i}" for i in range(count)], dtype=object)
        vectors = gen.vectors(metas)
        for m, pid in zip(metas, ids):  # what the indexer stores beside the catalog's fields
            m["digest"] = f"{hash(pid) & (2**160 - 1):040x}"
            m["image"] = f"/srv/catalog/images/{pid[1:]}.jpg"
        coll.write(list(ids), vectors, metas)
        exact.add(ids, vectors, {name: _mask(f, metas) for name, f in CASES})
        written += count
        if time.perf_counter() - last > 60 or written == n:
            rate = written / (time.perf_counter() - started)
            print(f"  [{label}] {written:,} written, {rate:,.0f}/s", file=sys.stderr, flush=True)
            last = time.perf_counter()
    return written, time.perf_counter() - started


def _mask(filters: Filters, metas: list[dict]) -> np.ndarray:
    if filters.is_empty():
        return np.ones(len(metas), dtype=bool)
    import pandas as pd
    return filters.mask(pd.DataFrame(metas))


def query_rows(coll: ProductCollection, exact: ExactTopK, label: str) -> list[dict]:
    rows = []
    table_ = coll.metadata.frame()
    for name, filters in CASES:
        matching = len(table_) if filters.is_empty() else int(filters.mask(table_).sum())
        times, recalls = [], []
        for q, vector in enumerate(exact.queries):
            started = time.perf_counter()
            got = [h.id for h in coll.search_stored(vector, k=K, filters=filters)]
            times.append(time.perf_counter() - started)
            truth = exact.truth(name, q)
            recalls.append(len(set(got) & truth) / max(1, len(truth)))
        rows.append({"size": label, "filter": name, "matching": f"{matching:,}", "p50 ms": f"{pct(times, 50) * 1000:.1f}",
                     "p95 ms": f"{pct(times, 95) * 1000:.1f}", "recall@5": f"{np.mean(recalls):.3f}"})
    return rows


def rss_self() -> int:
    return rss_bytes(os.getpid())


def measure(dim: int, n: int, args, rows: list[dict] | None) -> tuple[dict, list[dict]]:
    gen = Catalogue(dim, n, seed=dim, rows=rows)
    query_gen = Catalogue(dim, n, seed=10_000 + dim, rows=rows)
    query_gen.styles = gen.styles  # same world, products the shop does not hold
    exact = ExactTopK(query_gen.vectors(query_gen.metadata(args.queries)))
    with tempfile.TemporaryDirectory(prefix="scale-", dir=args.tmp) as tmp:
        path, port = Path(tmp) / "chroma", free_port()
        server, _ = start_server(path, port)
        try:
            client = make_client(StoreSettings(host="127.0.0.1", port=port))
            empty_rss = rss_bytes(server.pid)
            coll = ProductCollection.open(client, f"scale{dim}", dim=dim, create=True)
            written, seconds = fill(coll, gen, n, args.batch, exact, args.budget_min * 60, f"{dim}-d")
            time.sleep(2)  # let the server settle its writes before its memory is read
            filled_rss = rss_bytes(server.pid)
        finally:
            stop_server(server)
        disk = disk_bytes(path)
        # A restart: the time until the port answers, then until the first query is answered
        # (the HNSW index loads on first use), then the project's metadata table.
        server, start_s = start_server(path, port)
        try:
            client = make_client(StoreSettings(host="127.0.0.1", port=port))
            started = time.perf_counter()
            coll = ProductCollection.open(client, f"scale{dim}")
            coll.collection.query(query_embeddings=exact.queries[:1], n_results=K, include=["distances"])
            first_query_s = time.perf_counter() - started
            before = rss_self()
            started = time.perf_counter()
            table_ = coll.metadata.frame()
            table_s = time.perf_counter() - started
            table_rss = rss_self() - before
            frame_bytes = int(table_.memory_usage(deep=True).sum())
            label = f"{written:,} x {dim}-d"
            rows_out = query_rows(coll, exact, label)
            served_rss = rss_bytes(server.pid)
        finally:
            stop_server(server)
    summary = {"dim": dim, "products": f"{written:,}", "fill s": f"{seconds:.0f}", "upsert/s": f"{written / seconds:,.0f}",
               "server RSS filled": _mb(filled_rss), "server RSS serving": _mb(served_rss),
               "empty server RSS": _mb(empty_rss), "disk": _mb(disk),
               "restart: port s": f"{start_s:.1f}", "first query s": f"{first_query_s:.2f}",
               "table load s": f"{table_s:.1f}", "table RSS": _mb(table_rss), "DataFrame": _mb(frame_bytes),
               "_written": written, "_seconds": seconds, "_rss": max(filled_rss, served_rss) - empty_rss, "_disk": disk,
               "_table": table_rss}
    return summary, rows_out


def per_million(s: dict) -> dict:
    f = 1e6 / s["_written"]
    return {"dim": s["dim"], "measured at": s["products"], "fill min / M (lower bound)": f"{s['_seconds'] * f / 60:.0f}",
            "server RSS / M": f"{s['_rss'] * f / 2**30:.1f} GB", "disk / M": f"{s['_disk'] * f / 2**30:.1f} GB",
            "metadata table / M": f"{s['_table'] * f / 2**30:.2f} GB",
            "raw float32 / M": f"{s['dim'] * 4 * 1e6 / 2**30:.1f} GB"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--extra-dims", default="1280,2048", help="measured at --extra-n, then extrapolated")
    parser.add_argument("--extra-n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=5000, help="products per write (Chroma's limit is ~5461)")
    parser.add_argument("--budget-min", type=float, default=25.0, help="stop each fill after this many minutes")
    parser.add_argument("--catalog", help="sample metadata rows from this catalog's styles.csv")
    parser.add_argument("--tmp", default=None, help="where the server's temp folder goes (default: the system's)")
    args = parser.parse_args()
    if not CHROMA.exists():
        sys.exit(f"no chroma command beside {sys.executable}")
    rows = catalog_rows(args.catalog) if args.catalog else None
    summaries, query_table = [], []
    for dim, n in [(args.dim, args.n)] + [(int(d), args.extra_n) for d in args.extra_dims.split(",") if d.strip()]:
        summary, queried = measure(dim, n, args, rows)
        summaries.append(summary)
        query_table += queried
        # Each size's figures as soon as they exist: a long run stopped later keeps them.
        print(table([{k: v for k, v in summary.items() if not k.startswith("_")}]), file=sys.stderr)
        print(table(queried), file=sys.stderr, flush=True)
    print(table([{k: v for k, v in s.items() if not k.startswith("_")} for s in summaries]))
    print()
    print(table(query_table))
    print()
    print(table([per_million(s) for s in summaries]))


if __name__ == "__main__":
    main()
