"""In front of Gradio: what a client may send the chat's app, whether launched or mounted.

Gradio's own routes take up to 1,000 files of any size per upload, keep them forever and open
routes the chat never uses (`process_recording`, streaming, the dev reloader). `ChatGate` is an
ASGI middleware given to Gradio's app (`app_kwargs={"middleware": ...}`) that:

- closes the routes the product does not use (404);
- takes an upload only with a declared length within the policy's limit, one file at a time,
  and at most `UploadLimits.per_minute` per client (429 with Retry-After past it);
- answers 400 to a NUL byte in the path or query (Gradio's proxy route answered 500);
- keeps the upload folder bounded: files older than `max_age_s` are deleted, and the oldest
  first while the folder is over `max_folder_bytes`.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

# Routes of Gradio's app the chat never uses; matched on the path after the mount point.
CLOSED = ("/gradio_api/process_recording", "/gradio_api/stream/", "/gradio_api/dev/reload",
          "/gradio_api/run-history", "/gradio_api/runs", "/runs", "/gradio_api/mcp", "/gradio_api/component_server")
UPLOAD = "/gradio_api/upload"
# Multipart framing and the file's part headers around one photo.
FORM_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 10 * 1024 * 1024   # the policy's photo limit
    per_minute: int = 30                # uploads per client (IP) per minute, bursts included
    max_age_s: int = 3600               # an uploaded file is kept this long
    max_folder_bytes: int = 512 * 2**20 # the upload folder never holds more than this
    sweep_every_s: float = 30.0
    max_clients: int = 10_000           # clients remembered by the rate limit (the oldest forgotten)


def upload_folder() -> Path:
    """Where Gradio puts uploads (its own rule: GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


class _Buckets:
    """A token bucket per client: `per_minute` tokens, refilled evenly."""

    def __init__(self, per_minute: int, max_clients: int):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.max_clients = max_clients
        self.tokens: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when allowed now, else the seconds until it would be."""
        now = time.monotonic()
        with self.lock:
            tokens, at = self.tokens.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self.tokens[client] = (tokens - 1 if not wait else tokens, now)
            while len(self.tokens) > self.max_clients:
                self.tokens.popitem(last=False)
            return wait


class ChatGate:
    def __init__(self, app, limits: UploadLimits = UploadLimits(), folder: Path | None = None):
        self.app = app
        self.limits = limits
        self.folder = folder or upload_folder()
        self.buckets = _Buckets(limits.per_minute, limits.max_clients)
        self._swept = 0.0
        self._sweep_lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _local_path(scope)
        if "\x00" in path or b"%00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b"") \
                or b"\x00" in scope.get("query_string", b""):
            return await _json(send, 400, "the request holds a NUL byte")
        if any(path == closed.rstrip("/") or path.startswith(closed) for closed in CLOSED):
            return await _json(send, 404, "Not Found")
        if path.rstrip("/") == UPLOAD and scope.get("method") == "POST":
            return await self._upload(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send):
        limits = self.limits
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length", "")
        if not length.isdigit():
            return await _json(send, 411, "an upload must declare its length")
        if int(length) > limits.max_bytes + FORM_OVERHEAD:
            return await _json(send, 413, f"the upload is too large; the limit is {limits.max_bytes // 2**20} MB")
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.buckets.take(client)
        if wait:
            return await _json(send, 429, f"too many uploads; at most {limits.per_minute} a minute",
                               headers=[(b"retry-after", str(int(wait) + 1).encode())])
        body = await _read_body(receive, int(length))
        if body is None:
            return await _json(send, 413, f"the upload is too large; the limit is {limits.max_bytes // 2**20} MB")
        if _file_parts(body, headers.get("content-type", "")) > 1:
            return await _json(send, 400, "one file per upload: send the photo alone")
        self._sweep()
        await self.app(scope, _replay(body), send)

    def _sweep(self) -> None:
        """Delete what is too old, then the oldest while the folder is too big (at most every
        `sweep_every_s`; a sweep is a listing of the folder)."""
        now = time.time()
        if now - self._swept < self.limits.sweep_every_s or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._swept = now
            sweep_folder(self.folder, self.limits.max_age_s, self.limits.max_folder_bytes)
        finally:
            self._sweep_lock.release()


def sweep_folder(folder: Path, max_age_s: float, max_bytes: int) -> int:
    """Files under `folder` older than `max_age_s` deleted, then the oldest until the rest fit in
    `max_bytes`, then the empty folders left behind; returns how many files were deleted."""
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
    files.sort()
    total = sum(size for _, size, _ in files)
    deleted, cutoff = 0, time.time() - max_age_s
    for mtime, size, path in files:
        if mtime >= cutoff and total <= max_bytes:
            break
        try:
            path.unlink()
            deleted += 1
            total -= size
        except OSError:
            pass
    _remove_empty_folders(folder, time.time() - EMPTY_FOLDER_GRACE_S)
    return deleted


# Gradio makes a folder per upload before it writes the file: a folder this young may be about to
# receive one, so only older empty folders go.
EMPTY_FOLDER_GRACE_S = 60.0


def _remove_empty_folders(folder: Path, older_than: float) -> None:
    for root, _, names in os.walk(folder, topdown=False):
        path = Path(root)
        if path == folder or names:
            continue
        try:
            if path.stat().st_mtime < older_than and not any(path.iterdir()):
                path.rmdir()
        except OSError:
            pass


def _local_path(scope) -> str:
    """The path inside the app (Starlette keeps the mount point in root_path)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _read_body(receive, declared: int) -> bytes | None:
    """The whole body, or None when it runs past what was declared."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > declared:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}
    return receive


def _file_parts(body: bytes, content_type: str) -> int:
    """How many parts of a multipart body carry a file."""
    marker = "boundary="
    if marker not in content_type:
        return 0
    boundary = content_type.split(marker, 1)[1].split(";")[0].strip().strip('"').encode("latin-1")
    count = 0
    for part in body.split(b"--" + boundary)[1:]:
        head = part[:part.find(b"\r\n\r\n")] if b"\r\n\r\n" in part else b""
        if b"filename=" in head.lower():
            count += 1
    return count


async def _json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["ChatGate", "UploadLimits", "sweep_folder", "upload_folder"]
