"""One model's collection of product vectors, whatever engine holds it: the narrow interface every
store adapter implements, and what all of them share.

An adapter (vectorstore/chroma_store.py, vectorstore/lance_store.py) provides the engine's part:
open or create a collection (with its dimension and index settings), its notes (weights, runtime,
centre, search breadth), write, delete, vectors by id, a filtered nearest-neighbour search that
returns ids, scores and metadata, counts under a filter, the vocabulary's facet values and the
metadata page by page. This class adds what does not depend on the engine: centering, the weights
check, incremental indexing's digests, and "more like this" from a stored vector.

`ProductCollection.open(client, model, ...)` picks the adapter from the client that
`vectorstore.store.make_client` made.
"""
from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vectorstore.errors import WeightsMismatch
from vectorstore.filters import Filters
from vectorstore.metadata import MetadataTable

COLLECTION_PREFIX = "products_"
# Where a promoted slot's predecessor waits until no search holds it (ProductCollection.promote).
RETIRED_SLOT = "retired"
DIGEST_KEY = "digest"
# Centering: a collection stores the mean of its products' unit vectors (CENTER_KEY, base64
# float32) and every vector as normalise(v - mean); queries get the same treatment. Pooled CNN
# features share one dominant direction (random-init ResNet-50 vectors sit at cosine 0.9996 to
# their mean on the real catalog), which both blurs the ranking and starves HNSW: recall@5 went
# from 0.84 to 0.998 on those vectors at the same ef_search (docs/search.md).
CENTER_KEY = "center"
# Which runtime computed a collection's vectors (embedding/runtime.py); not part of the
# weights check, since int8 and fp32 vectors of the same weights agree to cosine >= 0.99.
RUNTIME_KEY = "runtime"
CENTERED_KEY = "centered"
RELABEL_CHUNK = 1000
WEIGHTS_KEY = "weights"
# How wide the graph walk of an HNSW search is (set in the collection's configuration when an
# indexer opens it, and kept by every later open). Chosen by measurement on realistic data, k = 50
# as serving asks: the worst filter class (a category that disagrees with the photo) had recall@5
# 0.859 / 0.908 / 0.949 at 64 / 128 / 256 with 150k products, and 0.984 at 512 with 20k; every
# other class >= 0.99 from 64 (bench/scale.py; docs/scale.md).
EF_SEARCH = 512


def collection_name(model: str, slot: str | None = None) -> str:
    """The live collection of `model`, or (with `slot`) one built beside it: a tuned model's
    index is built in slot "tuned" while the live one keeps answering, then promoted."""
    return f"{COLLECTION_PREFIX}{model}" + (f".{slot}" if slot else "")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict = field(default_factory=dict)


def plain(value):
    # Stores reject numpy scalars; the caller's metadata may hold them.
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_center(center: np.ndarray) -> str:
    return base64.b64encode(np.asarray(center, dtype=np.float32).tobytes()).decode("ascii")


def decode_center(text: str | None) -> np.ndarray | None:
    if not text:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


def _adapter(client) -> type[ProductCollection]:
    from vectorstore.lance_store import LanceCollection, LanceStore
    if isinstance(client, LanceStore):
        return LanceCollection
    from vectorstore.chroma_store import ChromaCollection
    return ChromaCollection


