"""Catalog -> Chroma server with Ray Data: the same incremental, resumable index as
`index_catalog`, with decoding and embedding spread over Ray actors.

The driver plans exactly as the single-process indexer does (same digests, same removals,
same report) and hands Ray Data one row per product to embed. Two actor stages follow:

    rows (id, image path, models, metadata) -> EmbedStage (decode once, embed with each model
    that needs the product; one model load per actor) -> WriteStage (delete-then-add into the
    Chroma server, one whole batch at a time) -> the driver (counts, progress, skipped images)

Writes happen on the cluster, next to the vectors, so the driver never holds them. Each write
commits whole, so a run killed anywhere leaves whole batches, and the next run skips them by
digest: no duplicates, no gaps. Ray is imported only here and only when this engine is used.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from catalog import Catalog, Product
from catalog.errors import UserError
from embedding.embedders import Embedder
from embedding.weights import DEFAULT_WEIGHTS_DIR, resolve
from indexing.pipeline import run_index
from indexing.plan import IndexPlan, IndexReport, prepare_batch, product_metadata, unreadable
from vectorstore.store import ProductCollection, StoreSettings, make_client

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIRST_BATCH_STAGE = "ray: start to first batch"
STEADY_STAGE = "ray: decode, embed, write"
# The packages an actor imports; shipped to a remote cluster with the job (py_modules).
ACTOR_PACKAGES = ("catalog", "embedding", "vectorstore", "indexing")


class RayIndexError(UserError, RuntimeError):
    """The Ray engine cannot run: Ray missing, no Chroma server, cluster unreachable, a stage failed."""


@dataclass(frozen=True)
class RaySettings:
    """How to run the Ray engine. `address` None starts a local Ray on this machine."""
    address: str | None = None
    workers: int | None = None          # embedding actors; default: one per CPU Ray has
    batch_size: int = 32                 # products per embed batch, and per committed write
    cpus_per_worker: float = 1.0
    # Only for a local Ray: its shared-memory object store (Ray's default is 30% of RAM,
    # too much on a shared machine for batches of a few MB).
    object_store_bytes: int = 512 * 2**20
    num_cpus: int | None = None          # local Ray's CPUs; default: workers, else os.cpu_count()


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayIndexError("--engine ray needs Ray: pip install -r requirements-ray.txt") from exc
    # Ray Data logs each execution's plan at INFO; the driver's own bar and summary say enough,
    # and a failure still surfaces as an exception.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


@contextmanager
def ray_session(settings: RaySettings):
    """Use the Ray already initialised in this process (tests, notebooks), else join
    `settings.address`, else start a local Ray; shut down only what was started here."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if settings.address:
            ray.init(address=settings.address, logging_level=logging.WARNING, log_to_driver=False,
                     runtime_env={"py_modules": [str(PROJECT_ROOT / name) for name in ACTOR_PACKAGES]})
        else:
            # "local": a new Ray of this process's own, never a cluster found on the machine.
            ray.init(address="local", num_cpus=settings.num_cpus or settings.workers or os.cpu_count() or 1,
                     object_store_memory=settings.object_store_bytes, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # ConnectionError, or Ray's own errors for a bad address
        where = f"the Ray cluster at {settings.address}" if settings.address else "a local Ray"
        raise RayIndexError(f"cannot start or reach {where}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _vector_column(model: str) -> str:
    return f"vector_{model}"


def _need_column(model: str) -> str:
    return f"need_{model}"


class EmbedStage:
    """Ray Data callable class: each actor loads its models once, then embeds batches."""

    def __init__(self, models: Sequence[str], weights: dict[str, str], device: str = "cpu"):
        from embedding.embedders import load_embedder
        self.embedders = [load_embedder(name, weights[name], device=device) for name in models]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [str(i) for i in batch["id"]]
        products = [Product(id=pid, image=Path(str(path))) for pid, path in zip(ids, batch["image"])]
        wanted = [str(m).split(",") for m in batch["models"]]
        todo = {e.name: {pid for pid, models in zip(ids, wanted) if e.name in models} for e in self.embedders}
        tensors, failed = prepare_batch(products, self.embedders, todo)
        row = {pid: i for i, pid in enumerate(ids)}
        errors = np.array([""] * len(ids), dtype=object)
        for product, why in failed:
            errors[row[product.id]] = why
        out = {"id": np.asarray(ids, dtype=object), "meta": batch["meta"], "error": errors}
        for embedder in self.embedders:
            vectors = np.zeros((len(ids), embedder.dim), dtype=np.float32)
            need = np.zeros(len(ids), dtype=bool)
            if embedder.name in tensors:
                items, tensor = tensors[embedder.name]
                rows = [row[p.id] for p in items]
                vectors[rows] = embedder.embed_preprocessed(tensor)
                need[rows] = True
            out[_vector_column(embedder.name)] = vectors
            out[_need_column(embedder.name)] = need
        return out


class WriteStage:
    """Ray Data callable class: writes each embedded batch into the Chroma server, whole.

    Returns per product which models were written and any decode error, for the driver's
    report. An unreadable image is removed from every collection, as the single process does.
    """

    def __init__(self, store: StoreSettings, models: Sequence[str]):
        client = make_client(store)
        self.collections = {model: ProductCollection.open(client, model) for model in models}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [str(i) for i in batch["id"]]
        errors = [str(e) for e in batch["error"]]
        unreadable_ids = [pid for pid, e in zip(ids, errors) if e]
        written = [[] for _ in ids]
        for model, coll in self.collections.items():
            if unreadable_ids:
                coll.delete(unreadable_ids)
            rows = np.flatnonzero(batch[_need_column(model)])
            if not len(rows):
                continue
            coll.write([ids[i] for i in rows], np.asarray(batch[_vector_column(model)])[rows],
                       [json.loads(str(batch["meta"][i])) for i in rows])
            for i in rows:
                written[i].append(model)
        return {"id": np.asarray(ids, dtype=object), "error": np.asarray(errors, dtype=object),
                "written": np.asarray([",".join(w) for w in written], dtype=object)}


def plan_rows(plan: IndexPlan) -> list[dict]:
    """One row per product to embed: what the actors need, metadata as the single process
    stores it (JSON keeps Arrow's schema flat whatever fields a product has)."""
    # Absolute paths: an actor's working directory is not the driver's.
    return [{"id": p.id, "image": str(p.image.resolve()), "models": ",".join(plan.models_for(p.id)),
             "meta": json.dumps(product_metadata(p, plan.digests[p.id]))} for p in plan.pending]


def build_pipeline(ray, rows: list[dict], store: StoreSettings, models: Sequence[str], weights: dict[str, str],
                   device: str, settings: RaySettings):
    """rows -> embed actors -> writer actor, as a lazy Ray Dataset."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver keeps its own bar
    workers = settings.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // settings.cpus_per_worker))
    # One block per batch, so that batches stream through (and commit) one by one.
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / settings.batch_size)))
    gpus = 1 if device.startswith("cuda") else 0
    ds = ds.map_batches(EmbedStage, fn_constructor_kwargs={"models": list(models), "weights": weights,
                                                           "device": device},
                        batch_size=settings.batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                        num_cpus=settings.cpus_per_worker, num_gpus=gpus)
    # The writer waits on the network, not a CPU: it takes none, so it never starves the embedders.
    return ds.map_batches(WriteStage, fn_constructor_kwargs={"store": store, "models": list(models)},
                          batch_size=None, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0)


def _account(batch: dict[str, np.ndarray], report: IndexReport) -> int:
    for pid, error, written in zip(batch["id"], batch["error"], batch["written"]):
        if error:
            report.skipped.append(unreadable(str(pid), str(error)))
        for model in filter(None, str(written).split(",")):
            report.indexed[model] += 1
    return len(batch["id"])


def actor_weights(models: Sequence[str], weights: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> dict[str, str]:
    """Each model's concrete weights for the actors, as the driver resolves them: `auto` is
    decided here once (an actor's working directory, and even its machine, is not the
    driver's), and a file is named by its absolute path."""
    concrete = {}
    for model in models:
        choice = resolve(model, weights, weights_dir).choice
        if choice is None:
            raise RayIndexError(resolve(model, weights, weights_dir, download=False).line)
        concrete[model] = str(choice.path.resolve()) if choice.kind == "file" else str(choice)
    return concrete


@dataclass
class RayEngine:
    """Ray Data decodes, embeds and writes: rows -> embed actors -> a writer actor, into the
    Chroma server of `store`. The actors build their own embedders from `weights` (each model's
    concrete weights, `actor_weights`) on `device`."""
    store: StoreSettings
    weights: dict[str, str]
    device: str = "cpu"
    settings: RaySettings = RaySettings()
    show_progress_bar: bool = True

    def run(self, client, plan: IndexPlan, embedders: Sequence[Embedder], collections, report: IndexReport) -> None:
        if plan.pending:
            with ray_session(self.settings) as ray:
                self._stream(ray, plan, [e.name for e in embedders], report)
        for coll in collections.values():
            coll.metadata.refresh()  # written by the actors: this process's cached table is stale

    def _stream(self, ray, plan: IndexPlan, models: list[str], report: IndexReport) -> None:
        pipeline = build_pipeline(ray, plan_rows(plan), self.store, models, self.weights, self.device, self.settings)
        progress = tqdm(total=len(plan.pending), unit="img", disable=not self.show_progress_bar,
                        desc="indexing (ray) " + ",".join(models))
        try:
            batches = iter(pipeline.iter_batches(batch_size=None, batch_format="numpy"))
            # Apart, so the summary tells the cluster's and actors' start from the steady work.
            with report.timer.stage(FIRST_BATCH_STAGE):
                batch = next(batches, None)
            with report.timer.stage(STEADY_STAGE):
                while batch is not None:
                    progress.update(_account(batch, report))
                    batch = next(batches, None)
        except ray.exceptions.RayError as exc:
            raise RayIndexError(f"the Ray pipeline failed: {exc}") from exc
        finally:
            progress.close()


def index_catalog_ray(catalog: Catalog, store: StoreSettings, embedders: Sequence[Embedder], *, weights: str,
                      device: str = "cpu", settings: RaySettings = RaySettings(), limit: int | None = None,
                      rebuild: bool = False, show_progress_bar: bool = True,
                      weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> IndexReport:
    """`run_index` with the Ray engine. `embedders` are the driver's copies, used for what the
    collections record (weights id, dimension); the actors build their own from (name,
    `weights`, `device`)."""
    if not store.host and store.engine == "chroma":
        raise RayIndexError("--engine ray writes from Ray workers into a Chroma server: give --chroma-host "
                            "and --chroma-port (an embedded --db folder cannot be shared between processes)")
    engine = RayEngine(store=store, weights=actor_weights([e.name for e in embedders], weights, weights_dir),
                       device=device, settings=settings, show_progress_bar=show_progress_bar)
    return run_index(catalog, make_client(store), embedders, engine, limit=limit, rebuild=rebuild)
