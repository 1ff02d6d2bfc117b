"""One evaluation run: bring the index up to date, ask every model the same queries, score
the answers and measure what each model costs.

Queries are either a folder in the catalog layout (its images embedded, nothing excluded) or
leave-one-out over a seeded sample of the catalog: a clean query is the product's own stored
vector with the product left out of its results; a photo-like query is `shopper_photo` of the
product's image, embedded and searched with the product left out. Besides them, `photos` (a
folder of labelled real photos, catalog/photo_labels.py) is scored by kind and colour,
leniently (evaluation/photos.py). Every photo (photo-like or real) is read by the colour
model, and with `colour_preference` its reading reorders the candidates (search/reorder.py).
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from catalog import Catalog, ImageError, open_image, read_catalog
from catalog.errors import UserError
from catalog.handheld import handheld_photo
from catalog.photo_labels import LabelledPhoto, read_photo_folder
from catalog.photolike import PhotoLikeSettings, shopper_photo
from catalog.variants import ImageVariant, write_variant
from embedding import MODEL_NAMES, Embedder
from embedding.builder import EmbedderBuilder
from embedding.colour import ColourModel
from embedding.kinds import KindModel
from evaluation.metrics import COMBINED_LEVELS, LABEL_LEVELS, PRIMARY_LEVEL, QueryOutcome, Scores, score
from evaluation.model_facts import (
    EmbedRate,
    IndexSize,
    forward_flops,
    index_size,
    parameter_count,
    preprocessing_fit,
    rate_from_index,
    timed_rate,
    typical_size,
)
from evaluation.photos import PhotoScores, outcome_of, score_photos
from indexing import IndexReport, index_catalog
from operations.keep_kind import kind_scope, search_photo
from search import QueryViews, RerankSettings, Searcher
from vectorstore import StoreSettings, make_client
from vectorstore.filters import Filters

PHOTO_STYLES = ("cutout", "handheld")


@dataclass(frozen=True)
class EvaluationSettings:
    catalog: Path
    store: StoreSettings
    models: tuple[str, ...] = MODEL_NAMES
    weights: str = "imagenet"
    device: str = "cpu"
    k: int = 5
    sample: int = 1500                 # leave-one-out queries
    seed: int = 0
    queries: Path | None = None        # a folder in the catalog layout instead of leave-one-out
    # Leave-one-out over exactly these products instead of a sample: the products a fine-tuning
    # run held out (never trained on), so a fine-tuned file is judged on what it has not seen,
    # against the whole index, as a shop serves it. `held_out_from` names the file they came from.
    held_out: tuple[str, ...] = ()
    held_out_from: Path | None = None
    photo_like: bool = True
    photo: PhotoLikeSettings = PhotoLikeSettings()
    # Which shopper photos: "cutout" (catalog/photolike.py, what fine-tuning also trains on) or
    # "handheld" (catalog/handheld.py, made otherwise: does a model's gain carry over?).
    photo_style: str = "cutout"
    # The study's experiments. A seeded sample of the catalog instead of all of it (queries are
    # then the held-out or sampled products inside it); the catalog's images degraded as named,
    # index and queries alike, in a copy written to `variant_dir`; every model's preprocessing
    # at another input size or framing than its weights' own.
    catalog_sample: int | None = None
    variant: ImageVariant = ImageVariant()
    variant_dir: Path | None = None
    input_size: int | None = None
    framing: str | None = None
    # How models whose weights carry a fine-tune's classifiers order the nearest products (off:
    # cosine alone, to measure what reranking adds).
    rerank: RerankSettings = RerankSettings()
    # Which views of a query photo are embedded and averaged, as the assistant does (AS_IS: the
    # photo alone, to measure what the zoomed views add).
    query_views: QueryViews = QueryViews()
    # Labelled real photos (DIR/<class>/*.jpg, DIR/colours.csv), scored beside the other queries.
    photos: Path | None = None
    # Whether a photo's colour reading (the model in `colour_model`, default the shipped one)
    # reorders its candidates; off: read (and reported) only.
    colour_preference: bool = True
    colour_model: Path | None = None
    # Whether a real photo is searched within the kind the kind model reads in it, as the
    # product does (operations/keep_kind.py); `kind_model`: its file (default the shipped one).
    kind: bool = True
    kind_model: Path | None = None
    batch_size: int = 32
    # Latency is timed per query (one image embedded, then searched). With photo-like queries
    # those are timed; without, this many clean catalog images are embedded one by one.
    latency_queries: int = 200
    rate_probe_images: int = 64
    # An indexing run this large or larger gives the embedding rate; a smaller one is
    # dominated by the first call's tracing, so a timed batch is used instead.
    rate_from_index_min: int = 500
    worst: int = 10
    min_queries_per_type: int = 3      # for the worst article types
    examples: int = 6                  # photo-like examples shown in the report
    show_progress: bool = True

    def to_json(self) -> dict:
        out = asdict(self)
        out["catalog"] = str(self.catalog)
        out["queries"] = str(self.queries) if self.queries else None
        out["held_out"] = len(self.held_out)
        out["held_out_from"] = str(self.held_out_from) if self.held_out_from else None
        out["store"] = self.store.where
        out["variant"] = {**asdict(self.variant), "name": self.variant.name}
        out["variant_dir"] = str(self.variant_dir) if self.variant_dir else None
        out["photos"] = str(self.photos) if self.photos else None
        out["colour_model"] = str(self.colour_model) if self.colour_model else None
        return out


@dataclass(frozen=True)
class Query:
    id: str
    labels: dict
    image: Path
    exclude: tuple[str, ...] = ()


@dataclass
class Latency:
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    queries: int
    measured_on: str

    @classmethod
    def of(cls, seconds: Sequence[float], measured_on: str) -> Latency:
        if not seconds:
            return cls(None, None, None, 0, measured_on)
        ms = np.asarray(seconds) * 1000
        return cls(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean()), len(ms),
                   measured_on)


@dataclass
class ModelEvaluation:
    model: str
    weights_id: str
    parameters: int
    flops: int                      # one image's forward pass at its input size
    input_size: int
    embedding_size: int
    index_size: IndexSize
    embed_rate: EmbedRate
    preprocessing: dict
    latency: Latency
    clean: Scores
    photo_like: Scores | None = None
    photos: PhotoScores | None = None
    # Whether the photos' colour readings reordered their candidates, and with what weight.
    colour_preference: bool = False
    colour_weight: float = 0.0
    # What a clean query's candidates of its product's own baseColour gain (search/reorder.py).
    own_colour_bonus: float = 0.0
    # The labels whose likelihood reordered the nearest products (empty: cosine order).
    reranked_by: tuple[str, ...] = ()
    # What judged those labels for the query: "neighbours" (their labels' votes), "classifiers".
    reranked_with: tuple[str, ...] = ()
    # Every query's outcome, by kind ("clean", "photo-like"), for tests and digging; metrics.json
    # keeps the scores only.
    outcomes: dict[str, list[QueryOutcome]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("outcomes")
        out["clean"] = self.clean.to_json()
        out["photo_like"] = self.photo_like.to_json() if self.photo_like else None
        out["photos"] = self.photos.to_json() if self.photos else None
        return out


@dataclass
class Evaluation:
    settings: EvaluationSettings
    catalog: dict
    queries: dict
    index: dict
    models: list[ModelEvaluation]
    seconds: float = 0.0
    machine: dict = field(default_factory=dict)
    # (query id, catalog image, photo-like image) for the report; not part of metrics.json.
    examples: list[tuple[str, Image.Image, Image.Image]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {"settings": self.settings.to_json(), "catalog": self.catalog, "queries": self.queries,
                "index": self.index, "seconds": self.seconds, "machine": self.machine,
                "label_levels": list(LABEL_LEVELS),
                "models": {m.model: m.to_json() for m in self.models}}


def _load_average() -> float | None:
    # Latencies on a shared machine mean little without how busy it was.
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _labels(product) -> dict:
    return {level: getattr(product, level) for level in LABEL_LEVELS if level not in COMBINED_LEVELS}


def _index_facts(report: IndexReport) -> dict:
    return {"images": report.images, "seconds": report.seconds,
            "images_per_s": report.images / report.seconds if report.images and report.seconds else None,
            "indexed": dict(report.indexed), "unchanged": dict(report.unchanged), "removed": dict(report.removed),
            "skipped": len(report.skipped), "stages_s": dict(report.timer.seconds),
            "reused": not any(report.indexed.values())}


def _leave_one_out(catalog: Catalog, stored: set[str], settings: EvaluationSettings) -> list[Query]:
    candidates = [p for p in catalog.products if p.id in stored]
    if not candidates:
        raise UserError("no catalog product is in the index; nothing to query")
    if settings.held_out:
        wanted = set(settings.held_out)
        chosen = [p for p in candidates if p.id in wanted]
        if not chosen:
            raise UserError(f"none of the {len(wanted)} held-out products of {settings.held_out_from or 'the run'} "
                             f"is in this catalog's index; was it trained on another catalog?")
        return [Query(p.id, _labels(p), p.image, exclude=(p.id,)) for p in chosen]
    chosen = random.Random(settings.seed).sample(candidates, min(settings.sample, len(candidates)))
    return [Query(p.id, _labels(p), p.image, exclude=(p.id,)) for p in chosen]


def _folder_queries(folder: Path) -> tuple[list[Query], list[str]]:
    """The folder's products as queries, and why some could not be used."""
    query_catalog = read_catalog(folder)
    queries, skipped = [], [f"{s.id or '?'}: {s.reason}" for s in query_catalog.skipped]
    for p in query_catalog.products:
        try:
            open_image(p.image)
        except ImageError as exc:
            skipped.append(f"{p.id}: {exc}")
            continue
        queries.append(Query(p.id, _labels(p), p.image))
    if not queries:
        raise UserError(f"{folder}: no query with a readable row and image")
    return queries, skipped


