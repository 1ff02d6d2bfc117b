"""A shop tuning itself: the model's recipe run on its catalog, the switch decided on held-out
products and real photos, and the tuned model's index built beside the live one.

`run_tune` is what `app.py tune` runs, in a process of its own at low priority (a serving
process starts it: training/background_tune.py). Every step resumes: the fine-tune from its
checkpoint, the decision from the written file's own history, the index by digest. The state
file (training/tune_state.py) says where it is; the serving process promotes the index and
switches once it reads READY."""
from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from catalog import Catalog, read_catalog
from catalog.errors import UserError
from embedding.builder import EmbedderBuilder
from embedding.weights_file import read_weights_file
from indexing.pipeline import index_catalog
from training.photo_check import ServedSearch
from training.settings import FinetuneSettings
from training.tune_state import (
    CHECKING,
    FAILED,
    INDEXING,
    READY,
    REJECTED,
    SKIPPED,
    SWITCHED,
    TRAINING,
    TuneState,
)
from vectorstore import IndexLocked, StoreSettings, make_client

# The tuned model's index is built in this slot beside the live one (vectorstore/store.py).
TUNED_SLOT = "tuned"
LOCK_POLL_SECONDS = 2.0
# A catalog is tuned when at least MIN_TYPES articleTypes hold MIN_PER_TYPE products each: the
# recipe holds out a tenth of each type, so each of them holds out at least two products the
# tuned model never sees, which can find each other; the switch is judged on those. Below that,
# a validation would be noise.
MIN_PER_TYPE = 15
MIN_TYPES = 2


@dataclass(frozen=True)
class SwitchRule:
    """When the tuned model replaces the served one, on the same held-out queries: it finds
    shopper-like photos better by more than `min_gain`, loses at most `tolerance` on catalog
    shots, and at most `tolerance` on held-out real photos' kind (the photos people take)."""
    min_gain: float = 0.0
    tolerance: float = 0.01

    def refuses(self, before: dict, after: dict) -> str | None:
        """None when `after` should replace `before`; else why not."""
        if after["p_photo"] <= before["p_photo"] + self.min_gain:
            return f"shopper-like photos {before['p_photo']:.3f} -> {after['p_photo']:.3f}"
        if after["p_clean"] < before["p_clean"] - self.tolerance:
            return f"catalog shots {before['p_clean']:.3f} -> {after['p_clean']:.3f}"
        if "p_real_kind" in before and after.get("p_real_kind", 0.0) < before["p_real_kind"] - self.tolerance:
            return f"real photos' kind {before['p_real_kind']:.3f} -> {after.get('p_real_kind', 0.0):.3f}"
        return self.refuses_served(before, after)

    def refuses_served(self, before: dict, after: dict) -> str | None:
        """None unless real photos, searched as the shop searches them, lose more than `tolerance`
        of their kind with the tuned model (no verdict before they are scored)."""
        if "p_real_served" in before and after.get("p_real_served", 0.0) < before["p_real_served"] - self.tolerance:
            return (f"real photos' kind as shoppers search them {before['p_real_served']:.3f} -> "
                    f"{after.get('p_real_served', 0.0):.3f}")
        return None


@dataclass(frozen=True)
class TuneSettings:
    """A self-tuning run: the fine-tune's settings (its `out` is the candidate file, in
    `work_dir`), where the index is, and how indexing embeds (the serving runtime)."""
    finetune: FinetuneSettings
    store: StoreSettings
    builder: EmbedderBuilder
    rule: SwitchRule = SwitchRule()
    # How the shop searches a photo: the held-out real photos are searched so with both models
    # before the switch (training/photo_check.py); None: only the fine-tune's own figures decide.
    served: ServedSearch | None = None
    batch_size: int = 32
    parent: int | None = None   # the serving process that started the run: it ends with it

    @property
    def model(self) -> str:
        return self.finetune.model

    @property
    def state_path(self) -> Path:
        return state_path(self.finetune.out.parent, self.model)


def work_dir(weights_dir: Path) -> Path:
    """Where self-tuning keeps its candidate file, checkpoint, state and log."""
    return Path(weights_dir) / "tuning"


def state_path(folder: Path, model: str) -> Path:
    return Path(folder) / f"{model}.json"


