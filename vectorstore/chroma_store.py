"""The Chroma adapter: one Chroma collection per model, embedded (`--db`) or on a server.

`ChromaCollection` implements vectorstore/collection.py's interface over one Chroma collection:
its lifecycle (open, create, notes in the collection's metadata), writing (batched under the
server's limits), and the filtered search. Chroma's `where` over SQLite is slower than planning on
the in-memory metadata table (vectorstore/metadata.py) on one node, so the plan is made there
(vectorstore/planner.py); every serving process holds that table.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import chromadb
import numpy as np
from chromadb.config import Settings

from vectorstore import planner
from vectorstore.collection import CENTERED_KEY, EF_SEARCH, RUNTIME_KEY, WEIGHTS_KEY, Hit, ProductCollection, plain
from vectorstore.errors import NoIndex, StoreError
from vectorstore.filters import Filters
from vectorstore.guard import generation, persist_folder, store_error
from vectorstore.metadata import MetadataTable

# A Chroma server answers 413 to a request body over 32 MiB, and vectors travel base64-encoded
# (4/3 of their bytes): 4,000 x 2048-d is refused though it is within get_max_batch_size().
# Writes are cut to stay well under that, whatever the dimension.
MAX_WRITE_BYTES = 24 * 2**20
# How often a handle checks that its collection is still the one of that name (a rebuild, a
# removal, a restarted server) and whether another process wrote to the folder.
HANDLE_TTL_SECONDS = 2.0


def make_chroma_client(settings) -> chromadb.api.ClientAPI:
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


class ChromaCollection(ProductCollection):
    """One model's Chroma collection."""

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
        self.metadata = MetadataTable(self.metadata_pages, self.count)

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
    def open_named(cls, client, model: str, name: str, *, weights_id: str | None = None, dim: int | None = None,
                   create: bool = False, runtime: str | None = None) -> ChromaCollection:
        client = current_client(client)
        with _translated(str(persist_folder(client) or "the Chroma server"), model):
            existing = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
            if name not in existing:
                if not create:
                    raise NoIndex(model)
                metadata = {"model": model}
                if weights_id:
                    metadata[WEIGHTS_KEY] = weights_id
                if dim:
                    metadata["dim"] = dim
                if runtime:
                    metadata[RUNTIME_KEY] = runtime
                collection = client.get_or_create_collection(
                    name, embedding_function=None, metadata=metadata,
                    configuration={"hnsw": {"space": "cosine", "ef_search": EF_SEARCH, "ef_construction": 128}})
            else:
                collection = client.get_collection(name, embedding_function=None)
                if create:
                    _keep_ef_search(collection)
        return cls(client, collection, model, name)

    @staticmethod
    def drop_named(client, model: str, name: str) -> None:
        client = current_client(client)
        try:
            client.delete_collection(name)
        except Exception as exc:
            if not _stale_handle(exc):  # not there: nothing to drop; anything else is said
                raise store_error(exc, str(persist_folder(client) or "the Chroma server"), model) from exc

    @staticmethod
    def promote_named(client, model: str, staged: str, live: str, retired: str) -> None:
        # Chroma addresses a collection by id, so a handle opened before keeps its collection.
        client = current_client(client)
        with _translated(str(persist_folder(client) or "the Chroma server"), model):
            ChromaCollection.drop_named(client, model, retired)
            staged_handle = client.get_collection(staged, embedding_function=None)
            existing = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
            if live in existing:
                client.get_collection(live, embedding_function=None).modify(name=retired)
            staged_handle.modify(name=live)

    # -- notes -----------------------------------------------------------------------------
    @property
    def notes(self) -> dict:
        return dict(self.collection.metadata or {})

    def set_notes(self, notes: dict) -> None:
        self._do(lambda handle: handle.modify(metadata=notes))

    @property
    def ef_search(self) -> int | None:
        return _ef_search_of(self.collection)

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

    def metadata_pages(self):
        for page in self._pages(["metadatas"]):
            yield page["ids"], page["metadatas"]

    def vector_pages(self):
        for page in self._pages(["embeddings"]):
            yield np.asarray(page["embeddings"], dtype=np.float32)

    def write_prepared(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        """Delete-then-add rather than upsert: upsert merges metadata, so a field emptied in the
        catalog would survive. A crash between the two leaves a gap that the next incremental run
        fills, never a duplicate."""
        dim = int(np.shape(vectors)[-1]) if len(ids) else 1
        step = min(self._batch_size(), max(1, MAX_WRITE_BYTES // (dim * 16 // 3 + 1024)))
        clean = [{k: plain(v) for k, v in m.items() if v is not None} for m in metadatas]
        if self.center is not None:
            for meta in clean:
                meta[CENTERED_KEY] = True
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            embeddings = np.asarray(vectors[start:start + step], dtype=np.float32)
            self._do(lambda handle: _replace(handle, chunk, embeddings, clean[start:start + step]))

    def delete(self, ids: list[str]) -> None:
        step = self._batch_size()
        for start in range(0, len(ids), step):
            self._do(lambda handle: handle.delete(ids=ids[start:start + step]))

    # -- reading -------------------------------------------------------------------------
    def records_of(self, product_ids: list[str]) -> tuple[list[str], np.ndarray, list[dict]]:
        ids, vectors, metas = [], [], []
        step = self._batch_size()
        for start in range(0, len(product_ids), step):
            part = product_ids[start:start + step]
            got = self._do(lambda handle, part=part: handle.get(ids=part, include=["embeddings", "metadatas"]))
            ids += got["ids"]
            vectors += list(np.asarray(got["embeddings"], dtype=np.float32))
            metas += [m or {} for m in got["metadatas"]]
        return ids, (np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)), metas

    def search_stored(self, vector: np.ndarray, k: int = 5, filters: Filters | None = None,
                      exclude: tuple[str, ...] = ()) -> list[Hit]:
        frame = self.metadata.frame()
        if len(frame) == 0:  # read while another process rebuilt the collection: look again now
            frame = self.metadata.frame(fresh=True)
        if len(frame) == 0 or k <= 0:
            return []
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        ids, distances = self._do(lambda handle: planner.nearest(handle, vector, k + len(exclude), filters, frame))
        kept = [(pid, distance) for pid, distance in zip(ids, distances) if pid not in exclude][:k]
        records = self.metadata.records([pid for pid, _ in kept])
        return [Hit(pid, float(1.0 - distance), records.get(pid, {})) for pid, distance in kept]


def _ef_search_of(handle) -> int | None:
    configuration = getattr(handle, "configuration", None) or {}
    hnsw = configuration.get("hnsw") if isinstance(configuration, dict) else None
    return (hnsw or {}).get("ef_search")


def _keep_ef_search(handle) -> None:
    """An indexer reopening a collection made with another search breadth brings it to EF_SEARCH
    (Chroma keeps it in the collection's configuration; every serving process then uses it)."""
    if _ef_search_of(handle) not in (None, EF_SEARCH):
        handle.modify(configuration={"hnsw": {"ef_search": EF_SEARCH}})


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
