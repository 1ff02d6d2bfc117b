"""Labelled real photos (folders by class, e.g. ../shared/photos/handheld/validation) searched
with items on (the parser's most prominent item, cut out, within its category) and off (the
whole photo), side by side on the same photos: P@5 by kind (lenient, catalog/photo_labels.py),
and by colour where a colours.csv labels them.

    python -m bench.real_photos --db DB --model efficientnet_lite0 --weights imagenet [--photos DIR]
        [--colour-weight W]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import ROOT, add_search_arguments, table
from catalog.photo_labels import read_photo_folder
from embedding.builder import EmbedderBuilder
from embedding.colour import ColourModel
from embedding.garments import GarmentParser
from embedding.kinds import KindModel
from evaluation.photos import outcome_of, score_photos
from operations import LookSettings, SearchPolicy, find_the_look
from search import RerankSettings, Searcher
from vectorstore import StoreSettings, make_client

DEFAULT_PHOTOS = ROOT.parent / "shared" / "photos" / "handheld" / "validation"


def main() -> None:
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--kind-model", help="the kind model file (default: the shipped one)")
    parser.add_argument("--colour-weight", type=float, help="the colour reading's weight (default: the served one)")
    args = parser.parse_args()
    photos = read_photo_folder(args.photos)
    rerank = RerankSettings() if args.colour_weight is None else RerankSettings(colour_weight=args.colour_weight)
    client = make_client(StoreSettings(path=args.db))
    plain = Searcher(client, build=EmbedderBuilder(weights=args.weights, runtime=None), rerank=rerank,
                     parser_factory=GarmentParser.load, colour_factory=ColourModel.load)
    kinds = KindModel.load(Path(args.kind_model) if args.kind_model else None)
    kinded = Searcher(client, embedders={args.model: plain.embedder(args.model)}, parser_factory=GarmentParser.load,
                      colour_factory=ColourModel.load, kind_factory=lambda: kinds, rerank=rerank)
    policy = SearchPolicy(models=(args.model,), default_model=args.model, k=args.k)
    rows = []
    for name, settings, searcher in (("items on, kind on", LookSettings(), kinded),
                                     ("items off, kind on", LookSettings(items=False), kinded),
                                     ("items on, kind off (before)", LookSettings(), plain)):
        outcomes = []
        for photo in photos:
            look = find_the_look(searcher, policy, str(photo.path), settings=settings)
            found = look.items[0]
            outcomes.append(outcome_of(photo, [r.metadata for r in found.answer.results], found.colour))
        scores = score_photos(outcomes, args.k).to_json()
        rows.append({"search": name, **{f"P@{args.k} {level}": None if v is None else round(v, 3)
                                        for level, v in scores["precision"].items()},
                     "colour read right": scores["colour_reading"] and round(scores["colour_reading"], 3)})
    print(f"{len(photos)} photos from {args.photos}, {args.model}")
    print(table(rows))


if __name__ == "__main__":
    main()
