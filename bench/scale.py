"""Filtered nearest-neighbour search at catalog scale, on realistic data, as serving asks it, with
engines side by side (GitHub issue #33).

    python -m bench.scale [--n 150000] [--queries 300] [--k 50] [--ef 64,128,256,512]
                          [--engines chroma-planner,chroma-where,lancedb]
                          [--source-db data/chroma] [--model efficientnet_lite0]

Data (bench/scale_data.py has the model in its docstring): the real vectors and metadata of the
project index at `--source-db`; `--queries` real products (seeded) are held out as the queries and
never stored; the other real products are stored and the set is grown to `--n` by copying a real
product's metadata and drawing its vector from its articleType's fitted Gaussian (mean, top 32
principal components, isotropic rest). A realism check prints the mean cosine gap between exact
rank 5 and rank 20 for the queries on the real-only stored set, on a synthetic set of the same size
and on the grown set.

Queries, as serving asks them: k = `--k` (50). For each held-out query, eight filter classes:
    unfiltered
    gender             its own gender                                        (agrees with the photo)
    category-agree     its own masterCategory, via the `category` pseudo-field (agrees)
    subcategory-agree  its own subCategory, via `category`                    (agrees)
    colour             its own baseColour                                    (agrees)
    combined-agree     its own gender + subCategory + baseColour             (agrees)
    category-disagree  Footwear (Apparel for a footwear photo)               (disagrees)
    combined-disagree  its own gender + another large subCategory + Black    (disagrees)
recall@5 (true top 5 among the 5 first returned) and recall@50 against exact numpy search with the
same filter over every stored vector (ties at the k-th score count as hits); "short" is the share of
queries answered with fewer than min(k, matching) products.

Engines, filled with the same products and asked the same queries, interleaved query by query:
    chroma-planner   the project's path: embedded Chroma (temp folder), ProductCollection.open(...,
                     create=True), write_prepared, search_stored (plan on the in-memory MetadataTable)
    chroma-where     Chroma's own collection.query(..., where=Filters.to_where()) on that collection
    lancedb          embedded LanceDB (temp folder): an IVF_HNSW_SQ cosine index, BITMAP indexes on
                     the filtered columns, .where(sql, prefilter=True).limit(k).ef(ef).nprobes(...)
    lancedb+refineR  the same table and index with .refine_factor(R) (`--lance-refine R`; 0: none)
The HNSW search breadth is swept (`--ef`). Chroma reads ef_search from the collection's
configuration when it loads the index: `collection.modify(configuration={"hnsw": {"ef_search": N}})`
is stored but not seen by a process that already holds the index, so every ef step here reopens the
embedded client (a fresh system) before querying. LanceDB takes ef per query (raised to k x refine
where the engine requires ef >= k x refine_factor: the "ef used" column).

Prints the fill and index build times, the RSS of the project's MetadataTable at this size, then per
engine x ef x class: mean matching, p50/p95 ms, recall@5, recall@50; side-by-side tables per ef with
latency ratios to the first engine (one run on a noisy machine: trust the ratios); and, per engine,
the smallest ef whose recall@5 >= 0.95 for every class. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import pct, table
from bench.scale_data import (
    Dataset,
    build,
    category_columns,
    grow,
    log,
    near_tie_gap,
    read_real,
    similarities,
    top_k,
)
from vectorstore import CATEGORY, Filters

CLASSES = ("unfiltered", "gender", "category-agree", "subcategory-agree", "colour", "combined-agree",
           "category-disagree", "combined-disagree")
AGREES = {"unfiltered": "-", "gender": "agrees", "category-agree": "agrees", "subcategory-agree": "agrees",
          "colour": "agrees", "combined-agree": "agrees", "category-disagree": "disagrees",
          "combined-disagree": "disagrees"}
ENGINES = ("chroma-planner", "chroma-where", "lancedb")
# "another subCategory" for combined-disagree: one of those holding at least this share of the catalog.
LARGE_SUBCATEGORY = 0.02
TARGET_RECALL = 0.95
FILTER_COLUMNS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour")
STRING_COLUMNS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage", "name",
                  "image", "digest")


# -- queries ----------------------------------------------------------------------------------
def query_filters(metas: list[dict], frame, seed: int) -> list[dict[str, Filters]]:
    """Each held-out query's eight filters (see the module docstring)."""
    rng = np.random.default_rng(seed + 7)
    shares = frame["subCategory"].value_counts(normalize=True)
    large = sorted(shares[shares >= LARGE_SUBCATEGORY].index)
    out = []
    for m in metas:
        gender, master, sub, colour = m.get("gender"), m.get("masterCategory"), m.get("subCategory"), m.get("baseColour")
        others = [s for s in large if s != sub]
        other = others[int(rng.integers(len(others)))]
        out.append({
            "unfiltered": Filters(),
            "gender": Filters({"gender": (gender,)}),
            "category-agree": Filters({CATEGORY: (master,)}),
            "subcategory-agree": Filters({CATEGORY: (sub,)}),
            "colour": Filters({"baseColour": (colour,)}),
            "combined-agree": Filters({"gender": (gender,), CATEGORY: (sub,), "baseColour": (colour,)}),
            "category-disagree": Filters({CATEGORY: ("Apparel",) if master == "Footwear" else ("Footwear",)}),
            "combined-disagree": Filters({"gender": (gender,), CATEGORY: (other,), "baseColour": ("Black",)}),
        })
    return out


