"""Shop the look, timed: the garment parser alone per photo, on ONNX Runtime (served) and on
PyTorch, its first member alone (Lite0, the parser before it had three), and the whole answer for
an outfit (parse + cut out + embed + query for every item) beside the whole photo searched as before (`items` off), alternately on the same photos so the
ratios are of the same moments.

    python -m bench.look_latency --db DB --model efficientnet_lite0 --weights imagenet \
        [--photos ../shared/photos/street/images] [--n 40]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import ROOT, add_search_arguments, pct, table
from catalog import open_image
from embedding.builder import EmbedderBuilder
from embedding.garments import GarmentParser
from operations import LookSettings, SearchPolicy, find_the_look
from search import Searcher
from vectorstore import StoreSettings, make_client

DEFAULT_PHOTOS = ROOT.parent / "shared" / "photos" / "street" / "images"


def main() -> None:
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    paths = sorted(Path(args.photos).glob("*.jpg"))[: args.n]
    searcher = Searcher(make_client(StoreSettings(path=args.db)), build=EmbedderBuilder(weights=args.weights, runtime=None),
                        parser_factory=GarmentParser.load)
    searcher.warm_up([args.model])
    policy = SearchPolicy(models=(args.model,), default_model=args.model)
    garments = searcher.garment_parser()
    eager = GarmentParser.load(runtime="eager")
    network = garments.network
    first = GarmentParser([network.heads[0]], [network.backbones[0]], runtime="auto")
    parse, parse_eager, parse_first, look, whole, items = [], [], [], [], [], []
    for path in paths:
        image = open_image(path)
        started = time.perf_counter()
        garments.parse(image)
        parse.append(time.perf_counter() - started)
        started = time.perf_counter()
        eager.parse(image)
        parse_eager.append(time.perf_counter() - started)
        started = time.perf_counter()
        first.parse(image)
        parse_first.append(time.perf_counter() - started)
        started = time.perf_counter()
        found = find_the_look(searcher, policy, str(path))
        look.append(time.perf_counter() - started)
        items.append(len(found.items))
        started = time.perf_counter()
        find_the_look(searcher, policy, str(path), settings=LookSettings(items=False))
        whole.append(time.perf_counter() - started)
    rows = [{"what": name, "p50 ms": round(pct(v, 50) * 1000), "p95 ms": round(pct(v, 95) * 1000)}
            for name, v in ((f"parse only ({garments.runtime})", parse), ("parse only (eager)", parse_eager),
                            (f"first member alone ({first.runtime})", parse_first),
                            ("items on (whole answer)", look), ("items off (whole photo)", whole))]
    print(f"{len(paths)} photos, {sum(items) / max(1, len(items)):.1f} items each on average, model {args.model}")
    print(table(rows))
    for name, a, b in (("items on / items off", look, whole), (f"parse eager / {garments.runtime}", parse_eager, parse),
                          ("parser / its first member alone", parse, parse_first)):
        ratios = sorted(x / y for x, y in zip(a, b))
        print(f"{name}, pair by pair: median {ratios[len(ratios) // 2]:.2f}x")


if __name__ == "__main__":
    main()
