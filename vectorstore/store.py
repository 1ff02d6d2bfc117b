"""The Chroma side: one collection per model, holding every product's vector and metadata.

`ProductCollection` is the adapter over one Chroma collection: its lifecycle (open, create,
weights and runtime recorded), writing (batched under the server's limits, centered), and the
two searches (an embedder's vector, or one read back from the collection). The adapter takes
its client as an argument (embedded or HTTP, the caller decides). The in-memory metadata table
lives in vectorstore/metadata.py and the plan of a filtered search in vectorstore/planner.py.
"""
from __future__ import annotations

import base64
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import chromadb
import numpy as np
import pandas as pd
from chromadb.config import Settings

from vectorstore import planner
from vectorstore.errors import NoIndex, StoreError, WeightsMismatch
from vectorstore.filters import Filters
from vectorstore.guard import generation, persist_folder, store_error
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
# A Chroma server answers 413 to a request body over 32 MiB, and vectors travel base64-encoded
# (4/3 of their bytes): 4,000 x 2048-d is refused though it is within get_max_batch_size().
# Writes are cut to stay well under that, whatever the dimension.
MAX_WRITE_BYTES = 24 * 2**20
# How often a handle checks that its collection is still the one of that name (a rebuild, a
# removal, a restarted server) and whether another process wrote to the folder.
HANDLE_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class StoreSettings:
    path: Path = Path("data/chroma")
    host: str | None = None
    port: int | None = None

    @property
    def where(self) -> str:
        return f"Chroma server {self.host}:{self.port}" if self.host else f"{self.path}"


def make_client(settings: StoreSettings) -> chromadb.api.ClientAPI:
    chroma_settings = Settings(anonymized_telemetry=False)
    if settings.host:
        try:
            return chromadb.HttpClient(host=settings.host, port=settings.port or 8000, settings=chroma_settings)
        except Exception as exc:
            raise StoreError(f"cannot reach the Chroma server at {settings.host}:{settings.port}: {exc}") from exc
    try:
        Path(settings.path).mkdir(parents=True, exist_ok=True)
        client = chromadb.PersistentClient(path=str(settings.path), settings=chroma_settings)
    except Exception as exc:
        raise store_error(exc, str(settings.path)) from exc
    _register(client)
    return client


# The newest embedded client of each folder. A handle that learns that another process wrote to
# its folder reopens the folder with a fresh client (embedded Chroma reads each HNSW index once
# and keeps it); every later open goes through the fresh one, and the stale one is stopped so
# that its copies of the indexes are freed.
_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()


def _client_key(client) -> str | None:
    folder = persist_folder(client)
    return str(folder.resolve()) if folder is not None else None


def _register(client) -> None:
    key = _client_key(client)
    if key is not None:
        with _CLIENTS_LOCK:
            _CLIENTS[key] = client


def current_client(client):
    """The newest client of `client`'s embedded folder (`client` itself for a server)."""
    key = _client_key(client)
    if key is None:
        return client
    with _CLIENTS_LOCK:
        return _CLIENTS.setdefault(key, client)


def reopen_client(stale):
    """A fresh embedded client for `stale`'s folder, which reads the indexes as they are on disk
    now; `stale` is stopped. Several handles noticing at once share one fresh client."""
    from chromadb.api.shared_system_client import SharedSystemClient
    key = _client_key(stale)
    if key is None:
        return stale
    with _CLIENTS_LOCK:
        current = _CLIENTS.get(key)
        if current is not None and current is not stale:
            return current
        identifier = getattr(stale, "_identifier", key)
        old_system = SharedSystemClient._identifier_to_system.pop(identifier, None)
        SharedSystemClient._identifier_to_refcount.pop(identifier, None)
        fresh = chromadb.PersistentClient(path=key, settings=Settings(anonymized_telemetry=False))
        _CLIENTS[key] = fresh
    if old_system is not None:
        try:
            old_system.stop()
        except Exception:  # already stopped: nothing to free
            pass
    return fresh


def _stale_handle(exc: BaseException) -> bool:
    """The handle outlived its collection (dropped, recreated) or its client (reopened)."""
    text = f"{type(exc).__name__}: {exc}"
    return "NotFoundError" in text or "does not exist" in text or "bindings" in text


def collection_name(model: str, slot: str | None = None) -> str:
    """The live collection of `model`, or (with `slot`) one built beside it: a tuned model's
    index is built in slot "tuned" while the live one keeps answering, then promoted."""
    return f"{COLLECTION_PREFIX}{model}" + (f".{slot}" if slot else "")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict = field(default_factory=dict)


def _plain(value):
    # Chroma rejects numpy scalars and None; the caller's metadata may hold either.
    if isinstance(value, np.generic):
        return value.item()
    return value