class ProductCollection(ABC):
    """One model's collection. Open with `ProductCollection.open(client, model, ...)`."""

    model: str
    name: str
    where: str
    metadata: MetadataTable

    # -- lifecycle: the adapter of the client ---------------------------------------------
    @staticmethod
    def open(client, model: str, *, weights_id: str | None = None, dim: int | None = None,
             create: bool = False, runtime: str | None = None, slot: str | None = None) -> ProductCollection:
        """Open the collection of `model` (the live one, or the one in `slot`); with `create`,
        make it when missing (and bring its search breadth to EF_SEARCH).

        `weights_id` is checked against what the collection was built with: vectors of one
        network searched with another would give confident nonsense.
        """
        opened = _adapter(client).open_named(client, model, collection_name(model, slot), weights_id=weights_id,
                                             dim=dim, create=create, runtime=runtime)
        if weights_id:
            opened.check_weights(weights_id)
        return opened

    @staticmethod
    def drop(client, model: str, slot: str | None = None) -> None:
        """Remove the collection (nothing happens when there is none)."""
        _adapter(client).drop_named(client, model, collection_name(model, slot))

    @staticmethod
    def promote(client, model: str, slot: str) -> None:
        """Make the collection in `slot` the model's live one, without copying a vector: the live
        one becomes RETIRED_SLOT, then the slot takes the live name. A handle opened before keeps
        its collection until `drop(..., RETIRED_SLOT)`."""
        _adapter(client).promote_named(client, model, collection_name(model, slot),
                                       collection_name(model), collection_name(model, RETIRED_SLOT))

    @classmethod
    @abstractmethod
    def open_named(cls, client, model: str, name: str, *, weights_id: str | None, dim: int | None,
                   create: bool, runtime: str | None) -> ProductCollection: ...

    @staticmethod
    @abstractmethod
    def drop_named(client, model: str, name: str) -> None: ...

    @staticmethod
    @abstractmethod
    def promote_named(client, model: str, staged: str, live: str, retired: str) -> None: ...

    # -- the engine's part ----------------------------------------------------------------
    @property
    @abstractmethod
    def notes(self) -> dict:
        """The collection's notes: model, weights, dim, runtime, centre, search breadth."""

    @abstractmethod
    def set_notes(self, notes: dict) -> None: ...

    @abstractmethod
    def revalidate(self, force: bool = False) -> None:
        """Follow a rebuild, a removal or another process's writes (a serving process)."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def metadata_pages(self) -> Iterator[tuple[list[str], list[dict]]]:
        """Every product's (ids, metadata) a page at a time."""

    @abstractmethod
    def vector_pages(self) -> Iterator[np.ndarray]:
        """Every stored vector, a page at a time."""

    @abstractmethod
    def write_prepared(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        """Store vectors already in this collection's space, replacing any stored under the same
        ids whole (a field emptied in the catalog must not survive). Each call commits whole."""

    @abstractmethod
    def delete(self, ids: list[str]) -> None: ...

    def relabel(self, metadatas: Mapping[str, dict]) -> None:
        """Give stored products new metadata, whole (their image moved, the shop edited their
        labels), keeping their vectors: nothing is embedded again. A vector not yet brought to
        the collection's centre is left for the next run, after `ensure_centered`."""
        if not metadatas:
            return
        wanted = list(metadatas)
        for start in range(0, len(wanted), RELABEL_CHUNK):   # a million vectors are 5 GB: a chunk at a time
            ids, vectors, stored = self.records_of(wanted[start:start + RELABEL_CHUNK])
            keep = [i for i, meta in enumerate(stored) if self.center is None or meta.get(CENTERED_KEY)]
            self.write_prepared([ids[i] for i in keep], vectors[keep], [metadatas[ids[i]] for i in keep])
        self.metadata.refresh()

    @abstractmethod
    def records_of(self, product_ids: list[str]) -> tuple[list[str], np.ndarray, list[dict]]:
        """(ids, stored vectors, metadata) of those of `product_ids` that are stored."""

    @abstractmethod
    def search_stored(self, vector: np.ndarray, k: int = 5, filters: Filters | None = None,
                      exclude: tuple[str, ...] = ()) -> list[Hit]:
        """The k nearest products that pass `filters` to a vector already in this collection's
        space (one read back with `vector_of`, for "more like this")."""

    def count_matching(self, filters: Filters | None) -> int:
        """How many products pass `filters`."""
        if filters is None or filters.is_empty():
            return self.count()
        return int(filters.mask(self.metadata.frame()).sum())

    def vocabulary(self) -> dict[str, list]:
        """The values each filterable field takes, sorted (the chat's words, the shop's controls)."""
        return self.metadata.vocabulary()

    def tidy(self) -> None:  # noqa: B027 -- Chroma keeps its HNSW index up to date as it writes
        """After an index run: whatever the engine's index needs to serve what was written."""

    # -- shared -----------------------------------------------------------------------------
    def check_weights(self, weights_id: str) -> None:
        built_with = self.weights_id
        if built_with and built_with != weights_id:
            raise WeightsMismatch(
                f"the {self.model} index was built with weights '{built_with}', not '{weights_id}'; "
                f"search with the same --weights, or re-index (python app.py index --rebuild ...)")

    @property
    def weights_id(self) -> str | None:
        return self.notes.get(WEIGHTS_KEY)

    @property
    def runtime(self) -> str | None:
        """Which runtime(s) computed the stored vectors ("eager", "onnx-int8", or both joined
        with '+'). Informative only: vectors of one runtime are searched with the other."""
        return self.notes.get(RUNTIME_KEY)

    def note_runtime(self, runtime: str) -> None:
        """Record that vectors computed by `runtime` are being added."""
        known = set(filter(None, (self.runtime or "").split("+")))
        if runtime not in known:
            self.set_notes({**self.notes, RUNTIME_KEY: "+".join(sorted(known | {runtime}))})

    @property
    def center(self) -> np.ndarray | None:
        # Every query is prepared with it: decoded once per note, not per search.
        text = self.notes.get(CENTER_KEY)
        cached = getattr(self, "_center_of", None)
        if cached is None or cached[0] != text:
            cached = self._center_of = (text, decode_center(text))
        return cached[1]

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """An embedder's unit vectors as this collection stores and compares them."""
        vectors = np.asarray(vectors, dtype=np.float32)
        center = self.center
        if center is None:
            return vectors
        shifted = vectors - center
        norms = np.linalg.norm(shifted, axis=-1, keepdims=True)
        return (shifted / np.maximum(norms, 1e-12)).astype(np.float32)

    def unprepare(self, stored: np.ndarray) -> np.ndarray:
        """The embedder's unit vector a stored one was `prepare`d from: the point of the unit
        sphere on the ray from the center through `stored` (what a product's classifiers need,
        for "more like this")."""
        stored = np.asarray(stored, dtype=np.float32)
        center = self.center
        if center is None:
            return stored
        c = center.astype(np.float64)
        s = stored.astype(np.float64) / max(float(np.linalg.norm(stored)), 1e-12)
        # |c + a s| = 1 for a >= 0; the mean of unit vectors lies inside the sphere, so one root is.
        sc = float(s @ c)
        a = -sc + np.sqrt(max(sc * sc - float(c @ c) + 1.0, 0.0))
        return (c + a * s).astype(np.float32)

    def write(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        """Store products (an embedder's unit vectors), replacing any stored under the same ids."""
        self.write_prepared(ids, self.prepare(vectors), metadatas)

    def search(self, vector: np.ndarray, k: int = 5, filters: Filters | None = None,
               exclude: tuple[str, ...] = ()) -> list[Hit]:
        """The k nearest products by cosine to an embedder's unit vector that pass `filters`."""
        return self.search_stored(self.prepare(np.asarray(vector, dtype=np.float32).reshape(1, -1)),
                                  k, filters, exclude)

    def vectors_of(self, product_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors (this collection's space) of those of `product_ids` it holds."""
        ids, vectors, _ = self.records_of(list(product_ids))
        return dict(zip(ids, vectors))

    def vector_of(self, product_id: str) -> np.ndarray | None:
        """A product's vector as stored (in this collection's space)."""
        return self.vectors_of([product_id]).get(product_id)

    def stored_records(self) -> dict[str, tuple[str, str]]:
        """id -> (digest, image path) as stored with each vector."""
        return {pid: ((meta or {}).get(DIGEST_KEY, "") or "", (meta or {}).get("image", "") or "")
                for ids, metas in self.metadata_pages() for pid, meta in zip(ids, metas)}

    def stored_digests(self) -> dict[str, str]:
        """id -> the digest each stored record was made from (its image's, and its labels':
        indexing/plan.py's `record_digest`)."""
        return {pid: digest for pid, (digest, _) in self.stored_records().items()}

    def ensure_centered(self) -> int:
        """Give the collection its center (the mean of what it stores) if it has none, and bring
        every vector stored before that to the centered form. Safe to kill and run again: each
        record says whether it is centered. Returns how many records were rewritten."""
        if self.count() == 0:
            return 0
        if self.center is None:
            center = _mean(self.vector_pages())
            self.set_notes({**self.notes, CENTER_KEY: encode_center(center)})
        table = self.metadata.frame(fresh=True)
        flags = table[CENTERED_KEY] if CENTERED_KEY in table.columns else pd.Series(False, index=table.index)
        todo = table.index[flags.isna() | (flags == False)].tolist()  # noqa: E712 (NaN-aware)
        step = 1000
        for start in range(0, len(todo), step):
            ids, vectors, metas = self.records_of(todo[start:start + step])
            self.write_prepared(ids, self.prepare(vectors), metas)
        if todo:
            self.metadata.refresh()
        return len(todo)


def _mean(pages: Iterable[np.ndarray]) -> np.ndarray:
    total, count = None, 0
    for page in pages:
        page = np.asarray(page, dtype=np.float64)
        total = page.sum(axis=0) if total is None else total + page.sum(axis=0)
        count += len(page)
    return (total / max(count, 1)).astype(np.float32)
