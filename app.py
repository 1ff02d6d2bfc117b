"""Command line of the visual shopping assistant: runs each command on the settings cli/ built
from its arguments, wiring catalog -> embedding and vectorstore -> search -> assistant / shop.
The only place that decides exit codes."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from catalog.errors import UserError
from cli import build_parser, settings_from
from cli.settings import (
    EvaluateCommand,
    EvaluateLookCommand,
    IndexCommand,
    SearchCommand,
    Searching,
    ServeCommand,
    TrainColourCommand,
    TuneStatusCommand,
)

if TYPE_CHECKING:  # the settings of the commands that need one layer's settings alone
    from evaluation.study import StudySettings
    from training.kinds import KindTrainingSettings
    from training.parser import ParserSettings
    from training.settings import FinetuneSettings
    from training.tuning import TuneSettings

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _searcher(searching: Searching, embedders: dict | None = None, client=None):
    """The one Searcher of a command: embedders already built, the others by the builder."""
    from search import Searcher
    from vectorstore import make_client
    return Searcher(client or make_client(searching.store), embedders=embedders, build=searching.builder,
                    index_hint=searching.index_hint, rerank=searching.rerank, query_views=searching.query_views,
                    parser_factory=searching.parser_factory(), colour_factory=searching.colour_factory(),
                    kind_factory=searching.kind_factory())


# ---- index ----------------------------------------------------------------------------------

def cmd_index(command: IndexCommand) -> int:
    from catalog import read_catalog
    from indexing import index_catalog
    from vectorstore import make_client
    catalog = read_catalog(command.catalog)
    _say(f"catalog {command.catalog}: {catalog.describe()}")
    embedders = list(command.builder.build_all(command.models).values())
    if command.ray is not None:
        return _index_with_ray(command, catalog, embedders)
    report = index_catalog(catalog, make_client(command.store), embedders, batch_size=command.batch_size,
                           limit=command.limit, rebuild=command.rebuild, show_progress_bar=command.progress,
                           allow_removal=command.allow_removal)
    print(report.summary())
    return 0


def _index_with_ray(command: IndexCommand, catalog, embedders) -> int:
    # Imported here only: the default engine must run where Ray is not installed.
    from indexing.ray_engine import RayIndexError, index_catalog_ray
    builder = command.builder
    try:
        report = index_catalog_ray(catalog, command.store, embedders, weights=builder.weights, device=builder.device,
                                   settings=command.ray, limit=command.limit, rebuild=command.rebuild,
                                   show_progress_bar=command.progress, weights_dir=builder.weights_dir)
    except RayIndexError as exc:
        _say(f"error: {exc}")
        return 2
    print(report.summary())
    return 0


# ---- search ---------------------------------------------------------------------------------

def cmd_search(command: SearchCommand) -> int:
    from catalog import ImageError
    from operations import LookSettings, Refused, SearchPolicy, find_the_look
    searcher = _searcher(command.searching)
    policy = SearchPolicy(models=(command.model,), default_model=command.model, k=command.k,
                          max_k=max(command.k, 50))
    look_settings = LookSettings(items=command.searching.items)
    # A missing index, other weights or an unknown filter value is one error for the whole
    # command, said before any image.
    searcher.collection(command.model)
    searcher.resolve(command.model, *command.request.raw())
    failures = 0
    for path in command.images:
        try:
            look = find_the_look(searcher, policy, path, filters=command.request, settings=look_settings)
        except (ImageError, Refused) as exc:
            failures += 1
            if command.json:
                print(json.dumps({"query": path, "error": str(exc)}), flush=True)
            else:
                _say(f"{path}: {exc}")
            continue
        if command.json:
            print(json.dumps(_look_json(path, command.model, look, command.searching.items), ensure_ascii=False),
                  flush=True)
        else:
            print("\n".join(_format_table(path, found.answer, found) for found in look.items), flush=True)
    return 1 if failures else 0


def _format_table(path: str, answer, found=None) -> str:
    what = f"{found.kind}, " if found is not None and found.kind else ""
    filters = f", filters: {answer.filters.describe()}" if not answer.filters.is_empty() else ""
    lines = [f"{path}  ({what}{answer.model}{filters})"]
    if not answer.results:
        lines.append("  no product matches these filters")
    for rank, r in enumerate(answer.results, 1):
        lines.append(f"  {rank}. {r.score:.3f}  {r.id:>8}  {r.get('name', '')}  "
                     f"[{r.get('articleType', '?')}, {r.get('gender', '?')}, {r.get('baseColour', '?')}]")
    return "\n".join(lines)


def _look_json(path: str, model: str, look, items: bool) -> dict:
    """`results` are the first item's, as before items; `items` one entry per item found."""
    out = {"query": path, "model": model, "results": [r.to_json() for r in look.first.results]}
    if items:
        out["items"] = [found.to_json(lambda r: r.to_json()) for found in look.items]
    return out


