"""A product small in a busy photo: catalog products the parser never saw pasted (at 8-15 % of
the frame) onto street scenes it never trained on, searched with items on (the item found on
the product) and off (the whole photo, zoomed views), P@5 by articleType side by side.

    python -m bench.small_products --db DB --model efficientnet_lite0 --weights imagenet [--n 120]
"""
from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CATALOG, ROOT, add_search_arguments, table
from catalog.street import street_photos
from embedding.builder import EmbedderBuilder
from embedding.garments import GARMENT_CLASSES, SHIPPED_FILE, GarmentParser, box_iou
from evaluation.street import held_out_of
from operations import LookSettings, SearchPolicy, find_the_look
from search import Searcher
from training.composites import eligible_products, paste
from vectorstore import StoreSettings, make_client

DEFAULT_STREET = ROOT.parent / "shared" / "photos" / "street"


def main() -> None:
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--street", default=str(DEFAULT_STREET))
    parser.add_argument("--parser", default=str(SHIPPED_FILE))
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--area", default="0.08,0.15", help="the product's box as a share of the frame: LOW,HIGH")
    args = parser.parse_args()
    area = tuple(float(v) for v in args.area.split(","))
    held = set(held_out_of(Path(args.parser)))
    scenes = [p for p in street_photos(Path(args.street)) if p.stem in held]
    _, products = eligible_products(Path(args.catalog), 0.1, 0)
    searcher = Searcher(make_client(StoreSettings(path=args.db)), build=EmbedderBuilder(weights=args.weights, runtime=None),
                        parser_factory=lambda: GarmentParser.load(Path(args.parser)))
    policy = SearchPolicy(models=(args.model,), default_model=args.model)
    rng = random.Random(1)
    on, off, found, right = [], [], [], []
    from PIL import Image
    for _ in range(args.n):
        product, index = rng.choice(products)
        scene = rng.choice(scenes)
        photo, _, box = paste(Image.open(scene.image), None, product, index, rng, area)
        data = io.BytesIO()
        photo.save(data, format="JPEG", quality=90)
        look = find_the_look(searcher, policy, data.getvalue())
        match = max((f for f in look.items if f.item is not None), key=lambda f: box_iou(f.item.box, box), default=None)
        hit = match is not None and box_iou(match.item.box, box) >= 0.3
        found.append(hit)
        right.append(hit and match.kind == GARMENT_CLASSES[index].name)
        results = match.answer.results if hit else look.first.results
        on.append(np.mean([r.get("articleType") == product.articleType for r in results]))
        whole = find_the_look(searcher, policy, data.getvalue(), settings=LookSettings(items=False))
        off.append(np.mean([r.get("articleType") == product.articleType for r in whole.first.results]))
    print(f"{args.n} held-out products pasted at {area[0]:.0%}-{area[1]:.0%} of held-out street scenes, {args.model}")
    print(table([{"search": "items on (the item found on the product)", "P@5 articleType": round(float(np.mean(on)), 3),
                  "product found (box IoU >= 0.3)": round(float(np.mean(found)), 3),
                  "found as its own kind": round(float(np.mean(right)), 3)},
                 {"search": "items off (the whole photo)", "P@5 articleType": round(float(np.mean(off)), 3),
                  "product found (box IoU >= 0.3)": "", "found as its own kind": ""}]))


if __name__ == "__main__":
    main()