class ProductCollection:
    """One model's collection. Create with `ProductCollection.open(client, model, ...)`."""

    def __init__(self, client, collection, model: str, name: str | None = None):
        self.client = client
        self._collection = collection
        self.model = model
        # Found again by this name (a handle follows a rebuild); a handle opened on a slot
        # keeps following that slot.
        self.name = name or collection.name
        self._folder = persist_folder(client)
        self.where = str(self._folder) if self._folder is not None else "the Chroma server"
        self._generation = generation(self._folder)
        self._checked = time.monotonic()
        self._handle_lock = threading.Lock()
        # Every product's metadata in memory, owned here once (vectorstore/metadata.py).
        self.metadata = MetadataTable(self._metadata_pages, self.count)
        self._center = _decode_center((collection.metadata or {}).get(CENTER_KEY))

    # -- the live handle -------------------------------------------------------------------
    @property
    def collection(self):
        """Chroma's handle of this model's collection, as it is now: checked at most every
        HANDLE_TTL_SECONDS, so a serving process follows a rebuild, a removal or another
        process's writes without a restart (and says NoIndex while there is none)."""
        if time.monotonic() - self._checked >= HANDLE_TTL_SECONDS:
            self.revalidate()
        return self._collection

    def revalidate(self, force: bool = False) -> None:
        """Find the collection again by name; reopen the folder if another process wrote to it."""
        with self._handle_lock:
            if not force and time.monotonic() - self._checked < HANDLE_TTL_SECONDS:
                return
            self._checked = time.monotonic()
            client = current_client(self.client)
            written = generation(self._folder)
            if written is not None and written != self._generation and written[1] != os.getpid():
                client = reopen_client(client)
            self._generation = written
            try:
                found = client.get_collection(self.name, embedding_function=None)
            except Exception as exc:
                raise store_error(exc, self.where, self.model) from exc
            changed = client is not self.client or found.id != self._collection.id
            self.client, self._collection = client, found
            self._center = _decode_center((found.metadata or {}).get(CENTER_KEY))
        if changed:
            self.metadata.refresh()

    def _do(self, action):
        """`action(handle)`, its failure said as a StoreError; a handle gone stale (the
        collection rebuilt, the folder reopened) is found again and the action tried once more."""
        try:
            return action(self.collection)
        except StoreError:
            raise
        except Exception as exc:
            if not _stale_handle(exc):
                raise store_error(exc, self.where, self.model) from exc
        self.revalidate(force=True)
        try:
            return action(self._collection)
        except StoreError:
            raise
        except Exception as exc:
            raise store_error(exc, self.where, self.model) from exc

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, client, model: str, *, weights_id: str | None = None, dim: int | None = None,
             create: bool = False, runtime: str | None = None, slot: str | None = None) -> ProductCollection:
        """Open the collection of `model` (the live one, or the one in `slot`); with `create`,
        make it when missing.

        `weights_id` is checked against what the collection was built with: vectors of one
        network searched with another would give confident nonsense.
        """
        name = collection_name(model, slot)
        client = current_client(client)
        with _translated(str(persist_folder(client) or "the Chroma server"), model):
            existing = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
            if name not in existing:
                if not create:
                    raise NoIndex(model)
                metadata = {"model": model}
                if weights_id:
                    metadata["weights"] = weights_id
                if dim:
                    metadata["dim"] = dim
                if runtime:
                    metadata[RUNTIME_KEY] = runtime
                collection = client.get_or_create_collection(
                    name, embedding_function=None, metadata=metadata,
                    configuration={"hnsw": {"space": "cosine", "ef_search": 128, "ef_construction": 128}})
            else:
                collection = client.get_collection(name, embedding_function=None)
        opened = cls(client, collection, model, name)
        if weights_id:
            opened.check_weights(weights_id)
        return opened

    def check_weights(self, weights_id: str) -> None:
        built_with = self.weights_id
        if built_with and built_with != weights_id:
            raise WeightsMismatch(
                f"the {self.model} index was built with weights '{built_with}', not '{weights_id}'; "
                f"search with the same --weights, or re-index (python app.py index --rebuild ...)")

    @staticmethod
    def drop(client, model: str, slot: str | None = None) -> None:
        client = current_client(client)
        try:
            client.delete_collection(collection_name(model, slot))
        except Exception as exc:
            if not _stale_handle(exc):  # not there: nothing to drop; anything else is said
                raise store_error(exc, str(persist_folder(client) or "the Chroma server"), model) from exc

    @staticmethod
    def promote(client, model: str, slot: str) -> None:
        """Make the collection in `slot` the model's live one, by renaming (no vector moves):
        the live one becomes RETIRED_SLOT, then the slot takes the live name. A handle opened
        before keeps its collection (Chroma addresses it by id) until `drop(..., RETIRED_SLOT)`."""
        client = current_client(client)
        where = str(persist_folder(client) or "the Chroma server")
        with _translated(where, model):
            ProductCollection.drop(client, model, RETIRED_SLOT)
            staged = client.get_collection(collection_name(model, slot), embedding_function=None)
            existing = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
            if collection_name(model) in existing:
                client.get_collection(collection_name(model), embedding_function=None).modify(
                    name=collection_name(model, RETIRED_SLOT))
            staged.modify(name=collection_name(model))

    @property
    def weights_id(self) -> str | None:
        return (self.collection.metadata or {}).get("weights")

    @property
    def runtime(self) -> str | None:
        """Which runtime(s) computed the stored vectors ("eager", "onnx-int8", or both joined
        with '+'). Informative only: vectors of one runtime are searched with the other."""
        return (self.collection.metadata or {}).get(RUNTIME_KEY)

    def note_runtime(self, runtime: str) -> None:
        """Record that vectors computed by `runtime` are being added."""
        known = set(filter(None, (self.runtime or "").split("+")))
        if runtime in known:
            return
        metadata = dict(self.collection.metadata or {})
        metadata[RUNTIME_KEY] = "+".join(sorted(known | {runtime}))
        self._do(lambda handle: handle.modify(metadata=metadata))

    def count(self) -> int:
        return self._do(lambda handle: handle.count())

    # -- writing -------------------------------------------------------------------------
    def _batch_size(self) -> int:
        try:
            return max(1, int(self.client.get_max_batch_size()))
        except Exception:
            return 1000

    def _pages(self, include: list[str]):
        """The whole collection, one `get` page (within Chroma's batch limit) at a time."""
        step = self._batch_size()
        offset = 0
        while True:
            page = self._do(lambda handle: handle.get(include=include, limit=step, offset=offset))
            if len(page["ids"]):
                yield page
            if len(page["ids"]) < step:
                return
            offset += step

    def _metadata_pages(self):
        for page in self._pages(["metadatas"]):
            yield page["ids"], page["metadatas"]

    def stored_digests(self) -> dict[str, str]:
        """id -> digest of the image each stored vector was made from."""
        return {pid: (meta or {}).get(DIGEST_KEY, "")
                for page in self._pages(["metadatas"]) for pid, meta in zip(page["ids"], page["metadatas"])}

    def stored_records(self) -> dict[str, tuple[str, str]]:
        """id -> (digest, image path) as stored with each vector."""
        return {pid: ((meta or {}).get(DIGEST_KEY, ""), (meta or {}).get("image", ""))
                for page in self._pages(["metadatas"]) for pid, meta in zip(page["ids"], page["metadatas"])}

    def set_images(self, images: dict[str, str]) -> None:
        """Point stored products at their image files' new paths (the catalog folder moved): the
        vectors and the other fields stay, so nothing is embedded again."""
        ids = list(images)
        step = self._batch_size()
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            self._do(lambda handle: handle.update(ids=chunk, metadatas=[{"image": images[pid]} for pid in chunk]))
        if ids:
            self.metadata.refresh()

    @property
    def center(self) -> np.ndarray | None:
        return self._center

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """An embedder's unit vectors as this collection stores and compares them."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._center is None:
            return vectors
        shifted = vectors - self._center
        norms = np.linalg.norm(shifted, axis=-1, keepdims=True)
        return (shifted / np.maximum(norms, 1e-12)).astype(np.float32)

    def unprepare(self, stored: np.ndarray) -> np.ndarray:
        """The embedder's unit vector a stored one was `prepare`d from: the point of the unit
        sphere on the ray from the center through `stored` (what a product's classifiers need,
        for "more like this")."""
        stored = np.asarray(stored, dtype=np.float32)
        if self._center is None:
            return stored
        c = self._center.astype(np.float64)
        s = stored.astype(np.float64) / max(float(np.linalg.norm(stored)), 1e-12)
        # |c + a s| = 1 for a >= 0; the mean of unit vectors lies inside the sphere, so one root is.
        sc = float(s @ c)
        a = -sc + np.sqrt(max(sc * sc - float(c @ c) + 1.0, 0.0))
        return (c + a * s).astype(np.float32)

    def write(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        """Store products (an embedder's unit vectors), replacing any stored under the same ids."""
        self.write_prepared(ids, self.prepare(vectors), metadatas)

    def write_prepared(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        """Store vectors already in this collection's space (`prepare`d, or read back from it).

        Delete-then-add rather than upsert: upsert merges metadata, so a field emptied in the
        catalog would survive. Each call commits whole; a crash between the two leaves a gap
        that the next incremental run fills, never a duplicate.
        """
        dim = int(np.shape(vectors)[-1]) if len(ids) else 1
        step = min(self._batch_size(), max(1, MAX_WRITE_BYTES // (dim * 16 // 3 + 1024)))
        clean = [{k: _plain(v) for k, v in m.items() if v is not None} for m in metadatas]
        if self._center is not None:
            for meta in clean:
                meta[CENTERED_KEY] = True
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            embeddings = np.asarray(vectors[start:start + step], dtype=np.float32)
            self._do(lambda handle: _replace(handle, chunk, embeddings, clean[start:start + step]))

    def ensure_centered(self) -> int:
        """Give the collection its center (the mean of what it stores) if it has none, and bring
        every vector stored before that to the centered form. Safe to kill and run again: each
        record says whether it is centered. Returns how many records were rewritten."""
        if self.count() == 0:
            return 0
        if self._center is None:
            vectors = self._all_vectors()
            center = vectors.mean(axis=0).astype(np.float32)
            metadata = dict(self.collection.metadata or {})
            metadata[CENTER_KEY] = base64.b64encode(center.tobytes()).decode("ascii")
            self._do(lambda handle: handle.modify(metadata=metadata))
            self._center = center
        table = self.metadata.frame(fresh=True)
        flags = table[CENTERED_KEY] if CENTERED_KEY in table.columns else pd.Series(False, index=table.index)
        todo = table.index[flags.isna() | (flags == False)].tolist()  # noqa: E712 (NaN-aware)
        step = self._batch_size()
        for start in range(0, len(todo), step):
            got = self._do(lambda handle: handle.get(ids=todo[start:start + step], include=["embeddings", "metadatas"]))
            self.write_prepared(got["ids"], self.prepare(np.asarray(got["embeddings"], dtype=np.float32)),
                                [m or {} for m in got["metadatas"]])
        if todo:
            self.metadata.refresh()
        return len(todo)

    def _all_vectors(self) -> np.ndarray:
        parts = [np.asarray(page["embeddings"], dtype=np.float32) for page in self._pages(["embeddings"])]
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)

    def delete(self, ids: list[str]) -> None:
        step = self._batch_size()
        for start in range(0, len(ids), step):
            self._do(lambda handle: handle.delete(ids=ids[start:start + step]))

    # -- reading -------------------------------------------------------------------------
    def vector_of(self, product_id: str) -> np.ndarray | None:
        """A product's vector as stored (in this collection's space)."""
        got = self._do(lambda handle: handle.get(ids=[product_id], include=["embeddings"]))
        if not got["ids"]:
            return None
        return np.asarray(got["embeddings"][0], dtype=np.float32)

    def vectors_of(self, product_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors (this collection's space) of those of `product_ids` it holds."""
        out: dict[str, np.ndarray] = {}
        step = self._batch_size()
        for start in range(0, len(product_ids), step):
            part = product_ids[start:start + step]
            got = self._do(lambda handle, part=part: handle.get(ids=part, include=["embeddings"]))
            out.update(zip(got["ids"], np.asarray(got["embeddings"], dtype=np.float32)))
        return out

    def search(self, vector: np.ndarray, k: int = 5, filters: Filters | None = None,
               exclude: tuple[str, ...] = ()) -> list[Hit]:
        """The k nearest products by cosine to an embedder's unit vector that pass `filters`."""
        return self.search_stored(self.prepare(np.asarray(vector, dtype=np.float32).reshape(1, -1)),
                                  k, filters, exclude)

    def search_stored(self, vector: np.ndarray, k: int = 5, filters: Filters | None = None,
                      exclude: tuple[str, ...] = ()) -> list[Hit]:
        """The same, for a vector already in this collection's space (one read back with
        `vector_of`, for "more like this")."""
        frame = self.metadata.frame()
        if len(frame) == 0 or k <= 0:
            return []
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        ids, distances = self._do(lambda handle: planner.nearest(handle, vector, k + len(exclude), filters, frame))
        kept = [(pid, distance) for pid, distance in zip(ids, distances) if pid not in exclude][:k]
        records = self.metadata.records([pid for pid, _ in kept])
        return [Hit(pid, float(1.0 - distance), records.get(pid, {})) for pid, distance in kept]


def _replace(handle, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None:
    present = handle.get(ids=ids, include=[])["ids"]
    if present:
        handle.delete(ids=present)
    handle.add(ids=ids, embeddings=embeddings, metadatas=metadatas)


@contextmanager
def _translated(where: str, model: str | None = None):
    """Chroma's and the OS's failures inside as a StoreError that says what to do."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        raise store_error(exc, where, model) from exc


def _decode_center(text: str | None) -> np.ndarray | None:
    if not text:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()
