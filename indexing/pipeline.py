"""Catalog -> collections: incremental, resumable, one image decode feeding every model.

A product is (re-)embedded only when no vector is stored for it under the same image digest,
so a second run costs one read of the catalog, and a run killed halfway resumes where its
last whole batch was committed: no duplicates (ids are unique in Chroma) and no gaps (what was
not committed has no digest yet).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from catalog import Catalog, ImageError, ImageLimits, Product, Skipped, count_reasons, open_image
from catalog.digests import file_digest
from catalog.errors import UserError
from embedding.embedders import Embedder
from indexing.timing import StageTimer
from vectorstore.errors import NoIndex
from vectorstore.guard import IndexLock, bump_generation, check_free_space, persist_folder
from vectorstore.store import DIGEST_KEY, ProductCollection

# An index run that would remove more than this share of a collection's products is refused
# unless the caller allows it: a catalog that reads wrong must not silently wipe a shop's index.
MAX_REMOVAL_SHARE = 0.5


class IndexRefused(UserError):
    """An index run refused before it changed anything; `allow_removal=True` overrides."""

    def __init__(self, message: str, *, catalog: str, products: int, skipped: int,
                 model: str | None = None, stored: int = 0, removing: int = 0):
        super().__init__(message)
        self.catalog, self.products, self.skipped = catalog, products, skipped
        self.model, self.stored, self.removing = model, stored, removing


@dataclass
class IndexReport:
    indexed: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    # stored products whose image moved (same content, new path): metadata updated, not re-embedded
    relocated: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    timer: StageTimer = field(default_factory=StageTimer)
    images: int = 0

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)

    def summary(self) -> str:
        lines = []
        for model in self.indexed:
            moved = self.relocated.get(model, 0)
            lines.append(f"{model}: indexed {self.indexed[model]}, unchanged {self.unchanged.get(model, 0)}, "
                         f"removed {self.removed.get(model, 0)}" + (f", image paths updated {moved}" if moved else ""))
        skipped = self.skipped_by_reason()
        lines.append(f"skipped {len(self.skipped)}" + (
            " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) + ")" if skipped else ""))
        for s in self.skipped[:10]:
            lines.append(f"  - {s.id or '?'}" + (f" (line {s.line})" if s.line else "") + f": {s.reason}")
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more")
        rate = self.images / self.seconds if self.seconds else 0.0
        lines.append(f"{self.images} images in {self.seconds:.1f}s ({rate:.1f} images/s); {self.timer.summary()}")
        return "\n".join(lines)


def _digests(products: Sequence[Product], limits: ImageLimits) -> tuple[dict[str, str], list[tuple[Product, str]]]:
    """Digests of the images within the size limit; the others with the reason, unread."""
    digests, refused = {}, []
    for product in products:
        try:
            size = product.image.stat().st_size
            if size > limits.max_bytes:
                refused.append((product, f"{product.image.name} is {size / 1e6:.1f} MB; the limit is "
                                         f"{limits.max_bytes / 1e6:.0f} MB"))
                continue
            digests[product.id] = file_digest(product.image)
        except OSError as exc:
            refused.append((product, f"cannot read {product.image.name}: {exc.strerror or exc}"))
    return digests, refused


def _check_removal(catalog: Catalog, model: str, stored: int, removing: int, max_share: float) -> None:
    where = f"the catalog {catalog.folder}"
    counts = dict(catalog=str(catalog.folder), products=len(catalog.products), skipped=len(catalog.skipped))
    if not catalog.products:
        raise IndexRefused(
            f"{where} reads as 0 products ({len(catalog.skipped)} rows skipped"
            + (f": {', '.join(f'{n} {r}' for r, n in sorted(catalog.skipped_by_reason().items()))}" if catalog.skipped else "")
            + ")" + (f"; indexing it would remove all {stored} products stored for {model}" if stored else "")
            + ". Check styles.csv (its summary says how it was read); to index it anyway, run again "
              "with --allow-removal.",
            model=model, stored=stored, removing=removing, **counts)
    if removing > max_share * stored:
        raise IndexRefused(
            f"indexing {where} ({len(catalog.products)} products) would remove {removing} of the {stored} products "
            f"stored for {model} at once. If the catalog really lost them, run again with --allow-removal.",
            model=model, stored=stored, removing=removing, **counts)


def _refuse_mass_removal(catalog: Catalog, stored: dict[str, dict], gone: dict[str, list[str]]) -> None:
    for name, ids in gone.items():
        if ids or not catalog.products:
            _check_removal(catalog, name, len(stored[name]), len(ids), MAX_REMOVAL_SHARE)


def _relocations(products: Sequence[Product], records: dict[str, tuple[str, str]],
                 digests: dict[str, str]) -> dict[str, str]:
    """id -> new image path, for stored products whose image has the same content elsewhere."""
    return {p.id: _image_path(p) for p in products
            if p.id in records and records[p.id][0] == digests[p.id] and records[p.id][1] != _image_path(p)}


def _image_path(product: Product) -> str:
    return str(product.image.resolve())


def product_metadata(product: Product, digest: str) -> dict:
    """What a collection stores beside a product's vector; the digest is what makes a rerun
    skip it."""
    meta = product.metadata()
    meta[DIGEST_KEY] = digest
    meta["image"] = _image_path(product)
    return meta


def drop_stale(client, embedders: Sequence[Embedder]) -> list[tuple[str, str, str]]:
    """Drop the collections built with other weights than these embedders', so the next index
    run builds them anew; returns (model, old weights, new weights) for each one dropped.

    For `--weights auto`: a newly fine-tuned file replaces the weights a shop's index was
    built with, and that index must follow, not refuse the start."""
    dropped = []
    for embedder in embedders:
        try:
            built_with = ProductCollection.open(client, embedder.name).weights_id
        except NoIndex:
            continue
        if built_with and built_with != embedder.weights_id:
            ProductCollection.drop(client, embedder.name)
            dropped.append((embedder.name, built_with, embedder.weights_id))
    return dropped

@dataclass
class IndexPlan:
    """What a run has to do, decided before any image is decoded: the products to (re-)embed
    and, per model, which of them that model needs."""
    products: list[Product]
    digests: dict[str, str]
    todo: dict[str, set[str]]
    pending: list[Product]

    def models_for(self, product_id: str) -> list[str]:
        return [model for model, need in self.todo.items() if product_id in need]


def open_collections(client, embedders: Sequence[Embedder], rebuild: bool = False) -> dict[str, ProductCollection]:
    collections: dict[str, ProductCollection] = {}
    for embedder in embedders:
        if rebuild:
            ProductCollection.drop(client, embedder.name)
        collections[embedder.name] = ProductCollection.open(
            client, embedder.name, weights_id=embedder.weights_id, dim=embedder.dim, create=True,
            runtime=embedder.runtime)
    return collections


def plan_index(catalog: Catalog, collections: dict[str, ProductCollection], report: IndexReport, *,
               limit: int | None = None, allow_removal: bool = False,
               limits: ImageLimits = ImageLimits()) -> IndexPlan:
    """Compare the catalog with what each collection stores: refuse a mass removal (unless
    allowed), remove products gone from the catalog, update the paths of images that moved,
    and list those whose image has no vector under its current digest. Fills the report's
    unchanged/removed/relocated counts (indexed starts at 0) and its skipped images."""
    timer = report.timer
    products = catalog.products[:limit] if limit else list(catalog.products)
    catalog_ids = {p.id for p in catalog.products}
    with timer.stage("read store"):
        stored = {name: coll.stored_records() for name, coll in collections.items()}
    gone = {name: [pid for pid in records if pid not in catalog_ids] for name, records in stored.items()}
    if not allow_removal:
        _refuse_mass_removal(catalog, stored, gone)

    with timer.stage("digest"):
        digests, refused = _digests(products, limits)
    for product, why in refused:
        report.skipped.append(unreadable(product.id, why))
    products = [p for p in products if p.id in digests]
    refused_ids = [p.id for p, _ in refused]

    todo: dict[str, set[str]] = {}
    for model, coll in collections.items():
        records = stored[model]
        with timer.stage("write"):
            coll.delete(gone[model] + [pid for pid in refused_ids if pid in records])
            moved = _relocations(products, records, digests)
            coll.set_images(moved)
        report.removed[model] = len(gone[model])
        report.relocated[model] = len(moved)
        need = {p.id for p in products if records.get(p.id, ("", ""))[0] != digests[p.id]}
        todo[model] = need
        report.unchanged[model] = len(products) - len(need)
        report.indexed[model] = 0
    pending = [p for p in products if any(p.id in need for need in todo.values())]
    report.images = len(pending)
    return IndexPlan(products, digests, todo, pending)


def finish_index(collections: dict[str, ProductCollection], report: IndexReport, started: float) -> IndexReport:
    """Center what needs it (the first build, or vectors written before a center existed)."""
    with report.timer.stage("center"):
        for coll in collections.values():
            coll.ensure_centered()
    report.seconds = time.perf_counter() - started
    return report


def unreadable(product_id: str, why: str) -> Skipped:
    return Skipped(product_id, None, f"unreadable image: {why}")


def prepare_batch(batch: Sequence[Product], embedders: Sequence[Embedder], todo: dict[str, set[str]],
                  decode: Callable = open_image, timer: StageTimer | None = None):
    """Decode each image once, then apply each model's own preprocessing (their resize sizes
    differ) to the products that model needs. Returns ({model: (products, tensor)}, [(product,
    why it could not be read)])."""
    timer = timer or StageTimer()
    decoded, failed = [], []
    for product in batch:
        try:
            with timer.stage("decode"):
                decoded.append((product, decode(product.image)))
        except ImageError as exc:
            failed.append((product, str(exc)))
    tensors = {}
    with timer.stage("preprocess"):
        for embedder in embedders:
            items = [(p, im) for p, im in decoded if p.id in todo[embedder.name]]
            if items:
                tensors[embedder.name] = ([p for p, _ in items],
                                          torch.stack([embedder.preprocess(im) for _, im in items]))
    return tensors, failed


def index_catalog(catalog: Catalog, client, embedders: Sequence[Embedder], *, batch_size: int = 32,
                  limit: int | None = None, rebuild: bool = False, show_progress_bar: bool = True,
                  decode: Callable = open_image, timer: StageTimer | None = None,
                  after_batch: Callable[[int], None] | None = None, allow_removal: bool = False,
                  limits: ImageLimits = ImageLimits(),
                  on_progress: Callable[[int, int], None] | None = None,
                  decode_workers: int | None = None) -> IndexReport:
    """Bring one collection per embedder in line with the catalog; returns what was done.

    Three stages, as clip-retrieval's runner: a reader (a DataLoader whose workers decode each
    image once and apply every model's preprocessing), the embedders, and a writer thread
    (Chroma writes overlap the next batch's forward pass).

    A catalog that reads as empty, or a run that would remove more than MAX_REMOVAL_SHARE of a
    collection, raises `IndexRefused` before anything changes, unless `allow_removal`.
    `decode` and `after_batch` are injection points for tests (a decoder that fails on
    purpose, a hook that kills the run after N batches). `on_progress(done, total)` hears how
    many of the products are in place (already stored or written by this run), after each batch.
    `decode_workers`: processes decoding ahead of the embedders (default: one per spare core).
    """
    report = IndexReport(skipped=list(catalog.skipped), timer=timer or StageTimer())
    started = time.perf_counter()
    if rebuild and not catalog.products and not allow_removal:
        _check_removal(catalog, ",".join(e.name for e in embedders), 0, 0, MAX_REMOVAL_SHARE)
    # One writer per folder (IndexLocked names the other one); the lock is held to the end.
    with IndexLock.of(client):
        return _index_locked(catalog, client, embedders, report, started, batch_size=batch_size, limit=limit,
                             rebuild=rebuild, show_progress_bar=show_progress_bar, decode=decode,
                             after_batch=after_batch, allow_removal=allow_removal, limits=limits,
                             on_progress=on_progress, decode_workers=decode_workers)


# Serving processes of the same folder hear of this run's writes at most this often.
NEWS_EVERY_SECONDS = 5.0


def _index_locked(catalog: Catalog, client, embedders: Sequence[Embedder], report: IndexReport, started: float, *,
                  batch_size, limit, rebuild, show_progress_bar, decode, after_batch, allow_removal, limits,
                  on_progress, decode_workers) -> IndexReport:
    folder = persist_folder(client)
    check_free_space(folder)
    collections = open_collections(client, embedders, rebuild)
    bump_generation(client)
    plan = plan_index(catalog, collections, report, limit=limit, allow_removal=allow_removal, limits=limits)
    for embedder in embedders:
        if plan.todo[embedder.name]:
            collections[embedder.name].note_runtime(embedder.runtime)
    progress = _Progress(plan, ",".join(e.name for e in embedders), show_progress_bar, on_progress)
    news = _News(client)
    # What one batch may add to the folder (vectors, HNSW links, metadata), with room to spare.
    batch_bytes = 4 * batch_size * sum(e.dim * 4 + 4096 for e in embedders)
    try:
        with _Writer(report.timer) as writer:
            for number, batch in enumerate(read_batches(plan, embedders, batch_size, decode, decode_workers)):
                report.timer.add(batch.seconds)
                check_free_space(folder, batch_bytes)  # stop whole, between batches, never mid-write
                _forget_unreadable(batch, collections, writer, report)
                _embed_and_write(batch, embedders, collections, plan.digests, writer, report)
                writer.check()
                progress.advance(len(batch.products), writer)
                news.maybe()
                if after_batch:
                    after_batch(number)
    finally:
        progress.close()
        news.now()
    check_free_space(folder)
    finished = finish_index(collections, report, started)
    news.now()
    return finished


class _News:
    """Bumps the folder's generation (vectorstore/guard.py) now and then while writing."""

    def __init__(self, client):
        self.client = client
        self.last = time.monotonic()

    def maybe(self) -> None:
        if time.monotonic() - self.last >= NEWS_EVERY_SECONDS:
            self.now()

    def now(self) -> None:
        self.last = time.monotonic()
        bump_generation(self.client)


# -- reader: decode and preprocess, ahead of the embedders, in DataLoader workers -------------
@dataclass
class DecodedBatch:
    products: list[Product]
    tensors: dict[str, tuple[list[Product], torch.Tensor]]  # per model: the products it needs
    failed: list[tuple[Product, str]]
    seconds: dict[str, float]  # decode / preprocess time, measured where it ran


class _Batches(torch.utils.data.Dataset):
    def __init__(self, batches: list[list[Product]], embedders: Sequence[Embedder], todo: dict[str, set[str]],
                 decode: Callable):
        self.batches, self.embedders, self.todo, self.decode = batches, embedders, todo, decode

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, number: int) -> DecodedBatch:
        timer = StageTimer()
        batch = self.batches[number]
        tensors, failed = prepare_batch(batch, self.embedders, self.todo, self.decode, timer)
        return DecodedBatch(batch, tensors, failed, dict(timer.seconds))


