"""The colour model: what reading one item costs, and what its preference does to a search.

    python -m bench.colour latency [--catalog ../shared/catalog] [--photos DIR] [--n 200]
    python -m bench.colour sweep --db DB --catalog ../shared/catalog --photos DIR
                                 [--weights 0,0.01,0.02,0.03,0.05,0.1] [--floors 0.01]

`latency`: ms per item for `ColourModel.probabilities` on catalog shots, on the photos (any
size, foreground found by itself) and with a mask (a random blob, the garment parser's case),
one thread, as the search calls it.

`sweep`: each query embedded once (the search's own views) and read once, then searched again
for every colour weight (`RerankSettings.colour_weight`, the votes as by default): P@5 by kind,
colour and type+colour on the labelled photos in DIR (catalog/photo_labels.py), and on the
colour model's held-out catalog products as photos (cut-out and handheld styles: labelled by the
catalog, relit by the generators). Weight 0 is today's order.
"""
from __future__ import annotations

import argparse
import itertools
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CATALOG, pct, table
from catalog import open_image, read_catalog
from catalog.handheld import handheld_photo
from catalog.photo_labels import read_photo_folder
from catalog.photolike import shopper_photo
from embedding import load_embedder
from embedding.colour import ColourModel
from evaluation.metrics import label_value, precision_at_k
from evaluation.photos import matches, outcome_of, precision
from search import RerankSettings, Searcher
from vectorstore import StoreSettings, make_client


def _timed(model: ColourModel, items, repeat: int = 1) -> list[float]:
    seconds = []
    for image, mask in items:
        started = time.perf_counter()
        for _ in range(repeat):
            model.probabilities(image, mask)
        seconds.append((time.perf_counter() - started) / repeat)
    return seconds


def latency(args) -> None:
    import torch
    torch.set_num_threads(1)
    model = ColourModel.load(Path(args.model) if args.model else None)
    products = read_catalog(Path(args.catalog)).products[:args.n]
    shots = [(open_image(p.image), None) for p in products]
    rows = [("catalog shots (180x240), foreground", shots)]
    if args.photos:
        photos = [(open_image(p.path), None) for p in read_photo_folder(Path(args.photos))[:args.n]]
        rows.append((f"photos ({photos[0][0].width}x{photos[0][0].height} or so), foreground", photos))
        rng = np.random.default_rng(0)
        masked = []
        for image, _ in photos:
            mask = np.zeros((image.height, image.width), dtype=bool)
            y, x = rng.integers(0, image.height // 2), rng.integers(0, image.width // 2)
            mask[y:y + image.height // 2, x:x + image.width // 2] = True
            masked.append((image, mask))
        rows.append(("photos with a mask", masked))
    _timed(model, shots[:5])  # first-call costs
    out = []
    for name, items in rows:
        ms = np.array(_timed(model, items)) * 1000
        out.append({"items": name, "n": len(items), "p50 ms": f"{pct(ms, 50):.2f}", "p95 ms": f"{pct(ms, 95):.2f}",
                    "mean ms": f"{ms.mean():.2f}"})
    print(table(out))


# -- sweep -----------------------------------------------------------------------------------
def _held_out_queries(catalog_dir: Path, model: ColourModel, style: str, limit: int | None):
    """(image, labels, exclude) for the colour model's held-out products, as photos."""
    held = set(model.facts.get("held_out_ids", ()))
    products = [p for p in read_catalog(catalog_dir).products if p.id in held][:limit]
    make = handheld_photo if style == "handheld" else shopper_photo
    return [(make(open_image(p.image), random.Random(f"0:{p.id}")),
             {"articleType": p.articleType, "baseColour": p.baseColour}, (p.id,)) for p in products]


def _catalog_scores(answers, labels) -> dict:
    def mean(level):
        values = [precision_at_k(label_value(l, level), [label_value(r, level) for r in a], 5)
                  for a, l in zip(answers, labels)]
        values = [v for v in values if v is not None]
        return sum(values) / len(values)
    return {"kind": mean("articleType"), "colour": mean("baseColour"), "type+colour": mean("type+colour")}


def _photo_scores(answers, photos) -> dict:
    out = {}
    for level in ("kind", "colour", "type+colour"):
        values = [precision(matches(outcome_of(p, a), level), 5) for a, p in zip(answers, photos)]
        values = [v for v in values if v is not None]
        out[level] = sum(values) / len(values)
    return out


def sweep(args) -> None:
    colour_model = ColourModel.load(Path(args.model) if args.model else None)
    embedder = load_embedder(args.embedder, args.weights)
    searcher = Searcher(make_client(StoreSettings(path=Path(args.db))), embedders={args.embedder: embedder})
    sets = []
    if args.photos:
        photos = read_photo_folder(Path(args.photos))
        sets.append(("real photos", [(open_image(p.path), None, ()) for p in photos],
                     lambda answers, photos=photos: _photo_scores(answers, photos)))
    for style in args.styles.split(","):
        queries = _held_out_queries(Path(args.catalog), colour_model, style, args.limit)
        sets.append((f"held-out catalog, {style}", queries,
                     lambda answers, labels=[q[1] for q in queries]: _catalog_scores(answers, labels)))
    rows = []
    for name, queries, scorer in sets:
        vectors = searcher.embed(args.embedder, [q[0] for q in queries])
        readings = [colour_model.probabilities(q[0]) for q in queries]
        for floor, weight, candidates in itertools.product([float(f) for f in args.floors.split(",")],
                                                           [float(w) for w in args.weights_grid.split(",")],
                                                           [int(c) for c in args.candidates.split(",")]):
            searcher.rerank = replace(RerankSettings(), colour_weight=weight, colour_floor=floor,
                                      candidates=candidates)
            answers = [[r.metadata for r in searcher.search_vector(args.embedder, v, 5, exclude=q[2],
                                                                   colour=p).results]
                       for v, q, p in zip(vectors, queries, readings)]
            scores = scorer(answers)
            rows.append({"queries": f"{name} ({len(queries)})", "weight": weight, "floor": floor,
                         "candidates": candidates,
                         **{f"P@5 {k}": f"{v:.3f}" for k, v in scores.items()}})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    p.add_argument("--photos")
    p.add_argument("--model", help="a colour model file (default: the shipped one)")
    p.add_argument("--n", type=int, default=200)
    p.set_defaults(func=latency)
    p = sub.add_parser("sweep")
    p.add_argument("--db", required=True)
    p.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    p.add_argument("--photos")
    p.add_argument("--model", help="a colour model file (default: the shipped one)")
    p.add_argument("--embedder", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--weights-grid", default="0,0.01,0.02,0.03,0.05,0.1")
    p.add_argument("--floors", default="0.01")
    p.add_argument("--candidates", default="50", help="how many nearest products are reordered: N,N,...")
    p.add_argument("--styles", default="cutout,handheld")
    p.add_argument("--limit", type=int, help="at most this many held-out products per style")
    p.set_defaults(func=sweep)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