class _Run:
    """State shared by the steps of one evaluation."""

    def __init__(self, settings: EvaluationSettings, colour: ColourModel | None = None):
        self.settings = settings
        self.progress = settings.show_progress
        self.colour = colour

    def bar(self, items, desc: str):
        return tqdm(items, desc=desc, unit="query", disable=not self.progress, leave=False)

    def outcome(self, query: Query, answer, n_relevant: dict[str, int]) -> QueryOutcome:
        kind = query.labels.get(PRIMARY_LEVEL)
        # The index holds the query's own product in leave-one-out; it cannot be found.
        relevant = max(0, n_relevant.get(kind, 0) - (1 if query.exclude else 0)) if kind is not None else None
        return QueryOutcome(query.id, query.labels, [{"id": r.id, **r.metadata} for r in answer.results],
                            relevant)

    def timed_query(self, searcher: Searcher, model: str, image: Image.Image, query: Query):
        """A photo embedded and searched (its colour read first, when there is a model), the
        seconds it took, and the colour read (None: not read)."""
        started = time.perf_counter()
        colour = self.colour.probabilities(image) if self.colour is not None else None
        vector = searcher.embed(model, [image])[0]
        answer = searcher.search_vector(model, vector, self.settings.k, exclude=query.exclude,
                                        colour=colour if self.settings.colour_preference else None)
        seconds = time.perf_counter() - started
        return answer, seconds, max(colour, key=colour.get) if colour else None


