"""A photo plus a colour or gender word: does the photo's kind hold? (operations/keep_kind.py)

    python -m bench.colour_word --db DB [--n 300] [--catalog ../shared/catalog]

Each query is a product's own catalog shot, searched against the index with the product left
out. Its word is a colour other than its own that the catalog has for its articleType (at least
MIN_OF_KIND products: the catalog can answer "black heels"), or its own gender. Prints articleType
P@5 for the photo alone, and with each word with the kind kept off (the filter alone) and on.
"""
from __future__ import annotations

import argparse
import random
from collections import Counter

from bench.common import DEFAULT_CATALOG, add_search_arguments, table
from catalog import open_image, read_catalog
from embedding.builder import EmbedderBuilder
from operations.keep_kind import search_keeping_kind
from search import Searcher
from vectorstore import StoreSettings, make_client

MIN_OF_KIND = 5


def precision(results, kind: str) -> float:
    return sum(r.get("articleType") == kind for r in results) / max(1, len(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_arguments(parser)
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    products = read_catalog(args.catalog).products
    colours_of = Counter((p.articleType, p.baseColour) for p in products)
    rng = random.Random(0)
    queries = []
    for product in rng.sample(products, len(products)):
        others = sorted(c for (t, c), n in colours_of.items()
                        if t == product.articleType and c != product.baseColour and n >= MIN_OF_KIND)
        if others:
            queries.append((product, rng.choice(others)))
        if len(queries) == args.n:
            break
    searcher = Searcher(make_client(StoreSettings(path=args.db)),
                        build=EmbedderBuilder(weights=args.weights))
    model, k = args.model, args.k
    scores: dict[str, list[float]] = {name: [] for name in (
        "photo alone", "colour word, filter alone", "colour word, kind kept",
        "gender word, filter alone", "gender word, kind kept")}
    for product, colour in queries:
        vector = searcher.embed(model, [open_image(product.image)])[0]
        exclude = (product.id,)
        kind = product.articleType
        alone = searcher.search_vector(model, vector, k=k, exclude=exclude)
        scores["photo alone"].append(precision(alone.results, kind))
        for word, raw in (("colour", {"baseColour": [colour]}), ("gender", {"gender": [product.gender]})):
            wanted = searcher.resolve(model, raw)
            plain = searcher.search_vector(model, vector, k=k, filters=wanted, exclude=exclude)
            kept = search_keeping_kind(searcher, model, vector, k, wanted, exclude=exclude)
            scores[f"{word} word, filter alone"].append(precision(plain.results, kind))
            scores[f"{word} word, kind kept"].append(precision(kept.results, kind))
    base = sum(scores["photo alone"]) / len(queries)
    rows = [{"query": name, f"articleType P@{k}": f"{sum(v) / len(v):.3f}",
             "vs photo alone": f"{sum(v) / len(v) - base:+.3f}"} for name, v in scores.items()]
    print(f"{len(queries)} catalog products of {args.catalog}, each left out of {args.db} ({model}, "
          f"weights {args.weights}); the colour word is another colour the catalog has >= {MIN_OF_KIND} "
          f"of for its articleType")
    print(table(rows))


if __name__ == "__main__":
    main()