def tuned_on(weights: Path) -> Path | None:
    """The catalog folder a fine-tuned file was trained on (None: no such file, or not one of
    finetune's)."""
    if not Path(weights).is_file():
        return None
    try:
        catalog = (read_weights_file(Path(weights)).get("settings") or {}).get("catalog")
    except UserError:
        return None
    return Path(catalog) if catalog else None


def untunable(catalog: Catalog) -> str | None:
    """Why this catalog is too small to tune on (None: it is not)."""
    counts = Counter(p.articleType for p in catalog.products if p.articleType)
    big = [t for t, n in counts.items() if n >= MIN_PER_TYPE]
    if len(big) >= MIN_TYPES:
        return None
    return (f"the catalog has {len(big)} articleType{'s' if len(big) != 1 else ''} with at least {MIN_PER_TYPE} "
            f"products; tuning needs {MIN_TYPES} to validate the tuned model on products it never saw")


def run_tune(settings: TuneSettings, log: Callable[[str], None] | None = None) -> TuneState:
    """Train (or resume), decide, index the tuned model beside the live one; the state at the end
    (READY when the serving process should switch)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    finetune_settings = settings.finetune
    catalog_key = str(finetune_settings.catalog.resolve())
    state = TuneState.read(settings.state_path)
    if state is not None and state.catalog == catalog_key and state.model == settings.model \
            and state.phase in (READY, SWITCHED, REJECTED, SKIPPED):
        if state.phase == REJECTED:   # a run killed after deciding, before dropping its index
            from vectorstore import ProductCollection
            ProductCollection.drop(make_client(settings.store), settings.model, TUNED_SLOT)
        return state
    with _only_run(settings.state_path):
        if state is None or state.catalog != catalog_key or state.model != settings.model:
            # Another catalog's candidate and checkpoint are not this one's to resume.
            for stale in (finetune_settings.out, finetune_settings.checkpoint_path):
                stale.unlink(missing_ok=True)
            state = TuneState(model=settings.model, catalog=catalog_key, epochs=finetune_settings.epochs)
        catalog = read_catalog(str(finetune_settings.catalog))
        why = untunable(catalog)
        if why:
            log(f"not tuned: {why}")
            return state.moved(phase=SKIPPED, reason=why).write(settings.state_path)
        try:
            state = _trained(settings, state, log)
            if state.phase == REJECTED:
                return state
            return _indexed(settings, catalog, state, log)
        except UserError as exc:
            log(f"tuning failed: {exc}")
            return state.moved(phase=FAILED, reason=str(exc)).write(settings.state_path)


def _trained(settings: TuneSettings, state: TuneState, log) -> TuneState:
    """The candidate file (trained now, or already), and the decision on its figures."""
    out = settings.finetune.out
    if not out.is_file():  # written last by the fine-tune: there, the training is done
        from training.trainer import finetune
        state = state.moved(phase=TRAINING, epochs=settings.finetune.epochs).write(settings.state_path)

        def after_epoch(epoch: int) -> None:
            nonlocal state
            state = state.moved(epoch=epoch, epoch_seconds=(time.monotonic() - started[0]) / max(1, epoch - first))
            state.write(settings.state_path)
        started, first = [time.monotonic()], _epochs_done(settings)
        finetune(settings.finetune, after_epoch=after_epoch, log=log)
    history = list(read_weights_file(out).get("history", []))
    before = next((h for h in history if h["epoch"] == 0), None)
    after = history[-1] if history else None
    if before is None or after is None or after is before:
        state = state.moved(phase=REJECTED, reason="the run has no validation to judge it by")
        log(state.line())
    else:
        why = settings.rule.refuses(before, after)
        state = state.moved(before=before, after=after, weights=str(out),
                            phase=REJECTED if why else INDEXING, reason=why or "")
        log(f"tuned model: {state.gain()}; " + (f"kept the served one ({why})" if why else "switching to it"))
    return state.write(settings.state_path)


def _epochs_done(settings: TuneSettings) -> int:
    """Epochs the checkpoint already holds (a resumed run's time per epoch counts from there)."""
    from training.checkpoint import load_checkpoint
    try:
        held = load_checkpoint(settings.finetune.checkpoint_path, settings.finetune.identity(),
                               FinetuneSettings.defaults())
    except UserError:
        return 0
    return int(held["epoch"]) if held else 0


def _indexed(settings: TuneSettings, catalog: Catalog, state: TuneState, log) -> TuneState:
    """The tuned model's collection in TUNED_SLOT, brought in line with the catalog."""
    embedder = replace(settings.builder, weights=str(settings.finetune.out)).build(settings.model)
    state = state.moved(phase=INDEXING, total=len(catalog.products)).write(settings.state_path)
    last = [0.0]

    def heard(done: int, total: int) -> None:
        nonlocal state
        if time.monotonic() - last[0] >= 2.0 or done == total:
            last[0] = time.monotonic()
            state = state.moved(indexed=done, total=total).write(settings.state_path)
    client = make_client(settings.store)
    while True:  # the server's own background indexing may hold the folder: wait for it
        try:
            report = index_catalog(catalog, client, [embedder], batch_size=settings.batch_size,
                                   show_progress_bar=False, on_progress=heard, slot=TUNED_SLOT)
            break
        except IndexLocked:
            time.sleep(LOCK_POLL_SECONDS)
    log(report.summary())
    state = state.moved(indexed=len(catalog.products))
    return _checked(settings, client, embedder, state, log)


def _checked(settings: TuneSettings, client, tuned, state: TuneState, log) -> TuneState:
    """READY when the held-out real photos, searched as the shop searches them, do not lose
    their kind with the tuned model; else REJECTED, its index dropped. READY at once when there
    is nothing to check with."""
    photos = _held_out_photos(settings)
    if settings.served is None or not photos:
        return state.moved(phase=READY).write(settings.state_path)
    from training.photo_check import sample, served_kind_precision
    photos = sample(photos, settings.served.max_photos, settings.finetune.seed)
    state = state.moved(phase=CHECKING).write(settings.state_path)
    served = settings.builder.build(settings.model)   # what the live index was built with
    figures = {}
    try:
        for side, embedder, slot in (("before", served, None), ("after", tuned, TUNED_SLOT)):
            searcher = settings.served.searcher(client, embedder, slot)
            figures[side] = served_kind_precision(searcher, settings.model, photos)
    except UserError as exc:   # the live index gone or rebuilt meanwhile, no photo readable
        # Nothing to compare with: the fine-tune's own figures decided; a restart must not
        # index and fail again and again.
        log(f"real photos not checked as shoppers search them: {exc}")
        return state.moved(phase=READY).write(settings.state_path)
    before = {**state.before, "p_real_served": round(figures["before"][0], 4), "real_served_queries": figures["before"][1]}
    after = {**state.after, "p_real_served": round(figures["after"][0], 4), "real_served_queries": figures["after"][1]}
    why = settings.rule.refuses_served(before, after)
    state = state.moved(before=before, after=after, phase=REJECTED if why else READY,
                        reason=why or "").write(settings.state_path)
    log(f"tuned model: {state.gain()}; " + (f"kept the served one ({why})" if why else "switching to it"))
    if why:   # after the decision is written: a kill between the two leaves only a stray index
        from vectorstore import ProductCollection
        ProductCollection.drop(client, settings.model, TUNED_SLOT)
    return state


def _held_out_photos(settings: TuneSettings) -> list:
    """The labelled real photos the fine-tune only scored (its photos' held-out part)."""
    if not settings.finetune.real_photos:
        return []
    from embedding.garments import GarmentParser
    from training.real_photos import RealPhotos
    return RealPhotos.read(settings.finetune.real_photos, GarmentParser.held_out()).held_out


class _only_run:
    """One tuning run per model and weights folder: a second start (a restarted server whose
    first child still runs) is refused at once, saying so."""

    def __init__(self, state: Path):
        self.path = Path(state).with_suffix(".lock")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UserError(f"another tuning run holds {self.path}; it goes on") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this process when `parent` (the serving process that started it) is gone: a killed
    server leaves no training behind; its next start resumes from the checkpoint."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(3)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


__all__ = ["TuneSettings", "TUNED_SLOT", "tuned_on", "MIN_PER_TYPE", "MIN_TYPES", "SwitchRule", "untunable",
           "run_tune", "work_dir", "state_path", "exit_with_parent"]