def _ask(run: _Run, searcher: Searcher, model: str, queries: list[Query], photos: list[Image.Image],
         counts: dict[str, int], mode: str) -> tuple[dict[str, list[QueryOutcome]], Latency]:
    """Every query, clean and photo-like, to one model; latency from the queries that embed."""
    k = run.settings.k
    latencies: list[float] = []
    clean: list[QueryOutcome] = []
    for query in run.bar(queries, f"{model} clean queries"):
        if mode == "leave-one-out":
            answer = searcher.similar_to(model, query.id, k=k)  # the stored vector, itself left out
        else:
            answer, seconds, _ = run.timed_query(searcher, model, open_image(query.image), query)
            latencies.append(seconds)
        clean.append(run.outcome(query, answer, counts))
    outcomes = {"clean": clean}
    measured_on = "query images (embed one image + search)"
    if photos:
        latencies, outcomes["photo-like"] = [], []
        for query, photo in zip(run.bar(queries, f"{model} photo-like queries"), photos):
            answer, seconds, _ = run.timed_query(searcher, model, photo, query)
            latencies.append(seconds)
            outcomes["photo-like"].append(run.outcome(query, answer, counts))
        measured_on = "photo-like queries (embed one image + search)"
    elif mode == "leave-one-out":
        for query in run.bar(queries[:run.settings.latency_queries], f"{model} latency"):
            latencies.append(run.timed_query(searcher, model, open_image(query.image), query)[1])
        measured_on = "clean catalog images (embed one image + search)"
    return outcomes, Latency.of(latencies, measured_on)


def _ask_photos(run: _Run, searcher: Searcher, model: str, photos: list[LabelledPhoto]):
    """Every labelled real photo, as a shopper would send it."""
    outcomes = []
    for photo in run.bar(photos, f"{model} real photos"):
        image = open_image(photo.path)
        colour = run.colour.probabilities(image) if run.colour is not None else None
        vector = searcher.embed(model, [image])[0]
        answer = search_photo(searcher, model, vector, run.settings.k, Filters(),
                              kind_scope(searcher, model, vector, image),
                              colour=colour if run.settings.colour_preference else None)
        outcomes.append(outcome_of(photo, [r.metadata for r in answer.results],
                                   max(colour, key=colour.get) if colour else None))
    return outcomes


