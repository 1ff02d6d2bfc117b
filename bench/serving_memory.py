"""A serving process at scale on the LanceDB store: its memory, search time and recall, against the
metadata table every Chroma serving process holds, on the realistic data of bench/scale_data.py.

    python -m bench.serving_memory --n 1000000 --store /tmp/lance-1m [--queries 200] [--source-db DB]
        [--vector-index ivf_pq,ivf_rq] [--route both|on|off]

Builds the store once through the project's own adapter and index path (`ProductCollection.open`,
`write_prepared`, `tidy`), timing each step; a later run with the same --store and --n reuses it.
With several vector indexes, each is built in turn on the same products by `tidy` (the one before
dropped) and served by its own process, and their figures are printed side by side; with
`--route both` (the default), each is served twice, through the route index (a filter that keeps
to one masterCategory searches that category's partitions) and without it, as a store written
before the route column is searched. Then fresh processes, one after the other:
- bare: the same imports, nothing opened (the baseline every RSS below is taken beyond);
- lancedb: what `search`, `serve` and `shop` do per request on `--store lancedb`: open the
  collection, its vocabulary, filtered searches at k = 50 (each filter class of bench/scale.py,
  agreeing with the photo or not, and a colour that disagrees), the records of the hits, and the
  shop's grid (pages, a deep page, the category choices) paged by the engine;
- chroma table: the metadata table (vectorstore/metadata.py) a Chroma serving process loads to
  plan its filters, read from the same products.
Prints RSS (now and peak) beyond bare, and the lancedb process's p50/p95 and recall@5 against exact
search under the same filter.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, table

MODEL = "efficientnet_lite0"
K = 50


def rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def filter_classes(meta: dict, seed: int) -> dict[str, dict]:
    """The filter classes of bench/scale.py for one query, as plain data (field -> values), and
    a colour that disagrees with the photo (black; white for a black product's photo)."""
    other_master = "Apparel" if meta.get("masterCategory") == "Footwear" else "Footwear"
    other_sub = "Shoes" if meta.get("subCategory") != "Shoes" else "Topwear"
    own = {name: meta.get(name) for name in ("gender", "masterCategory", "subCategory", "baseColour")}
    other_colour = "White" if meta.get("baseColour") == "Black" else "Black"
    classes = {"unfiltered": {},
               "gender": {"gender": [own["gender"]]},
               "category-agree": {"category": [own["masterCategory"]]},
               "subcategory-agree": {"category": [own["subCategory"]]},
               "colour": {"baseColour": [own["baseColour"]]},
               "colour-disagree": {"baseColour": [other_colour]},
               "combined-agree": {"gender": [own["gender"]], "category": [own["subCategory"]],
                                  "baseColour": [own["baseColour"]]},
               "category-disagree": {"category": [other_master]},
               "combined-disagree": {"gender": [own["gender"]], "category": [other_sub], "baseColour": ["Black"]}}
    return {name: {k: v for k, v in f.items() if all(x is not None for x in v)} for name, f in classes.items()}


def grown(args):
    """The realistic products and queries of bench/scale_data.py: the same for the same arguments."""
    from bench.scale_data import build, read_real
    return build(read_real(Path(args.source_db), MODEL), args.n, args.queries, seed=0)


def with_truth(data, facts: dict) -> dict:
    """`facts` with every query's filter classes and their exact top 5."""
    queries = [{"vector": v.tolist(), "classes": filter_classes(m, i)} for i, (v, m) in
               enumerate(zip(data.query_vectors, data.query_metas))]
    return {**facts, "queries": queries, "truth": exact_truth(data, queries)}


def build_store(args, index: str) -> dict:
    from vectorstore import ProductCollection, StoreSettings, lance_store, make_client
    data = grown(args)
    client = make_client(StoreSettings(path=Path(args.store), engine="lancedb"))
    ProductCollection.drop(client, MODEL)
    lance_store.VECTOR_INDEX = index
    collection = ProductCollection.open(client, MODEL, weights_id="bench", dim=data.vectors.shape[1], create=True)
    started = time.perf_counter()
    step = 50_000
    for start in range(0, len(data.ids), step):
        collection.write_prepared(data.ids[start:start + step], data.vectors[start:start + step],
                                  data.metadatas[start:start + step])
    written = time.perf_counter() - started
    started = time.perf_counter()
    collection.tidy()
    indexed = time.perf_counter() - started
    facts = with_truth(data, {"index": index, "n": len(data.ids), "write_s": round(written, 1),
                              "index_s": {index: round(indexed, 1)}})
    (Path(args.store) / "bench.json").write_text(json.dumps(facts))
    return facts


def refresh_truth(args, facts: dict) -> dict:
    """A store built by an earlier version of this bench, whose queries lack a filter class
    added since: the same products grown again (the same seed), the classes and the exact truth
    written anew; the store is not touched."""
    data = grown(args)
    if len(data.ids) != facts["n"] or not np.allclose(data.query_vectors[0], facts["queries"][0]["vector"]):
        raise SystemExit(f"{args.store} was built from other products: build it again in an empty folder")
    facts = with_truth(data, facts)
    (Path(args.store) / "bench.json").write_text(json.dumps(facts))
    return facts


def rebuild_index(store: str, facts: dict, index: str) -> dict:
    """The store's vector index dropped and built again as `index` by the adapter's own `tidy`."""
    from vectorstore import ProductCollection, StoreSettings, lance_store, make_client
    collection = ProductCollection.open(make_client(StoreSettings(path=Path(store), engine="lancedb")), MODEL)
    table = collection._table()
    for found in table.list_indices():
        if tuple(found.columns) in (("vector",), (lance_store.ROUTE,)):
            table.drop_index(found.name)
    lance_store.VECTOR_INDEX = index
    started = time.perf_counter()
    collection.tidy()
    facts["index_s"] = {**facts["index_s"], index: round(time.perf_counter() - started, 1)}
    facts["index"] = index
    (Path(store) / "bench.json").write_text(json.dumps(facts))
    return facts


def exact_truth(data, queries) -> list[dict[str, list[str]]]:
    from bench.scale_data import similarities, top_k
    from vectorstore.filters import CATEGORY, Filters
    sims = similarities(np.asarray([q["vector"] for q in queries], dtype=np.float32), data.vectors)
    truth = []
    for row, query in enumerate(queries):
        per_class = {}
        for name, fields in query["classes"].items():
            filters = Filters({(CATEGORY if k == "category" else k): tuple(v) for k, v in fields.items()})
            mask = None if filters.is_empty() else filters.mask(data.frame)
            per_class[name] = [data.ids[i] for i in top_k(sims[row], mask, 5)]
        truth.append(per_class)
    return truth


def child(kind: str, store: str, route: bool = True) -> None:
    """One fresh serving-like process; prints a JSON line. Without `route`, searches ignore the
    route index, as on a store written before it."""
    import pandas  # noqa: F401 -- the same imports in every child

    from vectorstore import CATEGORY, Filters, ProductCollection, StoreSettings, lance_store, make_client
    if not route:
        lance_store.LanceCollection._route = lambda self, table, filters: None
    out: dict = {"kind": kind}
    if kind == "bare":
        out["rss"], out["peak"] = rss()
    elif kind == "chroma-table":
        from vectorstore.metadata import MetadataTable
        collection = ProductCollection.open(make_client(StoreSettings(path=Path(store), engine="lancedb")), MODEL)
        started = time.perf_counter()
        frame = MetadataTable(collection.metadata_pages, collection.count).frame()
        out["load_s"] = round(time.perf_counter() - started, 1)
        out["rows"] = len(frame)
        out["rss"], out["peak"] = rss()
    else:
        facts = json.loads((Path(store) / "bench.json").read_text())
        collection = ProductCollection.open(make_client(StoreSettings(path=Path(store), engine="lancedb")), MODEL)
        started = time.perf_counter()
        collection.vocabulary()
        out["vocabulary_s"] = round(time.perf_counter() - started, 2)
        times: dict[str, list[float]] = {}
        recall: dict[str, list[float]] = {}
        for _ in range(2):   # the first pass reads the index's partitions; the second is what serving sees
            times, recall = {}, {}
            for query, truth in zip(facts["queries"], facts["truth"]):
                vector = np.asarray(query["vector"], dtype=np.float32)
                for name, fields in query["classes"].items():
                    filters = Filters({(CATEGORY if k == "category" else k): tuple(v) for k, v in fields.items()})
                    started = time.perf_counter()
                    hits = collection.search_stored(vector, k=K, filters=filters)
                    times.setdefault(name, []).append(time.perf_counter() - started)
                    # The hits carry their metadata; records by id are the words-only path's
                    # (Searcher.typical), read here for the memory they take, not timed.
                    collection.records([h.id for h in hits[:5]])
                    want = truth[name]
                    recall.setdefault(name, []).append(len({h.id for h in hits[:5]} & set(want)) / max(1, len(want)))
        out["search"] = {name: {"p50_ms": round(1000 * float(np.percentile(t, 50)), 1),
                                "p95_ms": round(1000 * float(np.percentile(t, 95)), 1),
                                "recall@5": round(float(np.mean(recall[name])), 3)} for name, t in times.items()}
        out["rss"], out["peak"] = rss()
        out["browse"], out["browse_rss"] = browse_times(collection)
        out["metadata_table_loaded"] = collection.metadata._frame is not None
    print(json.dumps(out), flush=True)


def browse_times(collection) -> tuple[dict[str, float], int]:
    """The shop's grid on the engine (shop/browse.py): a page of 24 unfiltered, filtered, deep in
    the catalog, and the category choices; ms, the first call and the median of three after it.
    Also the RSS the grid added, beyond the shop's imports (the models' libraries, which a
    serving process holds anyway)."""
    from shop.browse import CatalogBrowser
    from vectorstore import CATEGORY, Filters
    browser = CatalogBrowser(lambda: collection.metadata)
    before = rss()[0]
    asks = {"first page": lambda: browser.page(Filters(), 1, 24),
            "a category's page 3": lambda: browser.page(Filters({CATEGORY: ("Footwear",)}), 3, 24),
            "page 20,000": lambda: browser.page(Filters(), 20_000, 24),
            "category choices": browser.category_groups}
    out = {}
    for name, ask in asks.items():
        started = time.perf_counter()
        ask()
        out[name + " (first)"] = round(1000 * (time.perf_counter() - started), 1)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            ask()
            times.append(time.perf_counter() - started)
        out[name] = round(1000 * float(np.median(times)), 1)
    return out, rss()[0] - before


def run_child(kind: str, store: str, route: bool = True) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.serving_memory", "--child", kind, "--store", store,
                           "--route", "on" if route else "off"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from vectorstore import lance_store
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--store", required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--source-db", default="data/chroma", help="a project index of the catalog, whose real vectors are grown (default: %(default)s)")
    parser.add_argument("--vector-index", default=lance_store.VECTOR_INDEX,
                        help="the LanceDB vector indexes to build and serve side by side, comma-separated, of "
                             "ivf_rq, ivf_pq, ivf_hnsw_sq (default: the adapter's, %(default)s)")
    parser.add_argument("--route", choices=("both", "on", "off"), default="both",
                        help="serve through the route index, without it, or both side by side (default: %(default)s)")
    parser.add_argument("--child", choices=("bare", "lancedb", "chroma-table"))
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.store, route=args.route != "off")
    indexes = [name.strip() for name in args.vector_index.split(",") if name.strip()]
    unknown = set(indexes) - {"ivf_rq", "ivf_pq", "ivf_hnsw_sq"}
    if unknown or not indexes:
        parser.error(f"--vector-index: unknown {sorted(unknown)}; choose among ivf_rq, ivf_pq, ivf_hnsw_sq")
    facts_path = Path(args.store) / "bench.json"
    facts = json.loads(facts_path.read_text()) if facts_path.is_file() else None
    if facts is None or facts["n"] != args.n or not isinstance(facts.get("index_s"), dict):
        facts = build_store(args, indexes[0])
    elif set(filter_classes({}, 0)) - set(facts["queries"][0]["classes"]):
        facts = refresh_truth(args, facts)
    print(f"{facts['n']:,} products x 1280-d in {args.store}: written in {facts['write_s']} s "
          f"(ProductCollection.write_prepared)")
    bare = run_child("bare", args.store)
    served = {}
    routes = {"both": (False, True), "on": (True,), "off": (False,)}[args.route]
    for index in indexes:
        if facts["index"] != index:
            facts = rebuild_index(args.store, facts, index)
        for route in routes:
            served[f"{index}{', route' if route else ''}"] = run_child("lancedb", args.store, route)
    chroma = run_child("chroma-table", args.store)
    mb = 2 ** 20
    rows = [{"process": f"lancedb serving on {index} (search, vocabulary, records)",
             "RSS beyond bare MB": round((lance["rss"] - bare["rss"]) / mb),
             "peak beyond bare MB": round((lance["peak"] - bare["peak"]) / mb),
             "note": f"indexes built in {facts['index_s'].get(index.split(',')[0])} s (tidy); metadata table loaded: "
                     f"{lance['metadata_table_loaded']}; vocabulary {lance['vocabulary_s']} s"}
            for index, lance in served.items()]
    rows.append({"process": "chroma serving: its metadata table alone",
                 "RSS beyond bare MB": round((chroma["rss"] - bare["rss"]) / mb),
                 "peak beyond bare MB": round((chroma["peak"] - bare["peak"]) / mb),
                 "note": f"{chroma['rows']:,} rows loaded in {chroma['load_s']} s"})
    print(table(rows))
    first = next(iter(served.values()))
    search_rows = []
    for name in first["search"]:
        row = {"filter": name}
        for index, lance in served.items():
            figures = lance["search"][name]
            row[f"{index} p50 / p95 ms"] = f"{figures['p50_ms']} / {figures['p95_ms']}"
            row[f"{index} recall@5"] = figures["recall@5"]
        if len(served) > 1:
            base, last = list(served.values())[0]["search"][name], list(served.values())[-1]["search"][name]
            row[f"p95 {list(served)[0]} / {list(served)[-1]}"] = f"{base['p95_ms'] / max(0.1, last['p95_ms']):.1f}x"
        search_rows.append(row)
    print(table(search_rows))
    for index, lance in served.items():
        print(table([{f"the shop's grid on the engine ({index})": name, "ms": ms} for name, ms in lance["browse"].items()]))
        print(f"the grid's RSS beyond the shop's imports ({index}): {lance['browse_rss'] / mb:.0f} MB; "
              f"metadata table loaded after it: {lance['metadata_table_loaded']}")


if __name__ == "__main__":
    main()