def filter_key(f: Filters) -> tuple:
    return (tuple(sorted((k, tuple(v)) for k, v in f.fields.items() if v)),
            tuple(sorted((k, tuple(v)) for k, v in f.excluded.items() if v)))


@dataclass
class Truth:
    """Exact answers: per query and class, the true top-k rows under the filter."""
    sims: np.ndarray                               # q x n
    masks: dict = field(default_factory=dict)      # filter key -> bool mask over stored rows (None: all)
    keys: list = field(default_factory=list)       # per query: class -> filter key
    top: list = field(default_factory=list)        # per query: class -> row indices, best first
    matching: list = field(default_factory=list)   # per query: class -> how many pass

    def recall(self, q: int, cls: str, rows: list[int | None], at: int) -> float | None:
        truth = self.top[q][cls]
        m = min(at, len(truth))
        if m == 0:
            return None
        threshold = self.sims[q, truth[m - 1]] - 1e-6
        mask = self.masks[self.keys[q][cls]]
        hits = sum(1 for r in rows[:at] if r is not None and (mask is None or mask[r]) and self.sims[q, r] >= threshold)
        return min(hits, m) / m

    def violations(self, q: int, cls: str, rows: list[int | None]) -> int:
        mask = self.masks[self.keys[q][cls]]
        return sum(1 for r in rows if r is None or (mask is not None and not mask[r]))


def ground_truth(data: Dataset, filters: list[dict[str, Filters]], k: int) -> Truth:
    started = time.perf_counter()
    truth = Truth(similarities(data.query_vectors, data.vectors))
    log(f"exact similarities {truth.sims.shape} in {time.perf_counter() - started:.1f}s")
    for q, per_class in enumerate(filters):
        keys, tops, matching = {}, {}, {}
        for cls, f in per_class.items():
            key = filter_key(f)
            if key not in truth.masks:
                truth.masks[key] = None if f.is_empty() else f.mask(data.frame)
            mask = truth.masks[key]
            keys[cls] = key
            tops[cls] = top_k(truth.sims[q], mask, k)
            matching[cls] = len(data.ids) if mask is None else int(mask.sum())
        truth.keys.append(keys)
        truth.top.append(tops)
        truth.matching.append(matching)
    log(f"ground truth for {len(filters)} queries x {len(CLASSES)} classes ({len(truth.masks)} distinct filters) "
        f"in {time.perf_counter() - started:.1f}s")
    return truth


# -- memory -----------------------------------------------------------------------------------
def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MB"