def _colour_model(settings: EvaluationSettings) -> ColourModel | None:
    """The colour model photos are read with: the one named, else the shipped file; none when
    the shipped file is missing (the report says photos were not read)."""
    try:
        return ColourModel.load(settings.colour_model)
    except FileNotFoundError:
        if settings.colour_model is not None:
            raise UserError(f"--colour-model {settings.colour_model}: no such file") from None
        return None


def run_evaluation(settings: EvaluationSettings, embedders: Mapping[str, Embedder] | None = None) -> Evaluation:
    """Index (incrementally), query, score and measure; raises ValueError/StoreError with a
    message a person can act on. `embedders`: models already built (by app.py, or a test);
    the others are loaded with the settings' weights."""
    _check_settings(settings)
    started, load_before = time.perf_counter(), _load_average()
    run = _Run(settings, _colour_model(settings))
    real_photos = read_photo_folder(settings.photos) if settings.photos else []
    catalog = _catalog(settings)
    built = dict(embedders or {})
    builder = EmbedderBuilder(weights=settings.weights, device=settings.device, runtime=None,
                              input_size=settings.input_size, framing=settings.framing)
    embedders = {m: built.get(m) or builder.build(m) for m in settings.models}
    searcher, report = _index(settings, catalog, embedders)
    tables = {m: searcher.collection(m).metadata.frame() for m in settings.models}
    stored = set.intersection(*(set(t.index) for t in tables.values()))
    queries, skipped_queries, mode = _queries(settings, catalog, stored)
    photos = _photo_like(run, settings, queries)
    examples = [(q.id, open_image(q.image), photos[i]) for i, q in enumerate(queries[:settings.examples])] \
        if photos else []
    image_size = typical_size([p.image for p in catalog.products])
    models = [_evaluate_model(run, searcher, embedder, report, catalog, stored, tables[name], queries, photos,
                              mode, image_size, real_photos)
              for name, embedder in embedders.items()]
    return Evaluation(
        settings=settings,
        catalog={"folder": str(settings.catalog), "products": len(catalog.products),
                 "variant": settings.variant.name, "sample": settings.catalog_sample,
                 "skipped": len(catalog.skipped), "indexed": len(stored),
                 "image_size": list(image_size) if image_size else None},
        queries={"mode": mode, "count": len(queries), "photo_like": bool(photos),
                 "held_out_from": str(settings.held_out_from) if settings.held_out else None,
                 "held_out_missing": len(set(settings.held_out)) - len(queries) if settings.held_out else 0,
                 "folder": str(settings.queries) if settings.queries else None,
                 "skipped": skipped_queries,
                 "photos": {"folder": str(settings.photos), "count": len(real_photos),
                            "with_colour": sum(p.colour is not None for p in real_photos)}
                 if settings.photos else None,
                 "colour_model": str(settings.colour_model or "shipped") if run.colour else None},
        index=_index_facts(report), models=models, seconds=time.perf_counter() - started,
        machine={"cpus": os.cpu_count(), "load_average_start": load_before, "load_average_end": _load_average()},
        examples=examples)


def _check_settings(settings: EvaluationSettings) -> None:
    if settings.k < 1:
        raise UserError("--k must be at least 1")
    if not settings.models:
        raise UserError("no model to evaluate")
    if not settings.queries and settings.sample < 1:
        raise UserError("--sample must be at least 1")
    if settings.queries and settings.held_out:
        raise UserError("--queries and --held-out both choose the queries; give one of them")
    if settings.catalog_sample is not None and settings.catalog_sample < 2:
        raise UserError("--catalog-sample must be at least 2 products")
    if settings.input_size is not None and settings.input_size < 32:
        raise UserError("--input-size must be at least 32 pixels")
    if settings.queries and not Path(settings.queries).is_dir():
        raise UserError(f"--queries {settings.queries}: no such folder")
    if settings.photo_style not in PHOTO_STYLES:
        raise UserError(f"--photo-style {settings.photo_style}: expected one of {', '.join(PHOTO_STYLES)}")


