"""One entry point for "products like this": embed a query image with the chosen model and
ask that model's collection, with filters. Shared by the command line, the chat and the API."""
from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from catalog.errors import UserError
from embedding.builder import EmbedderBuilder
from embedding.classifiers import Classifiers
from embedding.embedders import Embedder, check_model_name
from search.query_views import QueryViews, mean_direction
from search.reorder import RerankSettings, rerank
from vectorstore.errors import NoProduct
from vectorstore.filters import Filters, resolve_filters
from vectorstore.store import RETIRED_SLOT, NoIndex, ProductCollection, StoreError

RESULT_FIELDS = ("name", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
                 "season", "year", "usage", "image")


@dataclass(frozen=True)
class Result:
    """One recommended product, in the schema of `search --json`."""
    id: str
    score: float
    metadata: Mapping = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def to_json(self) -> dict:
        out = {"id": self.id, "score": round(self.score, 4)}
        for key in RESULT_FIELDS:
            out[key] = self.metadata.get(key)
        return out


@dataclass
class Answer:
    model: str
    results: list[Result]
    filters: Filters
    timings: dict[str, float] = field(default_factory=dict)
    # The labels whose likelihood for the query reordered the nearest products (empty: by
    # cosine alone, as for models without a fine-tune's classifiers).
    reranked_by: tuple[str, ...] = ()
    # Whether the query's colour (its reading, or a catalog product's own: search/reorder.py)
    # reordered them too.
    colour_preference: bool = False


# How many products' vectors make the look of what words asked for (Searcher.typical).
TYPICAL_SAMPLE = 512


def names_hold(frame, words: Sequence[str]) -> np.ndarray:
    """Rows whose product name holds every word as a whole word, singular or plural ("leather"
    in "Leather Handbag", not in "Leatherette")."""
    names = frame["name"].fillna("").astype(str).str.lower() if "name" in frame.columns else None
    keep = np.ones(len(frame), dtype=bool)
    for word in words:
        word = word.lower().strip()
        if names is None or not word:
            continue
        singular = word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word
        keep &= names.str.contains(rf"\b{re.escape(singular)}(?:s|es)?\b", regex=True).to_numpy()
    return keep if names is not None else np.zeros(len(frame), dtype=bool)


def _one_request(method):
    """The method runs as (part of) one request: the models stay as they are until it returns."""
    @functools.wraps(method)
    def held(self, *args, **kwargs):
        with self.steady():
            return method(self, *args, **kwargs)
    return held