# ---- serve and shop -------------------------------------------------------------------------

def cmd_serve(command: ServeCommand) -> int:
    from assistant.ui import launch
    from vectorstore import NoIndex
    _, model, searcher, settings, indexer, catalog = _assistant_parts(command)
    try:
        searcher.warm_up([model])  # model build and HNSW load before the first shopper, not during
    except NoIndex as exc:
        # Serve anyway: the chat tells the shopper the same, with the command that builds the index.
        _say(f"warning: {exc}")
    tuner = _start_tuning(command, model, searcher, catalog)
    _say(f"assistant on http://{command.host}:{command.port}/")
    launch(searcher, settings, host=command.host, port=command.port, quiet=command.quiet,
           status=_notices(indexer, tuner))
    return 0


def cmd_shop(command: ServeCommand) -> int:
    from functools import partial

    import uvicorn

    from assistant.mount import mount_assistant
    from shop import ShopSettings, build_app
    models, model, searcher, assistant, indexer, catalog = _assistant_parts(command)
    searcher.warm_up(models)  # model build and HNSW load before the first shopper, not during
    tuner = _start_tuning(command, model, searcher, catalog)
    status = indexer.progress.status if indexer else None
    images_dir = (command.catalog / "images").resolve() if command.catalog else None
    settings = ShopSettings(policy=assistant.policy, images_dir=images_dir)
    app = build_app(searcher, settings, status=status, catalog=indexer.catalog if indexer else None,
                    tuning=tuner.snapshot if tuner else None,
                    mount_chat=partial(mount_assistant, searcher=searcher, settings=assistant,
                                       path=settings.assistant_path, status=_notices(indexer, tuner)))
    _say(f"shop on http://{command.host}:{command.port}/  (API docs /docs, assistant {settings.assistant_path}/)")
    uvicorn.run(app, host=command.host, port=command.port, log_level="warning" if command.quiet else "info")
    return 0


def _assistant_parts(command: ServeCommand):
    """What serve and shop share: the models served, the one selected, a Searcher, the
    assistant's settings (the catalog's images are the only files it may serve), the
    background indexer, if any, and the catalog read (None without --catalog).

    With --catalog the index is brought in line with it: in a background thread by default
    (the server opens at once and answers from what is indexed so far, the selected model
    first), or before opening with --no-background."""
    from assistant.settings import AssistantSettings
    from catalog.memory import bound_malloc_for_serving
    from operations import SearchPolicy
    from vectorstore import make_client
    bound_malloc_for_serving()  # before the serving threads start
    embedders = command.searching.builder.build_all(command.models)
    model = _selected_model(command.model, embedders)
    client = make_client(command.searching.store)
    catalog = _read_and_drop_stale(command, client, embedders)
    if catalog is not None and not command.background:
        _index_now(command, client, catalog, embedders)
    searcher = _searcher(command.searching, embedders, client)
    indexer = _start_background_index(command, client, catalog, [embedders[model]] + [
        e for name, e in embedders.items() if name != model], searcher) \
        if catalog is not None and command.background else None
    images_dir = (command.catalog / "images").resolve() if command.catalog else None
    # One policy (models, k, upload limits) for the chat and the shop's API.
    policy = SearchPolicy(models=tuple(embedders), default_model=model, k=command.k)
    settings = AssistantSettings(policy=policy, index_hint=command.searching.index_hint,
                                 allowed_paths=(images_dir,) if images_dir else (), product_url=command.product_url)
    return list(embedders), model, searcher, settings, indexer, catalog


def _selected_model(asked: str, embedders: dict) -> str:
    from embedding import best_model
    if asked == "auto":
        chosen = best_model(embedders)
        _say(f"selected {chosen} ({embedders[chosen].weights_id})")
        return chosen
    if asked not in embedders:
        raise UserError(f"--model {asked} is not among the models served ({','.join(embedders)})")
    return asked


def _read_and_drop_stale(command: ServeCommand, client, embedders: dict):
    """--catalog read, and (under --weights auto) each collection built with other weights than
    its model's now dropped, to be indexed again; None without --catalog (the index as it is)."""
    from catalog import read_catalog
    from indexing import drop_stale
    if command.catalog is None:
        return None
    catalog = read_catalog(str(command.catalog))
    if command.searching.builder.weights == "auto" and catalog.products:
        for model, old, new in drop_stale(client, list(embedders.values())):
            _say(f"{model}: the index was built with {old}; indexing again with {new}")
    return catalog