def _catalog(settings: EvaluationSettings) -> Catalog:
    """The catalog the run indexes and queries: all of it or a seeded sample, its images as
    they are or degraded as the settings' variant says (in a copy; ids kept)."""
    catalog = read_catalog(settings.catalog)
    if not catalog.products:
        raise UserError(f"{settings.catalog}: no product with an image to index")
    if settings.catalog_sample and settings.catalog_sample < len(catalog.products):
        keep = set(random.Random(f"{settings.seed}:catalog").sample(range(len(catalog.products)),
                                                                     settings.catalog_sample))
        catalog = replace(catalog, products=[p for i, p in enumerate(catalog.products) if i in keep])
    if settings.variant.is_original:
        return catalog
    folder = settings.variant_dir
    if folder is None:
        raise UserError("a degraded catalog needs a folder to be written to (--variant-dir)")
    return write_variant(catalog, settings.variant, folder)


def _index(settings: EvaluationSettings, catalog, embedders: dict[str, Embedder]):
    """The catalog indexed (incrementally) with every model; a Searcher over that index."""
    client = make_client(settings.store)
    report = index_catalog(catalog, client, list(embedders.values()), batch_size=settings.batch_size,
                           show_progress_bar=settings.show_progress)
    searcher = Searcher(client, embedders=embedders, rerank=settings.rerank, query_views=settings.query_views,
                        kind_factory=(lambda: KindModel.load(settings.kind_model)) if settings.kind else None)
    return searcher, report


def _queries(settings: EvaluationSettings, catalog, stored: set[str]) -> tuple[list[Query], list[str], str]:
    """The queries (a folder of photos, or catalog products left out one at a time), the
    files skipped, and the mode's name."""
    if settings.queries:
        queries, skipped = _folder_queries(Path(settings.queries))
        return queries, skipped, "folder"
    return _leave_one_out(catalog, stored, settings), [], "leave-one-out"


def _photo_like(run: _Run, settings: EvaluationSettings, queries) -> list[Image.Image]:
    if not settings.photo_like:
        return []
    # One generator per query, seeded by the run's seed and the query's id: the same photo for
    # every model, and in any later run.
    def make(image, rng):
        return handheld_photo(image, rng) if settings.photo_style == "handheld" else \
            shopper_photo(image, rng, settings.photo)
    return [make(open_image(query.image), random.Random(f"{settings.seed}:{query.id}"))
            for query in run.bar(queries, "making photo-like queries")]


def _evaluate_model(run: _Run, searcher: Searcher, embedder: Embedder, report, catalog, stored: set[str],
                    table, queries, photos, mode: str, image_size,
                    real_photos: list[LabelledPhoto] = ()) -> ModelEvaluation:
    settings, model = run.settings, embedder.name
    searcher.warm_up([model])
    counts = table[PRIMARY_LEVEL].value_counts().to_dict()
    outcomes, latency = _ask(run, searcher, model, queries, photos, counts, mode)
    if real_photos:
        outcomes["photos"] = _ask_photos(run, searcher, model, list(real_photos))
    rate = rate_from_index(report, model, settings.rate_from_index_min) or \
        timed_rate(embedder, [p for p in catalog.products if p.id in stored][:settings.rate_probe_images],
                   settings.batch_size,
                   "the index was current" if not report.indexed.get(model) else
                   f"only {report.indexed[model]} images were indexed in this run")
    colour_weight = settings.rerank.colour_weight
    return ModelEvaluation(
        model=model, weights_id=embedder.weights_id, parameters=parameter_count(embedder),
        flops=forward_flops(embedder), input_size=embedder.image_size, embedding_size=embedder.dim,
        index_size=index_size(None if settings.store.host else settings.store.path, model),
        embed_rate=rate, preprocessing=preprocessing_fit(embedder.transform, image_size),
        latency=latency,
        clean=score(outcomes["clean"], settings.k, settings.worst, settings.min_queries_per_type),
        photo_like=score(outcomes["photo-like"], settings.k, settings.worst, settings.min_queries_per_type)
        if photos else None,
        photos=score_photos(outcomes["photos"], settings.k) if real_photos else None,
        colour_preference=run.colour is not None and settings.colour_preference and colour_weight > 0,
        colour_weight=colour_weight, own_colour_bonus=settings.rerank.own_colour_bonus,
        reranked_by=settings.rerank.labels_for(embedder.classifiers),
        reranked_with=settings.rerank.witnesses(embedder.classifiers), outcomes=outcomes)


__all__ = ["EvaluationSettings", "Evaluation", "ModelEvaluation", "Latency", "Query", "run_evaluation"]
