"""Each command's settings, built once from its parsed arguments: frozen dataclasses of the
layers' own settings (StoreSettings, EmbedderBuilder, RerankSettings, ...), so that app.py's
commands and helpers never see argparse; a command that needs one layer's settings alone
(finetune, study, train-parser, train-kinds) gets those. A value that cannot be right is refused
here, with the flag's name, before any work."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from catalog.errors import UserError

if TYPE_CHECKING:  # the layers' settings, imported when a command's settings are built
    from embedding.builder import EmbedderBuilder
    from evaluation import EvaluationSettings
    from evaluation.study import StudySettings
    from indexing.ray_engine import RaySettings
    from operations import FilterRequest
    from search import QueryViews, RerankSettings
    from training.kinds import KindTrainingSettings
    from training.parser import ParserSettings
    from training.settings import FinetuneSettings
    from training.tuning import TuneSettings
    from vectorstore import StoreSettings


@dataclass(frozen=True)
class Searching:
    """How a command searches: the store, how embedders are built, how the nearest products are
    reordered, which views of a photo are embedded, whether items are found in a photo (and
    with which parser file; None: the shipped one), whether colour is read and whether the kind
    of a shopper's own photo is read (and with which model files), and the command that builds a
    missing index."""
    store: StoreSettings
    builder: EmbedderBuilder
    rerank: RerankSettings
    query_views: QueryViews
    items: bool = True
    parser_file: Path | None = None
    colour: bool = True
    colour_file: Path | None = None
    kind: bool = True
    kind_file: Path | None = None
    index_hint: str = ""

    def parser_factory(self) -> Callable[[], object] | None:
        """The garment parser, built on first use, unless items are off; on ONNX Runtime unless
        --runtime eager."""
        if not self.items:
            return None
        from embedding.garments import GarmentParser
        runtime = self.builder.runtime.runtime if self.builder.runtime is not None else "eager"
        return lambda: GarmentParser.load(self.parser_file, runtime=runtime)

    def kind_factory(self) -> Callable[[], object] | None:
        """The kind model (real photos' kind of garment), built on first use, unless off."""
        if not self.kind:
            return None
        from embedding.kinds import KindModel
        return lambda: KindModel.load(self.kind_file)

    def colour_factory(self) -> Callable[[], object] | None:
        """The colour model, built on first use, unless colour is off."""
        if not self.colour:
            return None
        from embedding.colour import ColourModel
        return lambda: ColourModel.load(self.colour_file)

    def served_search(self):
        """How this command searches a photo, for judging a tuned model as the shop would use it."""
        from training.photo_check import ServedSearch
        return ServedSearch(rerank=self.rerank, query_views=self.query_views, parser_factory=self.parser_factory(),
                            colour_factory=self.colour_factory(), kind_factory=self.kind_factory())

    def argv(self) -> list[str]:
        """The flags that search as this does (for a child process: the background tuning)."""
        from search import AS_IS, NO_RERANK
        out = ["--items", "on" if self.items else "off", "--colour", "on" if self.colour else "off",
               "--kind", "on" if self.kind else "off", "--zoom", "off" if self.query_views == AS_IS else "on",
               "--rerank", "off" if self.rerank == NO_RERANK else "on"]
        if self.rerank != NO_RERANK:
            out += ["--rerank-candidates", str(self.rerank.candidates)]
        for flag, path in (("--parser", self.parser_file), ("--colour-model", self.colour_file),
                           ("--kind-model", self.kind_file)):
            out += [flag, str(path)] if path else []
        return out


@dataclass(frozen=True)
class IndexCommand:
    catalog: str
    store: StoreSettings
    builder: EmbedderBuilder
    models: tuple[str, ...]
    batch_size: int = 32
    limit: int | None = None
    rebuild: bool = False
    allow_removal: bool = False
    progress: bool = True
    ray: RaySettings | None = None  # None: this process indexes (the local engine)


@dataclass(frozen=True)
class SearchCommand:
    searching: Searching
    model: str
    k: int
    request: FilterRequest
    images: tuple[str, ...]
    json: bool = False


@dataclass(frozen=True)
class ServeCommand:
    """`serve` (the chat alone) and `shop` (the shop with the chat mounted)."""
    searching: Searching
    shop: bool
    catalog: Path | None
    models: tuple[str, ...]
    model: str  # "auto": the best of those served
    k: int
    host: str
    port: int
    quiet: bool = False
    product_url: str | None = None
    background: bool = True
    tune: bool = True
    tune_photos: tuple[Path, ...] = ()   # resolved: auto found them beside the catalog, or named
    tune_epochs: int | None = None


@dataclass(frozen=True)
class TuneStatusCommand:
    weights_dir: Path
    model: str


@dataclass(frozen=True)
class EvaluateCommand:
    """`evaluation.models` are those asked for; app.py keeps those whose weights it can build.
    `held_out`: the file whose held-out products are the queries (a weights file or a colour
    model), read by app.py."""
    evaluation: EvaluationSettings
    builder: EmbedderBuilder
    held_out: Path | None
    out: Path
    k: int


@dataclass(frozen=True)
class EvaluateLookCommand:
    searching: Searching
    model: str
    k: int
    photos: Path
    out: Path


@dataclass(frozen=True)
class TrainColourCommand:
    catalog: Path
    out: Path
    seed: int = 0
    workers: int = 2


# ---- from the parsed arguments --------------------------------------------------------------

def settings_from(args: argparse.Namespace):
    """The settings of the command `args` names."""
    return _READERS[args.command](args)


def _store(args) -> StoreSettings:
    from cli.arguments import DEFAULT_DB, DEFAULT_LANCE_DB
    from vectorstore import StoreSettings
    engine = getattr(args, "store", "chroma")
    folder = args.db or (DEFAULT_LANCE_DB if engine == "lancedb" else DEFAULT_DB)
    return StoreSettings(path=Path(folder), host=args.chroma_host, port=args.chroma_port, engine=engine,
                         uri=getattr(args, "lance_uri", None))


def _builder(args, runtime: bool = True) -> EmbedderBuilder:
    """--weights resolved once per model, the runtime --runtime asks for given at construction
    (`runtime=False`: PyTorch, as the Ray actors and the study's preprocessing need)."""
    from embedding.builder import EmbedderBuilder
    from embedding.runtime import DEFAULT_CACHE_DIR, RuntimeSettings
    catalog = getattr(args, "catalog", None)
    settings = RuntimeSettings(runtime=args.runtime,
                               cache_dir=Path(args.runtime_cache) if args.runtime_cache else DEFAULT_CACHE_DIR,
                               catalog=Path(catalog) if catalog and Path(catalog).is_dir() else None)
    return EmbedderBuilder(weights=args.weights, weights_dir=Path(args.weights_dir), device=args.device,
                           runtime=settings if runtime else None,
                           input_size=getattr(args, "input_size", None), framing=getattr(args, "framing", None))


def _models(text: str) -> tuple[str, ...]:
    from embedding.embedders import check_model_name
    models = tuple(check_model_name(m.strip()) for m in text.split(",") if m.strip())
    if not models:
        raise UserError("--models names no model")
    return models


def _index_hint(args) -> str:
    where = " ".join(_store(args).argv())
    return f"python app.py index --catalog {getattr(args, 'catalog', None) or 'DIR'} {where} --weights {args.weights}"


def _searching(args, parser_file: str | None = None) -> Searching:
    from search import AS_IS, QueryViews
    parser_file = parser_file or getattr(args, "parser", None)
    colour_file = getattr(args, "colour_model", None)
    return Searching(store=_store(args), builder=_builder(args),
                     rerank=_rerank(args),
                     query_views=QueryViews() if args.zoom == "on" else AS_IS,
                     items=getattr(args, "items", "on") == "on", parser_file=Path(parser_file) if parser_file else None,
                     colour=getattr(args, "colour", "on") == "on",
                     colour_file=Path(colour_file) if colour_file else None,
                     kind=getattr(args, "kind", "on") == "on",
                     kind_file=Path(args.kind_model) if getattr(args, "kind_model", None) else None,
                     index_hint=_index_hint(args))


def _index(args) -> IndexCommand:
    ray = None
    if args.engine == "ray":
        from indexing.ray_engine import RaySettings
        ray = RaySettings(address=args.ray_address, workers=args.workers, batch_size=args.batch_size)
    # The Ray actors embed with PyTorch (eager); the collections must record what computed them.
    return IndexCommand(catalog=args.catalog, store=_store(args), builder=_builder(args, runtime=ray is None),
                        models=_models(args.models), batch_size=args.batch_size, limit=args.limit,
                        rebuild=args.rebuild, allow_removal=args.allow_removal, progress=not args.quiet, ray=ray)


def _search(args) -> SearchCommand:
    from operations import FilterRequest
    return SearchCommand(searching=_searching(args), model=args.model, k=args.k,
                         request=FilterRequest(gender=args.gender, category=args.category,
                                               where=tuple(args.where or ())),
                         images=tuple(args.images), json=args.json)


def _serve(args) -> ServeCommand:
    return ServeCommand(searching=_searching(args), shop=args.command == "shop",
                        catalog=Path(args.catalog) if args.catalog else None, models=_models(args.models),
                        model=args.model, k=args.k, host=args.host, port=args.port, quiet=args.quiet,
                        product_url=args.product_url or None, background=args.background,
                        tune=args.tune == "on", tune_epochs=_positive(args.tune_epochs, "--tune-epochs"),
                        tune_photos=_tune_photos(args))


def _tune_photos(args) -> tuple[Path, ...]:
    photos = _real_photos(args.photos, Path(args.catalog), False) if args.catalog else ()
    missing = [str(p) for p in photos if not p.is_dir()]
    if missing:
        raise UserError(f"--photos {', '.join(missing)}: no such folder")
    return photos


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be at least 1")
    return value


def _tune(args) -> TuneSettings:
    from training.recipes import recipe_settings
    from training.tuning import SwitchRule, TuneSettings, work_dir
    catalog = Path(args.catalog)
    finetune = recipe_settings(
        args.model, catalog=catalog, out=work_dir(Path(args.weights_dir)) / f"{args.model}.pt", epochs=args.epochs,
        image_size=args.image_size, threads=args.threads, progress=False,
        real_photos=_real_photos(args.photos, catalog, False))
    return TuneSettings(finetune=finetune, store=_store(args), builder=_builder(args), parent=args.parent,
                        rule=SwitchRule(min_gain=args.min_gain, tolerance=args.tolerance),
                        served=_searching(args).served_search())


def _tune_status(args) -> TuneStatusCommand:
    from embedding.embedders import check_model_name
    return TuneStatusCommand(weights_dir=Path(args.weights_dir), model=check_model_name(args.model))


def _rerank(args):
    from search import NO_RERANK, RerankSettings
    if args.rerank == "off":
        return NO_RERANK
    return RerankSettings() if args.rerank_candidates is None else RerankSettings(candidates=args.rerank_candidates)


def _evaluate(args) -> EvaluateCommand:
    from catalog.variants import ImageVariant
    from evaluation import EvaluationSettings
    from search import AS_IS, QueryViews
    out = Path(args.out)
    evaluation = EvaluationSettings(
        catalog=Path(args.catalog), store=_store(args), models=_models(args.models),
        weights=args.weights, device=args.device, k=args.k, sample=args.sample, seed=args.seed,
        queries=Path(args.queries) if args.queries else None, photo_like=args.photo_like,
        photo_style=args.photo_style, held_out_from=Path(args.held_out) if args.held_out else None,
        catalog_sample=args.catalog_sample,
        variant=ImageVariant(size=ImageVariant.parse_size(args.resolution) if args.resolution else None,
                             jpeg_quality=args.jpeg_quality, background=args.background),
        variant_dir=Path(args.variant_dir) if args.variant_dir else out / "catalog-variant",
        input_size=args.input_size, framing=args.framing,
        rerank=_rerank(args),
        query_views=QueryViews() if args.zoom == "on" else AS_IS,
        photos=Path(args.photos) if args.photos else None, colour_preference=args.colour == "on",
        colour_model=Path(args.colour_model) if args.colour_model else None, show_progress=not args.quiet,
        kind=args.kind == "on", kind_model=Path(args.kind_model) if args.kind_model else None)
    return EvaluateCommand(evaluation=evaluation, builder=_builder(args),
                           held_out=Path(args.held_out) if args.held_out else None, out=out, k=args.k)


def _finetune(args) -> FinetuneSettings:
    from embedding import tuned_file
    from training.recipes import recipe_settings
    out = Path(args.out) if args.out else tuned_file(args.model, Path(args.weights_dir))
    aux = tuple(t.strip() for t in args.aux_targets.split(",") if t.strip()) if args.aux_targets else None
    return recipe_settings(
        args.model, catalog=Path(args.catalog), out=out, epochs=args.epochs, image_size=args.image_size,
        serve_size=args.serve_size, batch_size=args.batch_size, device=args.device, precision=args.precision,
        weights=args.weights, head_only=args.head_only, freeze=args.freeze, teacher=args.teacher,
        distill_weight=args.distill_weight, seed=args.seed, lr=args.lr, val_fraction=args.val_fraction,
        limit=args.limit, workers=args.workers, threads=args.threads, progress=not args.quiet,
        photo_probability=args.photo_probability, crop_min=args.crop_min, margin=args.margin, aux_targets=aux,
        real_photos=_real_photos(args.photos, Path(args.catalog), args.head_only), real_weight=args.real_weight,
        real_share=args.real_share)


def _real_photos(given: list[str], catalog: Path, head_only: bool) -> tuple[Path, ...]:
    """`--photos`: none, the folders named, or (auto) the labelled home photos and the outlined
    street photos that sit beside the catalog in ../shared's layout, when they are there and the
    run can use them."""
    if given == ["none"]:
        return ()
    if given == ["auto"]:
        beside = catalog.resolve().parent / "photos"
        found = tuple(beside / name for name in ("handheld", "street") if (beside / name).is_dir())
        return found if not head_only else ()
    if "auto" in given or "none" in given:
        raise UserError("--photos: give folders, or auto, or none, not a mix")
    return tuple(Path(folder) for folder in given)


def _study(args) -> StudySettings:
    from evaluation.study import StudySettings, parse_pair, parse_row
    if not args.row:
        raise UserError("give at least one --row NAME=DIR:MODEL")

    def pairs(values, what):
        return tuple((name, Path(value)) for name, value in (parse_pair(v, what) for v in values))
    return StudySettings(
        out=Path(args.out), rows=tuple(parse_row(r) for r in args.row),
        preprocessing=pairs(args.preprocessing, "--preprocessing"), quality=pairs(args.quality, "--quality"),
        training=pairs(args.training, "--training"), commands=Path(args.commands) if args.commands else None)


def _train_parser(args) -> ParserSettings:
    from training.parser import ParserSettings
    return ParserSettings(
        photos=Path(args.photos), out=Path(args.out), epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, limit=args.limit, threads=args.threads, workers=args.workers,
        catalog=Path(args.catalog) if args.catalog and args.catalog.lower() != "none" else None,
        composites=args.composites, members=tuple(m.strip() for m in args.members.split(",") if m.strip()),
        **({"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}))


def _evaluate_look(args) -> EvaluateLookCommand:
    from embedding.garments import SHIPPED_FILE
    # The parser is always on here (its held-out photos are the queries), and colour is not read:
    # the figures are of the items and their kind.
    searching = replace(_searching(args, parser_file=args.parser or str(SHIPPED_FILE)), colour=False, kind=False)
    return EvaluateLookCommand(searching=searching,
                               model=args.model, k=args.k, photos=Path(args.photos), out=Path(args.out))


def _train_colour(args) -> TrainColourCommand:
    return TrainColourCommand(catalog=Path(args.catalog), out=Path(args.out), seed=args.seed, workers=args.workers)


def _train_kinds(args) -> KindTrainingSettings:
    from training.kinds import KindTrainingSettings
    return KindTrainingSettings(catalog=Path(args.catalog), photos=Path(args.photos), out=Path(args.out),
                                seed=args.seed, model=args.model, weights=args.weights)


_READERS: dict[str, Callable[[argparse.Namespace], object]] = {
    "index": _index, "search": _search, "serve": _serve, "shop": _serve, "evaluate": _evaluate,
    "finetune": _finetune, "study": _study, "train-parser": _train_parser, "evaluate-look": _evaluate_look,
    "train-colour": _train_colour, "train-kinds": _train_kinds, "tune": _tune, "tune-status": _tune_status,
}

__all__ = ["Searching", "IndexCommand", "SearchCommand", "ServeCommand", "EvaluateCommand", "EvaluateLookCommand",
           "TrainColourCommand", "TuneStatusCommand",
           "settings_from"]