def _index_now(command: ServeCommand, client, catalog, embedders: dict) -> None:
    from indexing import index_catalog
    report = index_catalog(catalog, client, list(embedders.values()), show_progress_bar=not command.quiet)
    if any(sum(counts.values()) for counts in (report.indexed, report.removed, report.relocated, report.relabelled)):
        _say(report.summary())


def _start_background_index(command: ServeCommand, client, catalog, ordered: list, searcher):
    """Index the catalog in a background thread, the selected model first, while the server
    answers from what is stored; progress goes to stderr every 30 s and to the pages."""
    from indexing.background import BackgroundIndexer
    indexer = BackgroundIndexer(catalog, client, ordered, on_pass_done=searcher.forget_connection).start()
    _say(f"indexing {command.catalog} in the background; answering from what is indexed so far")
    return indexer


def _notices(indexer, tuner):
    """What the pages say while it matters: indexing, then tuning (None: nothing)."""
    said = [say for say in (indexer.progress.status if indexer else None, tuner.status if tuner else None) if say]
    if not said:
        return None
    return lambda: " ".join(filter(None, (say() for say in said))) or None


def _start_tuning(command: ServeCommand, model: str, searcher, catalog):
    """The background tuning of the selected model on --catalog (training/background_tune.py),
    unless it is off, the weights are named, the catalog is too small, or the served file is
    tuned on this catalog already; each of those said in one line."""
    from embedding import tuned_file
    from training.background_tune import BackgroundTuner, TunePlan, tune_command
    from training.tune_state import SWITCHED, TuneState
    from training.tuning import state_path, tuned_on, untunable, work_dir
    builder = command.searching.builder
    if not command.tune or catalog is None or not catalog.products:
        return None
    if builder.weights != "auto":
        _say(f"tuning: off (--weights {builder.weights} names the weights to serve)")
        return None
    why = untunable(catalog)
    if why:
        _say(f"tuning: not tuned: {why}")
        return None
    folder = work_dir(builder.weights_dir)
    state = TuneState.read(state_path(folder, model))
    served = tuned_file(model, builder.weights_dir)
    if tuned_on(served) == command.catalog.resolve() and not (state and state.phase == SWITCHED):
        _say(f"tuning: {model} serves {served}, tuned on this catalog already")
        return None
    plan = TunePlan(model=model, catalog=command.catalog, command=tune_command(_tune_argv(command, model)),
                    state_path=state_path(folder, model), candidate=folder / f"{model}.pt",
                    weights_dir=builder.weights_dir, log_path=folder / f"{model}.log")
    return BackgroundTuner(plan, searcher, lambda path: replace(builder, weights=str(path)).build(model)).start()


def _tune_argv(command: ServeCommand, model: str) -> list[str]:
    """`app.py tune` with the serving process's catalog, store, runtime and photos."""
    store, builder = command.searching.store, command.searching.builder
    argv = [os.path.abspath(__file__), "tune", "--catalog", str(command.catalog), "--model", model,
            "--weights-dir", str(builder.weights_dir), "--parent", str(os.getpid())]
    argv += store.argv() + command.searching.argv()
    if builder.runtime is not None:
        argv += ["--runtime", builder.runtime.runtime, "--runtime-cache", str(builder.runtime.cache_dir)]
    else:
        argv += ["--runtime", "eager"]
    argv += ["--photos", *map(str, command.tune_photos)] if command.tune_photos else ["--photos", "none"]
    if command.tune_epochs:
        argv += ["--epochs", str(command.tune_epochs)]
    return argv


# ---- evaluation and training ------------------------------------------------------------------

def cmd_evaluate(command: EvaluateCommand) -> int:
    from embedding import held_out_ids
    from embedding.colour import ColourModel
    from evaluation import run_evaluation
    from evaluation.report import write_report
    # The colour model's file holds out products too (those it never trained on).
    held_out = command.held_out
    products = (() if held_out is None else
                tuple(ColourModel.load(held_out).facts["held_out_ids"]) if held_out.suffix == ".npz" else
                held_out_ids(str(held_out)))
    embedders = command.builder.build_all(command.evaluation.models)
    settings = replace(command.evaluation, models=tuple(embedders), held_out=products)
    evaluation = run_evaluation(settings, embedders=embedders)
    paths = write_report(evaluation, command.out)

    def fmt(value, unit=""):
        return "n/a" if value is None else f"{value:.3f}{unit}"
    for m in evaluation.models:
        photo = f", photo-like {fmt(m.photo_like.precision['articleType'])}" if m.photo_like else ""
        _say(f"{m.model}: precision@{command.k} articleType clean {fmt(m.clean.precision['articleType'])}{photo}; "
             f"latency p50 {fmt(m.latency.p50_ms, ' ms')}")
    print(paths["report"])
    return 0


