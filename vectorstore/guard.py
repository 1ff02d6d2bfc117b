"""What keeps a store usable while others work on it: one writer at a time, news of what the
writer changed, and every store failure said as one sentence.

- `IndexLock`: one indexer per embedded folder. The lock is an advisory `flock` on
  `<db>/index.lock`, released by the kernel when its holder dies, so a killed run never leaves
  a stale lock; the file names the holder (pid, command, since when) for the refusal.
- The generation file `<db>/index-generation.json`: a writer bumps it as it commits. A serving
  process of another pid that sees it change reopens its store: embedded Chroma keeps each
  collection's HNSW index in memory as it first read it, so without this it would answer from
  the vectors of before another process's writes (a rebuild's, say).
- `store_error(exc, where, model)`: Chroma's and the OS's failures as a `StoreError` whose
  message says what happened and what to do (disk full, read-only, damaged, gone, unreachable).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vectorstore.errors import DamagedIndex, DiskFull, IndexLocked, NoIndex, ReadOnlyStore, StoreError, StoreUnreachable

LOCK_NAME = "index.lock"
GENERATION_NAME = "index-generation.json"
# An index run stops cleanly, before Chroma's compaction can run out of room half-way through
# writing the HNSW files (which left them 0 bytes long and the collection unreadable for good),
# when less than this is free on the store's disk.
MIN_FREE_BYTES = 16 * 2**20


def persist_folder(client) -> Path | None:
    """The local folder of `client`'s store (embedded Chroma, a LanceDB folder); None for a
    Chroma server or an object store."""
    if hasattr(client, "local_folder"):
        return client.local_folder
    try:
        settings = client.get_settings()
    except Exception:
        return None
    if not getattr(settings, "is_persistent", False) or not settings.persist_directory:
        return None
    return Path(settings.persist_directory)


# -- errors ------------------------------------------------------------------------------------
def _text(exc: BaseException) -> str:
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " | ".join(parts)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def store_error(exc: BaseException, where: str, model: str | None = None, rebuild_hint: str = ""):
    """`exc` (from Chroma, the OS or the network) as the StoreError a person can act on."""
    if isinstance(exc, StoreError):
        return exc
    text = _text(exc)
    low = text.lower()
    what = f"the {model} index" if model else "the index"
    if getattr(exc, "errno", None) == errno.ENOSPC or "no space left" in low or "disk is full" in low \
            or "database or disk is full" in low:
        return DiskFull(f"the disk holding {where} is full, so {what} could not be written. Nothing "
                        "committed was lost: free some space, then run the same command again to resume.")
    if "readonly" in low or "read-only" in low or getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES) \
            or "permission denied" in low:
        return ReadOnlyStore(f"{where} is read-only (or not ours to write), and Chroma writes to its folder even "
                             f"to search it (its SQLite journal). Use a writable copy (cp -r {where} COPY, then "
                             "--db COPY) or fix the folder's permissions.")
    if "does not exist" in low and "collection" in low:
        return NoIndex(model or "?", rebuild_hint)
    if any(mark in low for mark in ("deserializ", "error loading hnsw", "compaction", "hnsw segment",
                                    "pickle", "corrupt", "malformed")):
        return DamagedIndex(f"{what} in {where} is damaged (its vector files were cut short, by a full disk "
                            "or a kill during a write); it cannot be read. Rebuild it: "
                            f"{rebuild_hint or 'python app.py index --catalog DIR --rebuild'}")
    if any(mark in low for mark in ("connect", "connection", "timed out", "timeout", "unreachable")):
        return StoreUnreachable(f"cannot reach the store at {where}: {_short(str(exc))}")
    return StoreError(f"the store at {where} failed: {_short(text)}")


# -- one indexer at a time -----------------------------------------------------------------------
@dataclass
class IndexLock:
    """An exclusive hold on one embedded folder's index; a no-op for a Chroma server (whose
    writers are told apart by the server, not by a file here)."""
    folder: Path | None
    _fd: int | None = None

    @classmethod
    def of(cls, client) -> IndexLock:
        return cls(persist_folder(client))

    def acquire(self) -> IndexLock:
        """Take the lock now or raise `IndexLocked` naming the holder."""
        if self.folder is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_json(path)
            os.close(fd)
            raise IndexLocked(self.folder, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join(sys.argv)[:500],
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> IndexLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8") or "{}")
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


# -- what a writer changed -------------------------------------------------------------------------
def bump_generation(client) -> None:
    """Say that this process changed the folder's index (serving processes reload it)."""
    folder = persist_folder(client)
    if folder is None:
        return
    path = folder / GENERATION_NAME
    state = _read_json(path)
    state = {"pid": os.getpid(), "counter": int(state.get("counter", 0) or 0) + 1, "at": time.time()}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:  # a full or read-only disk: the write itself says so; this is news only
        temporary.unlink(missing_ok=True)


def generation(folder: Path | None) -> tuple[int, int] | None:
    """(counter, writer pid) of the folder's last write, None when unknown."""
    if folder is None:
        return None
    state = _read_json(folder / GENERATION_NAME)
    if not state:
        return None
    return int(state.get("counter", 0) or 0), int(state.get("pid", 0) or 0)


def _largest_segment(folder: Path) -> int:
    """Bytes of the biggest HNSW segment folder: Chroma rewrites a segment's files whole when it
    persists them, so that much must be free for a write to complete."""
    sizes = [sum(f.stat().st_size for f in d.iterdir() if f.is_file())
             for d in folder.iterdir() if d.is_dir()]
    return max(sizes, default=0)


def check_free_space(folder: Path | None, needed: int = 0) -> None:
    """Raise DiskFull before a write when the store's disk has less than MIN_FREE_BYTES, the
    largest segment and `needed` free: stopping between batches keeps every file whole and the
    run resumable."""
    if folder is None:
        return
    try:
        free = shutil.disk_usage(folder).free
        needed += _largest_segment(folder)
    except OSError:
        return
    if free < MIN_FREE_BYTES + needed:
        raise DiskFull(f"the disk holding {folder} has {free / 2**20:.0f} MB free; indexing needs at least "
                       f"{(MIN_FREE_BYTES + needed) / 2**20:.0f} MB to write safely and stopped before running "
                       "out. Everything committed so far is kept: free some space, then run the same command "
                       "again to resume.")
