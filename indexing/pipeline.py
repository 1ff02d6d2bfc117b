"""One index run, whatever runs it: lock the store, open the collections, plan, let an engine
decode, embed and write what the plan lists, then finish. Two engines (clip-retrieval's
distributors): `LocalEngine` (this process; indexing/local_engine.py) and `RayEngine` (Ray
Data actors writing into a Chroma server; indexing/ray_engine.py)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from catalog import Catalog, ImageLimits, open_image
from embedding.embedders import Embedder
from indexing.local_engine import LocalEngine
from indexing.plan import (
    MAX_REMOVAL_SHARE,
    IndexPlan,
    IndexReport,
    check_removal,
    finish_index,
    open_collections,
    plan_index,
)
from indexing.timing import StageTimer
from vectorstore.guard import IndexLock, bump_generation, check_free_space, persist_folder


class Engine(Protocol):
    def run(self, client, plan: IndexPlan, embedders: Sequence[Embedder], collections, report: IndexReport) -> None:
        """Embed and write the plan's pending products into `collections`, counting them in
        `report` (indexed, skipped); what it has committed stays if it stops."""


def run_index(catalog: Catalog, client, embedders: Sequence[Embedder], engine: Engine, *,
              limit: int | None = None, rebuild: bool = False, allow_removal: bool = False,
              limits: ImageLimits = ImageLimits(), timer: StageTimer | None = None,
              slot: str | None = None) -> IndexReport:
    """Bring one collection per embedder in line with the catalog; returns what was done.
    `slot`: the collections built beside the live ones (a tuned model's, promoted when complete).

    A catalog that reads as empty, or a run that would remove more than MAX_REMOVAL_SHARE of a
    collection, raises `IndexRefused` before anything changes, unless `allow_removal`."""
    report = IndexReport(skipped=list(catalog.skipped), timer=timer or StageTimer())
    started = time.perf_counter()
    if rebuild and not catalog.products and not allow_removal:
        check_removal(catalog, ",".join(e.name for e in embedders), 0, 0, MAX_REMOVAL_SHARE)
    # One writer per folder (IndexLocked names the other one); the lock is held to the end.
    with IndexLock.of(client):
        folder = persist_folder(client)
        check_free_space(folder)
        collections = open_collections(client, embedders, rebuild, slot)
        bump_generation(client)
        plan = plan_index(catalog, collections, report, limit=limit, allow_removal=allow_removal, limits=limits)
        for embedder in embedders:
            if plan.todo[embedder.name]:
                collections[embedder.name].note_runtime(embedder.runtime)
        engine.run(client, plan, embedders, collections, report)
        check_free_space(folder)
        finished = finish_index(collections, report, started)
        bump_generation(client)
        return finished


def index_catalog(catalog: Catalog, client, embedders: Sequence[Embedder], *, batch_size: int = 32,
                  limit: int | None = None, rebuild: bool = False, show_progress_bar: bool = True,
                  decode: Callable = open_image, timer: StageTimer | None = None,
                  after_batch: Callable[[int], None] | None = None, allow_removal: bool = False,
                  limits: ImageLimits = ImageLimits(),
                  on_progress: Callable[[int, int], None] | None = None,
                  decode_workers: int | None = None, slot: str | None = None) -> IndexReport:
    """`run_index` with the local engine (its settings: indexing/local_engine.py)."""
    engine = LocalEngine(batch_size=batch_size, show_progress_bar=show_progress_bar, decode=decode,
                         decode_workers=decode_workers, after_batch=after_batch, on_progress=on_progress)
    return run_index(catalog, client, embedders, engine, limit=limit, rebuild=rebuild, allow_removal=allow_removal,
                     limits=limits, timer=timer, slot=slot)


__all__ = ["Engine", "index_catalog", "run_index"]
