"""Catalog -> collections: incremental, resumable, one image decode feeding every model.

A product is (re-)embedded only when no vector is stored for it under the same image digest,
so a second run costs one read of the catalog, and a run killed halfway resumes where its
last whole batch was committed: no duplicates (ids are unique in Chroma) and no gaps (what was
not committed has no digest yet).
"""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from catalog import Catalog, ImageError, Product, Skipped, count_reasons, open_image
from vectorstore.embedders import Embedder
from vectorstore.store import DIGEST_KEY, ProductCollection
from vectorstore.timing import StageTimer


@dataclass
class IndexReport:
    indexed: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    timer: StageTimer = field(default_factory=StageTimer)
    images: int = 0

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)

    def summary(self) -> str:
        lines = []
        for model in self.indexed:
            lines.append(f"{model}: indexed {self.indexed[model]}, unchanged {self.unchanged.get(model, 0)}, "
                         f"removed {self.removed.get(model, 0)}")
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


def file_digest(path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _metadata(product: Product, digest: str) -> dict:
    meta = product.metadata()
    meta[DIGEST_KEY] = digest
    meta["image"] = str(product.image.resolve())
    return meta


def index_catalog(catalog: Catalog, client, embedders: Sequence[Embedder], *, batch_size: int = 32,
                  limit: int | None = None, rebuild: bool = False, show_progress_bar: bool = True,
                  decode: Callable = open_image, timer: StageTimer | None = None,
                  after_batch: Callable[[int], None] | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> IndexReport:
    """Bring one collection per embedder in line with the catalog; returns what was done.

    `decode` and `after_batch` are injection points for tests (a decoder that fails on
    purpose, a hook that kills the run after N batches). `on_progress(done, total)` hears how
    many of the products are in place (already stored or written by this run), after each batch.
    """
    report = IndexReport(skipped=list(catalog.skipped), timer=timer or StageTimer())
    timer = report.timer
    started = time.perf_counter()
    products = catalog.products[:limit] if limit else list(catalog.products)
    catalog_ids = {p.id for p in catalog.products}

    collections: dict[str, ProductCollection] = {}
    for embedder in embedders:
        if rebuild:
            ProductCollection.drop(client, embedder.name)
        collections[embedder.name] = ProductCollection.open(
            client, embedder.name, weights_id=embedder.weights_id, dim=embedder.dim, create=True,
            runtime=embedder.runtime)

    with timer.stage("digest"):
        digests = {p.id: file_digest(p.image) for p in products}

    todo: dict[str, set[str]] = {}
    for embedder in embedders:
        coll = collections[embedder.name]
        with timer.stage("read store"):
            stored = coll.stored_digests()
        gone = [pid for pid in stored if pid not in catalog_ids]
        with timer.stage("write"):
            coll.delete(gone)
        report.removed[embedder.name] = len(gone)
        need = {p.id for p in products if stored.get(p.id) != digests[p.id]}
        todo[embedder.name] = need
        if need:
            coll.note_runtime(embedder.runtime)
        report.unchanged[embedder.name] = len(products) - len(need)
        report.indexed[embedder.name] = 0

    pending = [p for p in products if any(p.id in need for need in todo.values())]
    report.images = len(pending)
    done = len(products) - len(pending)
    if on_progress:
        on_progress(done, len(products))
    batches = [pending[i:i + batch_size] for i in range(0, len(pending), batch_size)]

    def prepare(batch: list[Product]):
        # Decode once, then each model's own preprocessing (their resize sizes differ).
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

    # Writes go to Chroma from one background thread so the network keeps computing; the
    # queue is short so that memory stays bounded and a kill loses at most a batch or two.
    writes: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def writer():
        while (job := writes.get()) is not None:
            try:
                with timer.stage("write"):
                    job()
            except BaseException as exc:  # surfaced to the caller after the loop
                errors.append(exc)
            finally:
                writes.task_done()
        writes.task_done()

    writer_thread = threading.Thread(target=writer, daemon=True)
    writer_thread.start()
    progress = tqdm(total=len(pending), unit="img", desc="indexing " + ",".join(e.name for e in embedders),
                    disable=not show_progress_bar)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            upcoming = pool.submit(prepare, batches[0]) if batches else None
            for number in range(len(batches)):
                tensors, failed = upcoming.result()
                upcoming = pool.submit(prepare, batches[number + 1]) if number + 1 < len(batches) else None
                for product, why in failed:
                    report.skipped.append(Skipped(product.id, None, f"unreadable image: {why}"))
                    for coll in collections.values():
                        writes.put(lambda coll=coll, pid=product.id: coll.delete([pid]))
                for embedder in embedders:
                    if embedder.name not in tensors:
                        continue
                    items, batch = tensors[embedder.name]
                    with timer.stage(f"embed {embedder.name}"):
                        vectors = embedder.embed_tensors(batch)
                    writes.put(lambda coll=collections[embedder.name], ids=[p.id for p in items], v=vectors,
                               metas=[_metadata(p, digests[p.id]) for p in items]: coll.write(ids, v, metas))
                    report.indexed[embedder.name] += len(items)
                if errors:
                    raise errors[0]
                progress.update(len(batches[number]))
                if on_progress:
                    writes.join()   # "in place" means committed: a search can find them
                    done += len(batches[number])
                    on_progress(done, len(products))
                if after_batch:
                    after_batch(number)
    finally:
        writes.put(None)
        writes.join()
        progress.close()
    if errors:
        raise errors[0]
    with timer.stage("center"):
        for coll in collections.values():
            coll.ensure_centered()
    report.seconds = time.perf_counter() - started
    return report