def metadata_table_memory(data: Dataset) -> dict:
    """The project's MetadataTable, loaded page by page from these products as a store hands them."""
    from catalog.memory import return_freed_memory
    from vectorstore.metadata import MetadataTable

    def pages(step: int = 5000):
        for start in range(0, len(data.ids), step):
            yield data.ids[start:start + step], [dict(m) for m in data.metadatas[start:start + step]]

    return_freed_memory()
    before = rss()
    started = time.perf_counter()
    metadata = MetadataTable(pages, lambda: len(data.ids))
    frame = metadata.frame()
    seconds = time.perf_counter() - started
    return_freed_memory()
    after = rss()
    row = {"products": f"{len(frame):,}", "MetadataTable RSS": mb(after - before),
           "DataFrame (deep)": mb(frame.memory_usage(deep=True).sum()), "load s": f"{seconds:.1f}"}
    del frame, metadata
    return_freed_memory()
    return row


# -- engines ----------------------------------------------------------------------------------
class ChromaEngines:
    """One embedded Chroma collection, searched by the project's planner and by Chroma's `where`."""

    def __init__(self, root: Path, model: str):
        self.path = root / "chroma"
        self.model = model
        self.client = self.coll = self.raw = None
        self.dim = 0

    def fill(self, data: Dataset, batch: int) -> dict:
        from vectorstore import ProductCollection, StoreSettings, make_client
        self.client = make_client(StoreSettings(path=self.path))
        dim = self.dim = data.vectors.shape[1]
        self.coll = ProductCollection.open(self.client, self.model, create=True, dim=dim)
        started = last = time.perf_counter()
        for start in range(0, len(data.ids), batch):
            end = min(start + batch, len(data.ids))
            self.coll.write_prepared(data.ids[start:end], data.vectors[start:end], data.metadatas[start:end])
            if time.perf_counter() - last > 60 or end == len(data.ids):
                log(f"chroma: {end:,} written, {end / (time.perf_counter() - started):,.0f}/s")
                last = time.perf_counter()
        seconds = time.perf_counter() - started
        return {"engine": "chroma (planner, where)", "fill s": f"{seconds:.0f}",
                "products/s": f"{len(data.ids) / seconds:,.0f}", "index s": "(in fill: HNSW built on insert)",
                "disk": mb(disk_bytes(self.path)), "settings": "hnsw cosine, M 16, ef_construction 128 (project's)"}

    def set_ef(self, ef: int) -> float:
        """Store ef_search in the collection's configuration, then reopen the embedded client so that
        the index is loaded again with it; returns the seconds of the first query (the load)."""
        from chromadb.api.shared_system_client import SharedSystemClient

        from vectorstore import ProductCollection, StoreSettings, make_client
        name = self.coll.name
        self.client.get_collection(name, embedding_function=None).modify(configuration={"hnsw": {"ef_search": ef}})
        identifier = getattr(self.client, "_identifier", None)
        system = SharedSystemClient._identifier_to_system.pop(identifier, None)
        SharedSystemClient._identifier_to_refcount.pop(identifier, None)
        if system is not None:
            system.stop()
        self.client = make_client(StoreSettings(path=self.path))
        self.coll = ProductCollection.open(self.client, self.model)
        self.raw = self.client.get_collection(name, embedding_function=None)
        seen = (self.raw.configuration or {}).get("hnsw", {}).get("ef_search")
        if seen != ef:
            raise RuntimeError(f"Chroma kept ef_search {seen}, not {ef}")
        started = time.perf_counter()
        probe = np.random.default_rng(ef).standard_normal((1, self.dim)).astype(np.float32)
        self.raw.query(query_embeddings=probe / np.linalg.norm(probe), n_results=1)
        loaded = time.perf_counter() - started
        self.coll.metadata.frame()  # the serving table, loaded before the first timed query
        return loaded

    def planner(self, vector: np.ndarray, k: int, filters: Filters) -> list[str]:
        return [h.id for h in self.coll.search_stored(vector, k=k, filters=filters)]

    def where(self, vector: np.ndarray, k: int, filters: Filters) -> list[str]:
        got = self.raw.query(query_embeddings=vector.reshape(1, -1), n_results=k,
                             where=None if filters.is_empty() else filters.to_where(), include=["distances"])
        return got["ids"][0]

    def close(self) -> None:
        from chromadb.api.shared_system_client import SharedSystemClient
        identifier = getattr(self.client, "_identifier", None)
        system = SharedSystemClient._identifier_to_system.pop(identifier, None)
        SharedSystemClient._identifier_to_refcount.pop(identifier, None)
        if system is not None:
            system.stop()
        self.client = self.coll = self.raw = None


