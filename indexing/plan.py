"""What an index run has to do, decided before any image is decoded, and the steps both engines
share: open the collections, compare the catalog with what they store (new, changed, moved,
gone), decode a batch once for every model, and finish.

A product is (re-)embedded only when no vector is stored for it under the same image digest,
so a second run costs one read of the catalog, and a run killed halfway resumes where its
last whole batch was committed: no duplicates (ids are unique in Chroma) and no gaps (what was
not committed has no digest yet). The stored digest also covers the product's labels
(`record_digest`): a product whose name, kind or colour the shop edited keeps its vector and
gets its new labels, or the chat and the filters would go on answering with the old ones.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from catalog import Catalog, ImageError, ImageLimits, Product, Skipped, count_reasons, open_image
from catalog.digests import file_digest
from catalog.errors import UserError
from embedding.embedders import Embedder
from indexing.timing import StageTimer
from vectorstore.errors import NoIndex
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
    # stored products whose labels changed in the catalog (name, kind, colour...): the same
    relabelled: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    timer: StageTimer = field(default_factory=StageTimer)
    images: int = 0

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)

    def summary(self) -> str:
        lines = []
        for model in self.indexed:
            moved, relabelled = self.relocated.get(model, 0), self.relabelled.get(model, 0)
            lines.append(f"{model}: indexed {self.indexed[model]}, unchanged {self.unchanged.get(model, 0)}, "
                         f"removed {self.removed.get(model, 0)}" + (f", image paths updated {moved}" if moved else "")
                         + (f", labels updated {relabelled}" if relabelled else ""))
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


def check_removal(catalog: Catalog, model: str, stored: int, removing: int, max_share: float) -> None:
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
            check_removal(catalog, name, len(stored[name]), len(ids), MAX_REMOVAL_SHARE)


def _relocations(products: Sequence[Product], records: dict[str, tuple[str, str]],
                 digests: dict[str, str]) -> dict[str, str]:
    """id -> new image path, for stored products whose image has the same content elsewhere."""
    return {p.id: _image_path(p) for p in products
            if p.id in records and image_digest(records[p.id][0]) == digests[p.id]
            and records[p.id][1] != _image_path(p)}


def _relabelled(products: Sequence[Product], records: dict[str, tuple[str, str]],
                digests: dict[str, str]) -> set[str]:
    """Stored products whose image is the same but whose labels the catalog changed."""
    return {p.id for p in products if p.id in records and image_digest(records[p.id][0]) == digests[p.id]
            and records[p.id][0] != record_digest(p, digests[p.id])}


def _image_path(product: Product) -> str:
    return str(product.image.resolve())


def record_digest(product: Product, image: str) -> str:
    """What a stored record was made from: its image's digest, then its labels' (a short hash
    of the catalog's fields for it), as "IMAGE:LABELS"."""
    labels = json.dumps(product.metadata(), sort_keys=True, default=str).encode()
    return f"{image}:{hashlib.sha1(labels).hexdigest()[:16]}"


def image_digest(stored: str) -> str:
    """The image's part of a stored digest (the whole of one written before labels were)."""
    return stored.split(":", 1)[0]


def product_metadata(product: Product, digest: str) -> dict:
    """What a collection stores beside a product's vector; the digest (of its image, and of its
    labels: `record_digest`) is what makes a rerun skip it."""
    meta = product.metadata()
    meta[DIGEST_KEY] = record_digest(product, digest)
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


def open_collections(client, embedders: Sequence[Embedder], rebuild: bool = False,
                     slot: str | None = None) -> dict[str, ProductCollection]:
    collections: dict[str, ProductCollection] = {}
    for embedder in embedders:
        if rebuild:
            ProductCollection.drop(client, embedder.name, slot)
        collections[embedder.name] = ProductCollection.open(
            client, embedder.name, weights_id=embedder.weights_id, dim=embedder.dim, create=True,
            runtime=embedder.runtime, slot=slot)
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
            relabelled = _relabelled(products, records, digests)
            coll.relabel({p.id: product_metadata(p, digests[p.id]) for p in products
                          if p.id in moved or p.id in relabelled})
        report.removed[model] = len(gone[model])
        report.relocated[model] = len(moved)
        report.relabelled[model] = len(relabelled - set(moved))
        need = {p.id for p in products if image_digest(records.get(p.id, ("", ""))[0]) != digests[p.id]}
        todo[model] = need
        report.unchanged[model] = len(products) - len(need)
        report.indexed[model] = 0
    pending = [p for p in products if any(p.id in need for need in todo.values())]
    report.images = len(pending)
    return IndexPlan(products, digests, todo, pending)


def finish_index(collections: dict[str, ProductCollection], report: IndexReport, started: float) -> IndexReport:
    """Center what needs it (the first build, or vectors written before a center existed), then
    let the engine index what was written."""
    with report.timer.stage("center"):
        for coll in collections.values():
            coll.ensure_centered()
            coll.tidy()
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


__all__ = ["MAX_REMOVAL_SHARE", "IndexRefused", "check_removal", "IndexReport", "IndexPlan", "drop_stale", "finish_index",
           "open_collections", "plan_index", "prepare_batch", "product_metadata", "record_digest", "image_digest",
           "unreadable"]