def cmd_study(settings: StudySettings) -> int:
    from evaluation.study import gather, write_study
    print(write_study(gather(settings))["report"])
    return 0


def cmd_finetune(settings: FinetuneSettings) -> int:
    from training import finetune
    from training.recipes import on_gpu
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    _say(f"recipe{' for a GPU' if on_gpu(settings.device) else ''}: {settings.epochs} epochs at "
         f"{settings.image_size} px (served at {settings.input_size}), freeze {settings.freeze}, photo-like "
         f"{settings.photo_probability}, crop-min {settings.crop_min}, targets {','.join(settings.targets)}, "
         f"lr {settings.lr or 'default'}, real photos "
         f"{', '.join(map(str, settings.real_photos)) or 'none'}"
         + (f" ({settings.real_share:.0%} of them each epoch)" if settings.real_photos and settings.real_share < 1 else ""))
    result = finetune(settings)
    before, after = result.before, result.history[-1]
    if before is not None and after is not before:
        _say(f"P@{after['k']} by articleType on {after['queries']} held-out products: clean "
             f"{before['p_clean']:.3f} -> {after['p_clean']:.3f}, photo-like {before['p_photo']:.3f} -> "
             f"{after['p_photo']:.3f}; {result.seconds / 60:.1f} min in this process "
             f"(against the other held-out products)")
        if "p_real_kind" in after:
            _say(f"P@{after['k']} by kind on {after['real_queries']} held-out real photos (same gallery): "
                 f"{before['p_real_kind']:.3f} -> {after['p_real_kind']:.3f}")
    # Validation ranks held-out products among themselves; a shop ranks them among its whole
    # index, which evaluate measures on the same products. Its own --db: an index built with
    # other weights would be refused.
    _say(f"the same products against the whole catalog, as the index serves them: python app.py evaluate "
         f"--catalog {settings.catalog} --models {settings.model} --weights {result.out} --held-out {result.out} "
         f"--db eval-{result.out.stem}/chroma --out eval-{result.out.stem}")
    print(result.out)
    return 0


def cmd_train_parser(settings: ParserSettings) -> int:
    from training.parser import train_parser
    figures = train_parser(settings)
    print(json.dumps(figures, indent=1))
    print(f"wrote {settings.out}")
    return 0


def cmd_evaluate_look(command: EvaluateLookCommand) -> int:
    from evaluation.street import evaluate_street, held_out_of, write
    searcher = _searcher(command.searching)
    figures = evaluate_street(searcher, command.model, command.photos, held_out_of(command.searching.parser_file),
                              k=command.k)
    write(figures, command.out)
    print(json.dumps(figures, indent=1))
    return 0


def cmd_train_colour(command: TrainColourCommand) -> int:
    from training.colour import ColourTrainingSettings, train_colour_model
    train_colour_model(command.catalog, command.out, command.seed, ColourTrainingSettings(workers=command.workers),
                       log=_say)
    print(command.out)
    return 0


def cmd_train_kinds(settings: KindTrainingSettings) -> int:
    from training.kinds import train_kinds
    figures = train_kinds(settings, log=_say)
    print(json.dumps(figures, indent=1))
    print(f"wrote {settings.out}")
    return 0


def cmd_tune(settings: TuneSettings) -> int:
    from training.tuning import exit_with_parent, run_tune
    if settings.parent:
        exit_with_parent(settings.parent)
    state = run_tune(settings, log=_say)
    print(json.dumps(state.snapshot(), indent=1))
    return 0 if state.phase != "failed" else 1


def cmd_tune_status(command: TuneStatusCommand) -> int:
    from training.tune_state import TuneState
    from training.tuning import state_path, work_dir
    state = TuneState.read(state_path(work_dir(command.weights_dir), command.model))
    print(json.dumps(state.snapshot() if state else {"model": command.model, "phase": None,
                                                     "line": "no tuning run has started"}, indent=1))
    return 0


COMMANDS = {"index": cmd_index, "search": cmd_search, "serve": cmd_serve, "shop": cmd_shop,
            "evaluate": cmd_evaluate, "finetune": cmd_finetune, "study": cmd_study,
            "train-parser": cmd_train_parser, "evaluate-look": cmd_evaluate_look, "train-colour": cmd_train_colour,
            "train-kinds": cmd_train_kinds, "tune": cmd_tune, "tune-status": cmd_tune_status}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](settings_from(args))
    except UserError as exc:
        # A failure the user can act on is one line; anything else is a bug, and shows its traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