def _as_is(item):
    return item


def read_batches(plan: IndexPlan, embedders: Sequence[Embedder], batch_size: int, decode: Callable = open_image,
                 workers: int | None = None):
    """The plan's pending products in batches, decoded and preprocessed. Worker processes are
    forked (the embedders' transforms and `decode` travel with them) and at most two batches
    per worker wait ahead, so memory stays bounded."""
    pending = plan.pending
    batches = [pending[i:i + batch_size] for i in range(0, len(pending), batch_size)]
    if workers is None:
        workers = min(2, max(0, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(
        _Batches(batches, embedders, plan.todo, decode), batch_size=None, collate_fn=_as_is,
        num_workers=min(workers, len(batches)), prefetch_factor=2 if workers and batches else None,
        multiprocessing_context="fork" if workers and batches else None)
    return iter(loader)


# -- embedders and writer ---------------------------------------------------------------------
def _embed_and_write(batch: DecodedBatch, embedders: Sequence[Embedder], collections, digests: dict[str, str],
                     writer: _Writer, report: IndexReport) -> None:
    for embedder in embedders:
        if embedder.name not in batch.tensors:
            continue
        items, tensors = batch.tensors[embedder.name]
        with report.timer.stage(f"embed {embedder.name}"):
            vectors = embedder.embed_tensors(tensors)
        writer.put(lambda coll=collections[embedder.name], ids=[p.id for p in items], v=vectors,
                   metas=[product_metadata(p, digests[p.id]) for p in items]: coll.write(ids, v, metas))
        report.indexed[embedder.name] += len(items)


def _forget_unreadable(batch: DecodedBatch, collections, writer: _Writer, report: IndexReport) -> None:
    """An image that no longer decodes takes its product's old vector with it."""
    for product, why in batch.failed:
        report.skipped.append(unreadable(product.id, why))
        for coll in collections.values():
            writer.put(lambda coll=coll, pid=product.id: coll.delete([pid]))


class _Writer:
    """Chroma writes from one background thread, so the network keeps computing; the queue is
    short so that memory stays bounded and a kill loses at most a batch or two. Whatever the
    way out, queued writes are committed before the run returns or raises."""

    def __init__(self, timer: StageTimer):
        self.timer = timer
        self.jobs: queue.Queue = queue.Queue(maxsize=2)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.jobs.put(None)
        self.jobs.join()
        if exc[0] is None:
            self.check()

    def put(self, job: Callable[[], None]) -> None:
        self.jobs.put(job)

    def flush(self) -> None:
        """Wait until every queued write is committed (then a search can find them)."""
        self.jobs.join()
        self.check()

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                with self.timer.stage("write"):
                    job()
            except BaseException as exc:  # surfaced to the caller by check()
                self.errors.append(exc)
            finally:
                self.jobs.task_done()
        self.jobs.task_done()


class _Progress:
    """The bar on stderr and the `on_progress(done, total)` callback: products in place."""

    def __init__(self, plan: IndexPlan, names: str, show: bool, on_progress):
        self.total = len(plan.products)
        self.done = self.total - len(plan.pending)
        self.on_progress = on_progress
        self.bar = tqdm(total=len(plan.pending), unit="img", desc=f"indexing {names}", disable=not show)
        if on_progress:
            on_progress(self.done, self.total)

    def advance(self, n: int, writer: _Writer) -> None:
        self.bar.update(n)
        if self.on_progress:
            writer.flush()  # "in place" means committed
            self.done += n
            self.on_progress(self.done, self.total)

    def close(self) -> None:
        self.bar.close()