def sql_literal(value) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


def filters_sql(filters: Filters) -> str | None:
    """`Filters` as LanceDB SQL selecting the same rows as `Filters.mask`."""
    clauses = []
    for name, values in filters.fields.items():
        if values:
            columns = category_columns() if name == CATEGORY else (name,)
            listed = ", ".join(sql_literal(v) for v in values)
            clauses.append("(" + " OR ".join(f"`{c}` IN ({listed})" for c in columns) + ")")
    for name, values in filters.excluded.items():
        if values:
            columns = category_columns() if name == CATEGORY else (name,)
            listed = ", ".join(sql_literal(v) for v in values)
            clauses += [f"(`{c}` IS NULL OR `{c}` NOT IN ({listed}))" for c in columns]
    return " AND ".join(clauses) or None


class LanceEngine:
    """One embedded LanceDB table: vectors, metadata columns, IVF_HNSW_SQ + BITMAP indexes."""

    def __init__(self, root: Path, args):
        self.path = root / "lance"
        self.args = args
        self.table = None
        self.partitions = args.lance_partitions

    def fill(self, data: Dataset, batch: int) -> list[dict]:
        import lancedb
        import pyarrow as pa
        from lancedb.index import Bitmap, IvfHnswSq
        dim = data.vectors.shape[1]
        schema = pa.schema([pa.field("id", pa.string()), pa.field("vector", pa.list_(pa.float32(), dim)),
                            *[pa.field(c, pa.string()) for c in STRING_COLUMNS], pa.field("year", pa.int32())])
        db = lancedb.connect(str(self.path))
        self.table = db.create_table("products", schema=schema)
        started = last = time.perf_counter()
        for start in range(0, len(data.ids), batch):
            end = min(start + batch, len(data.ids))
            metas = data.metadatas[start:end]
            columns = {"id": pa.array(data.ids[start:end], pa.string()),
                       "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.vectors[start:end].reshape(-1)), dim)}
            columns.update({c: pa.array([m.get(c) for m in metas], pa.string()) for c in STRING_COLUMNS})
            columns["year"] = pa.array([m.get("year") for m in metas], pa.int32())
            self.table.add(pa.table(columns, schema=schema))
            if time.perf_counter() - last > 60 or end == len(data.ids):
                log(f"lancedb: {end:,} written")
                last = time.perf_counter()
        fill_s = time.perf_counter() - started
        started = time.perf_counter()
        config = IvfHnswSq(distance_type="cosine", num_partitions=self.partitions, m=self.args.lance_m,
                           ef_construction=self.args.lance_ef_construction)
        self.table.create_index("vector", config=config)
        vector_s = time.perf_counter() - started
        log(f"lancedb: vector index built in {vector_s:.0f}s")
        started = time.perf_counter()
        for c in FILTER_COLUMNS:
            self.table.create_index(c, config=Bitmap())
        bitmap_s = time.perf_counter() - started
        parts = "Lance's default (target_partition_size 1,048,576 rows)" if self.partitions is None else str(self.partitions)
        return [{"engine": "lancedb", "fill s": f"{fill_s:.0f}", "products/s": f"{len(data.ids) / fill_s:,.0f}",
                 "index s": f"vector {vector_s:.0f} + bitmap {bitmap_s:.1f}", "disk": mb(disk_bytes(self.path)),
                 "settings": f"IVF_HNSW_SQ cosine, partitions {parts}, m {self.args.lance_m}, "
                             f"ef_construction {self.args.lance_ef_construction}; nprobes {self.args.lance_nprobes}; "
                             f"BITMAP on {', '.join(FILTER_COLUMNS)}"}]

    def search(self, vector: np.ndarray, k: int, filters: Filters, ef: int, refine: int) -> list[str]:
        query = (self.table.search(vector, vector_column_name="vector").distance_type("cosine")
                 .select(["id", "_distance"]).limit(k).ef(ef).nprobes(self.args.lance_nprobes))
        if refine:
            query = query.refine_factor(refine)
        where = filters_sql(filters)
        if where:
            query = query.where(where, prefilter=True)
        return query.to_arrow()["id"].to_pylist()


@dataclass
class Variant:
    label: str
    run: object            # (vector, k, filters, ef) -> ids
    ef_used: object        # ef -> the ef the engine searched with


def lance_ef(ef: int, k: int, refine: int) -> int:
    return max(ef, k * max(refine, 1))


# -- measuring --------------------------------------------------------------------------------
@dataclass
class Cell:
    times: list = field(default_factory=list)
    r5: list = field(default_factory=list)
    r50: list = field(default_factory=list)
    short: int = 0
    bad: int = 0
    answered: int = 0


def measure(variants: list[Variant], efs: list[int], data: Dataset, filters, truth: Truth, k: int,
            chroma: ChromaEngines | None, reload_rows: list[dict], only: dict[str, int]) -> dict:
    """Every query x class x variant, interleaved, at each ef. Returns (label, ef, class) -> Cell."""
    row_of = {pid: i for i, pid in enumerate(data.ids)}
    cells: dict = {}
    for ef in efs:
        if chroma is not None:
            loaded = chroma.set_ef(ef)
            reload_rows.append({"engine": "chroma", "ef": ef, "index load (first query) s": f"{loaded:.2f}"})
        started, last = time.perf_counter(), time.perf_counter()
        for q, vector in enumerate(data.query_vectors):
            for cls in CLASSES:
                f = filters[q][cls]
                for v in variants:
                    if q >= only.get(v.label, len(data.query_vectors)):
                        continue
                    t0 = time.perf_counter()
                    got = v.run(vector, k, f, ef)
                    elapsed = time.perf_counter() - t0
                    cell = cells.setdefault((v.label, ef, cls), Cell())
                    rows = [row_of.get(pid) for pid in got]
                    cell.times.append(elapsed)
                    cell.answered += 1
                    for at, store in ((5, cell.r5), (k, cell.r50)):
                        r = truth.recall(q, cls, rows, at)
                        if r is not None:
                            store.append(r)
                    cell.short += len(got) < min(k, truth.matching[q][cls])
                    cell.bad += truth.violations(q, cls, rows)
            if time.perf_counter() - last > 60:
                log(f"ef {ef}: {q + 1}/{len(data.query_vectors)} queries in {time.perf_counter() - started:.0f}s")
                last = time.perf_counter()
        log(f"ef {ef} done in {time.perf_counter() - started:.0f}s")
        print(table(cell_rows(variants, [ef], cells, truth, k)), file=sys.stderr, flush=True)
    return cells


def mean_matching(truth: Truth, cls: str, upto: int | None = None) -> float:
    values = [m[cls] for m in truth.matching[:upto]]
    return float(np.mean(values)) if values else 0.0


def fmt(values: list) -> str:
    return f"{np.mean(values):.3f}" if values else "n/a"


def cell_rows(variants, efs, cells, truth: Truth, k: int) -> list[dict]:
    rows = []
    for v in variants:
        for ef in efs:
            for cls in CLASSES:
                c = cells.get((v.label, ef, cls))
                if c is None:
                    continue
                rows.append({"engine": v.label, "ef": ef, "ef used": v.ef_used(ef), "class": cls,
                             "photo": AGREES[cls], "queries": c.answered,
                             "mean matching": f"{mean_matching(truth, cls, c.answered):,.0f}",
                             "p50 ms": f"{pct(c.times, 50) * 1000:.1f}", "p95 ms": f"{pct(c.times, 95) * 1000:.1f}",
                             "recall@5": fmt(c.r5), f"recall@{k}": fmt(c.r50),
                             "short": f"{c.short / max(1, c.answered):.0%}", "off-filter": c.bad})
    return rows


def side_by_side(variants, ef, cells, truth: Truth, k: int) -> tuple[list[dict], list[dict]]:
    """Latency (p50, with the ratio to the first engine) and recall, one column per engine."""
    latency, recall = [], []
    first = variants[0].label
    for cls in CLASSES:
        lrow = {"class": cls, "photo": AGREES[cls], "mean matching": f"{mean_matching(truth, cls):,.0f}"}
        rrow = {"class": cls, "photo": AGREES[cls]}
        base = cells.get((first, ef, cls))
        for v in variants:
            c = cells.get((v.label, ef, cls))
            if c is None:
                continue
            p50 = pct(c.times, 50) * 1000
            ratio = "" if v.label == first or base is None else f" ({p50 / (pct(base.times, 50) * 1000):.2f}x)"
            lrow[f"{v.label} p50/p95 ms"] = f"{p50:.1f}/{pct(c.times, 95) * 1000:.1f}{ratio}"
            rrow[f"{v.label} r@5 / r@{k}"] = f"{fmt(c.r5)} / {fmt(c.r50)}"
        latency.append(lrow)
        recall.append(rrow)
    return latency, recall


def smallest_ef(variants, efs, cells) -> list[dict]:
    rows = []
    for v in variants:
        found, worst = None, []
        for ef in efs:
            recalls = {cls: np.mean(cells[(v.label, ef, cls)].r5) for cls in CLASSES
                       if (v.label, ef, cls) in cells and cells[(v.label, ef, cls)].r5}
            low_cls = min(recalls, key=recalls.get)
            worst.append(f"ef {ef}: {low_cls} {recalls[low_cls]:.3f}")
            if found is None and all(r >= TARGET_RECALL for r in recalls.values()):
                found = ef
        rows.append({"engine": v.label,
                     f"smallest ef with recall@5 >= {TARGET_RECALL} in every class":
                         "none in the sweep" if found is None else f"{found} (ef used {v.ef_used(found)})",
                     "worst class per ef": "; ".join(worst)})
    return rows


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=150_000, help="stored products (real ones plus grown)")
    parser.add_argument("--queries", type=int, default=300, help="held-out real products used as queries")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--ef", default="64,128,256,512", help="HNSW search breadths to sweep")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--source-db", default="data/chroma", help="a project index of the catalog (python app.py index --weights imagenet), whose real vectors are grown (default: %(default)s)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=5000, help="products per write")
    parser.add_argument("--where-queries", type=int, default=None,
                        help="ask chroma-where only the first N queries (it is the slow one); default: all")
    parser.add_argument("--lance-partitions", type=int, default=None, help="IVF partitions (default: Lance's)")
    parser.add_argument("--lance-nprobes", type=int, default=20)
    parser.add_argument("--lance-m", type=int, default=20)
    parser.add_argument("--lance-ef-construction", type=int, default=300)
    parser.add_argument("--lance-refine", type=int, default=2, help="also run LanceDB with this refine_factor (0: no)")
    parser.add_argument("--tmp", default=None, help="where the engines' temp folders go")
    args = parser.parse_args()
    efs = [int(e) for e in args.ef.split(",") if e.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        sys.exit(f"unknown engines {sorted(unknown)}; known: {', '.join(ENGINES)}")

    print(f"# bench.scale: n={args.n:,} queries={args.queries} k={args.k} ef={efs} engines={engines} "
          f"source={args.source_db} model={args.model} seed={args.seed}")
    print(f"# started {time.strftime('%Y-%m-%d %H:%M:%S')}, load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs", flush=True)
    real = read_real(Path(args.source_db), args.model)
    log(f"read {len(real.ids):,} real products x {real.vectors.shape[1]}-d from {args.source_db}")
    data = build(real, args.n, args.queries, args.seed)
    del real
    print(f"# stored: {len(data.ids):,} products ({data.n_real:,} real, {len(data.ids) - data.n_real:,} grown); "
          f"{len(data.query_vectors)} held-out real queries; growth model: {data.model.describe()}")

    # Realism: the near-tie structure of exact unfiltered neighbours.
    filters = query_filters(data.query_metas, data.frame, args.seed)
    truth = ground_truth(data, filters, args.k)
    _, synthetic, _ = grow(data.model, data.vectors[:data.n_real], data.metadatas[:data.n_real], data.n_real,
                           args.seed + 2)
    same_size = near_tie_gap(similarities(data.query_vectors, synthetic))
    del synthetic
    realism = [dict(set=f"real only ({data.n_real:,})", **near_tie_gap(truth.sims, slice(0, data.n_real))),
               dict(set=f"synthetic only, same size ({data.n_real:,})", **same_size),
               dict(set=f"grown, stored ({len(data.ids):,})", **near_tie_gap(truth.sims))]
    print("\n## Realism check: exact unfiltered neighbours of the held-out queries (mean cosine)")
    print("(audit: rank5 - rank20 gap 0.050 on the real vectors; the old generator gave 0.012)")
    print(table([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in realism]))

    print("\n## The project's MetadataTable at this size")
    print(table([metadata_table_memory(data)]), flush=True)

    root = Path(tempfile.mkdtemp(prefix="scale-", dir=args.tmp))
    chroma = lance = None
    variants: list[Variant] = []
    fills: list[dict] = []
    reloads: list[dict] = []
    try:
        if {"chroma-planner", "chroma-where"} & set(engines):
            chroma = ChromaEngines(root, args.model)
            fills.append(chroma.fill(data, args.batch))
            if "chroma-planner" in engines:
                variants.append(Variant("chroma-planner", lambda v, k, f, ef: chroma.planner(v, k, f), lambda ef: ef))
            if "chroma-where" in engines:
                variants.append(Variant("chroma-where", lambda v, k, f, ef: chroma.where(v, k, f), lambda ef: ef))
        if "lancedb" in engines:
            lance = LanceEngine(root, args)
            fills += lance.fill(data, max(args.batch, 20_000))
            variants.append(Variant("lancedb", lambda v, k, f, ef: lance.search(v, k, f, lance_ef(ef, k, 0), 0),
                                    lambda ef: lance_ef(ef, args.k, 0)))
            if args.lance_refine:
                r = args.lance_refine
                variants.append(Variant(f"lancedb+refine{r}",
                                        lambda v, k, f, ef: lance.search(v, k, f, lance_ef(ef, k, r), r),
                                        lambda ef: lance_ef(ef, args.k, r)))
        print("\n## Fill and index build")
        print(table(fills), flush=True)
        only = {"chroma-where": args.where_queries} if args.where_queries else {}
        cells = measure(variants, efs, data, filters, truth, args.k, chroma, reloads, only)
    finally:
        if chroma is not None:
            chroma.close()
        shutil.rmtree(root, ignore_errors=True)

    if reloads:
        print("\n## Chroma: index load after each ef change (client reopened)")
        print(table(reloads))
    print(f"\n## Per engine x ef x class (k={args.k}; recall against exact search with the same filter)")
    print(table(cell_rows(variants, efs, cells, truth, args.k)))
    for ef in efs:
        latency, recall = side_by_side(variants, ef, cells, truth, args.k)
        print(f"\n## Side by side at ef {ef}: p50/p95 ms (x {variants[0].label})")
        print(table(latency))
        print(f"\n## Side by side at ef {ef}: recall@5 / recall@{args.k}")
        print(table(recall))
    print(f"\n## Smallest ef with recall@5 >= {TARGET_RECALL} for every class (agreeing and disagreeing)")
    print(table(smallest_ef(variants, efs, cells)))
    print(f"\n# finished {time.strftime('%Y-%m-%d %H:%M:%S')}, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
