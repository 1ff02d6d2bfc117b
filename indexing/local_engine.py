"""The local engine: this process indexes the plan with a reader (a DataLoader whose workers
decode each image once and apply every model's preprocessing), the embedders, and a writer
thread (Chroma writes overlap the next batch's forward pass), as clip-retrieval's runner does
with its local distributor."""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from catalog import Product, open_image
from embedding.embedders import Embedder
from indexing.plan import IndexPlan, IndexReport, prepare_batch, product_metadata, unreadable
from indexing.timing import StageTimer
from vectorstore.guard import bump_generation, check_free_space, persist_folder


@dataclass
class LocalEngine:
    """`batch_size` images per batch; `decode_workers` processes decoding ahead of the embedders
    (default: one per spare core); `on_progress(done, total)` hears how many of the products
    are in place (already stored or written by this run) after each batch. `decode` and
    `after_batch` are injection points for tests (a decoder that fails on purpose, a hook that
    kills the run after N batches)."""
    batch_size: int = 32
    show_progress_bar: bool = True
    decode: Callable = open_image
    decode_workers: int | None = None
    after_batch: Callable[[int], None] | None = None
    on_progress: Callable[[int, int], None] | None = None

    def run(self, client, plan: IndexPlan, embedders: Sequence[Embedder], collections, report: IndexReport) -> None:
        folder = persist_folder(client)
        progress = _Progress(plan, ",".join(e.name for e in embedders), self.show_progress_bar, self.on_progress)
        news = _News(client)
        # What one batch may add to the folder (vectors, HNSW links, metadata), with room to spare.
        batch_bytes = 4 * self.batch_size * sum(e.dim * 4 + 4096 for e in embedders)
        try:
            with _Writer(report.timer) as writer:
                batches = read_batches(plan, embedders, self.batch_size, self.decode, self.decode_workers)
                for number, batch in enumerate(batches):
                    report.timer.add(batch.seconds)
                    check_free_space(folder, batch_bytes)  # stop whole, between batches, never mid-write
                    _forget_unreadable(batch, collections, writer, report)
                    _embed_and_write(batch, embedders, collections, plan.digests, writer, report)
                    writer.check()
                    progress.advance(len(batch.products), writer)
                    news.maybe()
                    if self.after_batch:
                        self.after_batch(number)
        finally:
            progress.close()
            news.now()

# Serving processes of the same folder hear of this run's writes at most this often.
NEWS_EVERY_SECONDS = 5.0


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
            vectors = embedder.embed_preprocessed(tensors)
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


__all__ = ["LocalEngine", "NEWS_EVERY_SECONDS", "read_batches"]