class Searcher:
    """Holds one embedder and one collection handle per model, built on first use.

    `embedders` already built are used as they are; `build` builds the others from a model's
    name (an `EmbedderBuilder`, whose weights and runtime say how; by default PyTorch with ImageNet
    or a fine-tuned file, as `--weights auto`). `rerank` says how the nearest products are reordered
    by what the query most likely is (search/reorder.py); `query_views` which views of a
    shopper's photo are embedded and averaged (search/query_views.py).
    """

    def __init__(self, client, embedders: Mapping[str, Embedder] | None = None,
                 build: Callable[[str], Embedder] = EmbedderBuilder(runtime=None), index_hint: str = "",
                 rerank: RerankSettings = RerankSettings(), query_views: QueryViews = QueryViews(),
                 parser_factory: Callable[[], object] | None = None,
                 colour_factory: Callable[[], object] | None = None,
                 kind_factory: Callable[[], object] | None = None, slot: str | None = None):
        self.client = client
        # The collections searched: the live ones, or those built beside them in `slot` (a tuned
        # model's index, judged as shoppers would meet it before it is switched to).
        self.slot = slot
        # Build the garment parser (embedding/garments.py) and the colour model on first use;
        # None: photos are searched whole, and no colour is named.
        self.parser_factory = parser_factory
        self.colour_factory = colour_factory
        self.kind_factory = kind_factory  # the kind a shopper's own photo shows (embedding/kinds.py)
        self._parser = None
        self._colours = None
        self._kinds = None
        self.rerank = rerank
        self.query_views = query_views
        self.build = build
        self.index_hint = index_hint
        self._embedders: dict[str, Embedder] = dict(embedders or {})
        self._collections: dict[str, ProductCollection] = {}
        self._lock = threading.Lock()
        # torch runs one forward pass at a time well on a small CPU; concurrent requests
        # queue here instead of fighting over the cores.
        self._forward_lock = threading.Lock()
        # A request embeds with one model's weights and searches the index they built; `switch`
        # lets no new request start, waits for those under way (`steady`), then swaps both.
        self._steady = threading.Condition()
        self._requests = 0
        self._switching = False
        self._held = threading.local()

    @contextmanager
    def steady(self) -> Iterator[None]:
        """Hold the models as they are for one request (several calls: embed, then search); a
        `switch` waits for it to end. Re-entrant: a request's own calls nest freely."""
        depth = getattr(self._held, "depth", 0)
        if depth == 0:
            with self._steady:
                while self._switching:  # a switch waits for the requests under way: not for new ones
                    self._steady.wait()
                self._requests += 1
        self._held.depth = depth + 1
        try:
            yield
        finally:
            self._held.depth = depth
            if depth == 0:
                with self._steady:
                    self._requests -= 1
                    self._steady.notify_all()

    def switch(self, model: str, embedder: Embedder, slot: str) -> None:
        """Serve `model` with `embedder` from now on, its collection the one built in `slot`
        (promoted to the live name). Requests under way end on the old pair; those that start
        after get the new one; none sees a mix."""
        model = check_model_name(model)
        with self._steady:
            while self._switching:
                self._steady.wait()
            self._switching = True
            while self._requests:
                self._steady.wait()
        try:
            ProductCollection.promote(self.client, model, slot)
            with self._lock:
                self._embedders[model] = embedder
                self._collections.pop(model, None)
            ProductCollection.drop(self.client, model, RETIRED_SLOT)
        finally:
            with self._steady:
                self._switching = False
                self._steady.notify_all()

    def embedder(self, model: str) -> Embedder:
        model = check_model_name(model)
        with self._lock:
            if model not in self._embedders:
                self._embedders[model] = self.build(model)
            return self._embedders[model]

    def colour_model(self):
        """The colour model, built once; None when this searcher has none."""
        return self._built("_colours", self.colour_factory)

    def kind_model(self):
        """The kind model, built once; None when this searcher has none."""
        return self._built("_kinds", self.kind_factory)

    def kind_reader(self, model: str):
        """What reads the kind of a shopper's photo in `model`'s vectors: the kind model when it
        was trained on these weights, else the weights' own articleType classifier (a fine-tune),
        else None. Only when the searcher reads kinds at all (a kind factory)."""
        kinds = self.kind_model()
        if kinds is None:
            return None
        embedder = self.embedder(model)
        if kinds.reads(model, embedder.weights_id):
            return kinds
        from embedding.kinds import ClassifierKinds
        return ClassifierKinds.of(embedder)

    def garment_parser(self):
        """The garment parser, built once; None when this searcher has none."""
        return self._built("_parser", self.parser_factory)

    def _built(self, slot: str, factory):
        if factory is None:
            return None
        with self._lock:
            if getattr(self, slot) is None:
                setattr(self, slot, factory())
            return getattr(self, slot)

    def collection(self, model: str, *, check_weights: bool = True) -> ProductCollection:
        """The model's collection; with `check_weights`, refuse one built with other weights
        (checked on every call, since a handle may first have been opened without it)."""
        model = check_model_name(model)
        with self._lock:
            if model not in self._collections:
                try:
                    self._collections[model] = ProductCollection.open(self.client, model, slot=self.slot)
                except NoIndex as exc:
                    raise NoIndex(model, self.index_hint or "python app.py index --catalog DIR") from exc
            collection = self._collections[model]
        if check_weights:
            collection.check_weights(self.embedder(model).weights_id)
        return collection

    def forget_connection(self) -> None:
        """Drop cached collection handles (after the server was restarted, say)."""
        with self._lock:
            self._collections.clear()

    def vocabulary(self, model: str) -> dict[str, list]:
        return self.collection(model, check_weights=False).vocabulary()

    def resolve(self, model: str, raw: Mapping[str, Iterable[str]] | Filters | None,
                excluded: Mapping[str, Iterable[str]] | None = None) -> Filters:
        """Typed filter values (`raw` wanted, `excluded` left out) against this model's catalog."""
        if isinstance(raw, Filters):
            return raw
        if not raw and not excluded:
            return Filters()
        return resolve_filters(raw or {}, self.vocabulary(model), excluded)

    @_one_request
    def embed(self, model: str, images: list[Image.Image], views: QueryViews | None = None) -> np.ndarray:
        """One unit query vector per image: its views (`views`, else `query_views`; `AS_IS` for
        an image already framed, such as a crop or an item cut out) embedded in one batch and
        averaged."""
        views = [(views or self.query_views).of(image) for image in images]
        flat = [view for group in views for view in group]
        embedder = self.embedder(model)
        with self._forward_lock:
            vectors = embedder.embed(flat, batch_size=16)
        out, start = [], 0
        for group in views:
            out.append(mean_direction(vectors[start:start + len(group)]))
            start += len(group)
        return np.stack(out) if out else np.zeros((0, embedder.dim), dtype=np.float32)

    @_one_request
    def search_vector(self, model: str, vector: np.ndarray, k: int = 5, filters=None,
                      exclude: tuple[str, ...] = (), *, colour: Mapping[str, float] | None = None) -> Answer:
        """Nearest products to an embedder's vector (`exclude`: ids left out); `colour`: the
        query's p over baseColour values (embedding/colour.py), a soft preference."""
        collection = self.collection(model)
        return self._answer(model, self.embedder(model).classifiers, vector, lambda resolved, n: collection.search(
            vector, k=n, filters=resolved, exclude=exclude), k, filters, colour)

    def _answer(self, model: str, prior: Classifiers | None, vector: np.ndarray, search, k: int,
                filters, colour: Mapping[str, float] | None = None, own_colour: str | None = None) -> Answer:
        """`search(filters, n)` gives the n nearest; more than k of them are reordered by what
        the query most likely is, by their labels' votes and the classifiers (`prior`, if any,
        on `vector`, the embedder's), and by the query's colour: its reading (`colour`, if any)
        or a catalog product's own (`own_colour`)."""
        resolved = self.resolve(model, filters)
        used = self.rerank.labels_for(prior)
        coloured = self.rerank.uses_colour(colour)
        own = own_colour if self.rerank.uses_own_colour(own_colour) else None
        started = time.perf_counter()
        if used or coloured or own:
            hits = rerank(search(resolved, max(k, self.rerank.candidates)), self.rerank, prior, vector,
                          colour if coloured else None, own)[:k]
        else:
            hits = search(resolved, k)
        answer = Answer(model, [Result(h.id, h.score, h.metadata) for h in hits], resolved, reranked_by=used,
                        colour_preference=coloured or bool(own))
        answer.timings["query"] = time.perf_counter() - started
        return answer

    @_one_request
    def search_images(self, model: str, images: list[Image.Image], k: int = 5, filters: Filters | None = None,
                      views: QueryViews | None = None, *,
                      colour: Sequence[Mapping[str, float] | None] | None = None) -> list[Answer]:
        """`views`: how each photo is looked at (default `query_views`; `AS_IS` for an item
        already cut out of its photo); `colour`: per photo, its colour reading (or None), a
        soft preference for products of that colour."""
        colours = list(colour) if colour is not None else [None] * len(images)
        if len(colours) != len(images):
            raise UserError(f"{len(colours)} colour readings for {len(images)} images")
        self.collection(model)  # refuse a weights mismatch before any work
        resolved = self.resolve(model, filters)
        started = time.perf_counter()
        vectors = self.embed(model, images, views)
        embed_seconds = (time.perf_counter() - started) / max(1, len(images))
        answers = []
        for vector, reading in zip(vectors, colours):
            answer = self.search_vector(model, vector, k, resolved, colour=reading)
            answer.timings["embed"] = embed_seconds
            answers.append(answer)
        return answers

    def search_image(self, model: str, image: Image.Image, k: int = 5, filters: Filters | None = None,
                     views: QueryViews | None = None, *, colour: Mapping[str, float] | None = None) -> Answer:
        return self.search_images(model, [image], k, filters, views, colour=[colour])[0]

    @_one_request
    def typical(self, model: str, filters: Filters | None = None, words: Sequence[str] = (), k: int = 5) -> Answer:
        """Products for words alone: those that pass `filters`, the ones whose names hold every
        one of `words` first; each group in order of closeness to the look of the products
        named with the words (else of all that pass): the mean direction of their stored
        vectors, from at most `TYPICAL_SAMPLE` of them spread evenly over their ids. The most
        typical looking products of what was asked come first, in the same order every time."""
        started = time.perf_counter()
        collection = self.collection(model, check_weights=False)
        resolved = self.resolve(model, filters)
        frame = collection.metadata.frame()
        within = frame[resolved.mask(frame)]
        named = sorted(map(str, within.index[names_hold(within, words)])) if words else []
        anchors = named or sorted(map(str, within.index))
        if not anchors:
            return Answer(model, [], resolved)
        sample = collection.vectors_of(anchors[::max(1, len(anchors) // TYPICAL_SAMPLE)][:TYPICAL_SAMPLE])
        centre = mean_direction(np.stack(list(sample.values())))
        named_ids = set(named)
        first = sorted(((float(vector @ centre), pid) for pid, vector in sample.items() if pid in named_ids),
                       reverse=True)[:k]
        records = collection.metadata.records([pid for _, pid in first])
        results = [Result(pid, score, records.get(pid, {})) for score, pid in first]
        if len(results) < k:
            hits = collection.search_stored(centre, k - len(results), resolved, exclude=tuple(r.id for r in results))
            results += [Result(h.id, h.score, h.metadata) for h in hits]
        answer = Answer(model, results, resolved)
        answer.timings["query"] = time.perf_counter() - started
        return answer

    @_one_request
    def similar_to(self, model: str, product_id: str, k: int = 5, filters=None) -> Answer:
        """Products like a stored one, by its stored vector; the product itself is left out, and
        those of its own colour come first among shapes alike (search/reorder.py)."""
        collection = self.collection(model, check_weights=False)
        vector = collection.vector_of(product_id)
        if vector is None:
            raise NoProduct(model, product_id)
        own_colour = (collection.metadata.record(product_id) or {}).get("baseColour")
        # A stored vector is in the collection's space already, whatever weights built it; the
        # classifiers see the embedder's vector it was made from.
        return self._answer(model, self._prior_of(model, collection), collection.unprepare(vector),
                            lambda resolved, n: collection.search_stored(vector, k=n, filters=resolved,
                                                                         exclude=(product_id,)), k, filters,
                            own_colour=own_colour)

    def _prior_of(self, model: str, collection: ProductCollection) -> Classifiers | None:
        """The classifiers of the embedder already built for `model`, if they are those of the
        collection's vectors (a stored vector is searched whatever weights made it)."""
        with self._lock:
            embedder = self._embedders.get(model)
        if embedder is None or embedder.weights_id != collection.weights_id:
            return None
        return embedder.classifiers

    def product(self, model: str, product_id: str) -> dict | None:
        return self.collection(model, check_weights=False).metadata.record(product_id)

    @_one_request
    def warm_up(self, models: Iterable[str]) -> None:
        """Pay the first-call costs (model build and trace, HNSW load) before the first shopper."""
        parser = self.garment_parser()
        if parser is not None:
            parser.parse(Image.new("RGB", (64, 96), (128, 128, 128)))
        for model in models:
            embedder = self.embedder(model)
            embedder.warm_up()
            collection = self.collection(model)
            if collection.count():
                collection.search(np.ones(embedder.dim, dtype=np.float32), k=1)


__all__ = ["Answer", "Result", "Searcher", "StoreError", "TYPICAL_SAMPLE", "names_hold"]
