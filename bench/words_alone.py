"""Words alone in the chat: what the top k are, for the queries shoppers type.

    python -m bench.words_alone --db DB [--k 5] ["a query" ...]

For each query: the filters understood, the free words looked for in names, the share of the top
k that match every filter (the kind, colour, gender... named) and that hold the free words, the
time, and the products themselves.
"""
from __future__ import annotations

import argparse
import time

from assistant.chat import Assistant
from assistant.settings import AssistantSettings
from bench.common import add_search_arguments
from embedding.builder import EmbedderBuilder
from operations import SearchPolicy
from search import Searcher
from search.searcher import names_hold
from vectorstore import StoreSettings, make_client

QUERIES = ("red dress for women", "black leather bag", "white sneakers for men", "floral summer dress")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_arguments(parser)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("queries", nargs="*", default=list(QUERIES))
    args = parser.parse_args()
    searcher = Searcher(make_client(StoreSettings(path=args.db)), build=EmbedderBuilder(weights=args.weights))
    chat = Assistant(searcher, AssistantSettings(policy=SearchPolicy(models=(args.model,), default_model=args.model,
                                                                     k=args.k)))
    frame = searcher.collection(args.model, check_weights=False).metadata.frame()
    for query in args.queries:
        started = time.perf_counter()
        reply, state = chat.handle_turn(chat.new_state(), query)
        seconds = time.perf_counter() - started
        ids = [r.id for r in reply.results]
        rows = frame.loc[ids]
        matching = state.filters.mask(rows).mean() if ids else 0.0
        words = state.query.words if state.query else ()
        named = names_hold(rows, words).mean() if ids and words else float("nan")
        print(f"\n“{query}”: {reply.filters_line or 'no filter'}; free words {list(words)}; "
              f"top {len(ids)}: all filters {matching:.2f}, free words in name {named:.2f}; {seconds * 1000:.0f} ms")
        print(f"  {reply.headline}")
        for r in reply.results:
            print(f"  {r.id:>6}  {r.get('articleType')}, {r.get('baseColour')}, {r.get('gender')}, "
                  f"{r.get('season')}: {r.get('name')}")


if __name__ == "__main__":
    main()
