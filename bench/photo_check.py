"""Self-tuning's check on real photos (training/photo_check.py), run by hand: the held-out real
photos (a seeded sample of up to 300) searched as the shop searches them, with the served
network over its index and with a tuned file over its own, side by side.

    python -m bench.photo_check --db DB --tuned-db DB2 --weights FILE [--photos DIR ...]

DB holds the ImageNet network's index (what a fresh machine serves), DB2 the tuned file's.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import ROOT, table
from embedding.builder import EmbedderBuilder
from embedding.colour import ColourModel
from embedding.garments import GarmentParser
from embedding.kinds import KindModel
from training.photo_check import ServedSearch, sample, served_kind_precision
from training.real_photos import RealPhotos
from vectorstore import StoreSettings, make_client

PHOTOS = ROOT.parent / "shared" / "photos"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True, help="the served (ImageNet) network's index")
    parser.add_argument("--tuned-db", required=True, help="the tuned file's index")
    parser.add_argument("--weights", required=True, help="the tuned file")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--photos", nargs="+", default=[str(PHOTOS / "handheld"), str(PHOTOS / "street")])
    args = parser.parse_args()
    held = RealPhotos.read([Path(p) for p in args.photos], GarmentParser.held_out()).held_out
    photos = sample(held, ServedSearch().max_photos)
    served = ServedSearch(parser_factory=GarmentParser.load, colour_factory=ColourModel.load,
                          kind_factory=KindModel.load)
    rows = []
    for name, weights, db in (("ImageNet (its kind model reads the kind)", "imagenet", args.db),
                              (f"{Path(args.weights).name} (its classifier reads the kind)", args.weights, args.tuned_db)):
        embedder = EmbedderBuilder(weights=weights).build(args.model)
        started = time.perf_counter()
        searcher = served.searcher(make_client(StoreSettings(path=Path(db))), embedder)
        precision, asked = served_kind_precision(searcher, args.model, photos)
        rows.append({"network": name, "kind P@5": round(precision, 3), "photos": asked,
                     "seconds": round(time.perf_counter() - started)})
    print(f"{len(held)} held-out real photos, {len(photos)} asked ({sum(p.mask is None for p in photos)} "
          "home photos, the rest street garments cut out)")
    print(table(rows))


if __name__ == "__main__":
    main()
