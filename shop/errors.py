"""Every refusal the shop gives is JSON with a `detail` a person can read (and, where it helps,
fields a program can act on: the models offered, the closest filter values)."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from operations import Refused, SearchPolicy
from vectorstore import StoreError, UnknownFilterValue
from vectorstore.errors import NoProduct

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Multipart framing and the small text fields around the photo; a body past the photo limit
# by more than this is refused before it is read.
FORM_OVERHEAD = 64 * 1024
STATUS = {"too_large": 413, "no_product": 404, "nothing_found": 422}  # every other refusal is a 400


class ApiError(Exception):
    """A refused request: `detail` is for a person; `extra` adds fields such as suggestions."""

    def __init__(self, status: int, detail: str, **extra):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def size_text(n: int) -> str:
    return f"{n / MB:.0f} MB" if n >= MB else f"{n / 1024:.0f} KB"


def too_large_text(policy: SearchPolicy) -> str:
    return f"the upload is too large; the limit is {size_text(policy.max_upload_bytes)}"


class UploadSizeLimit:
    """Refuse an upload whose declared length is over the limit before reading any of it,
    with a JSON message. (The route's own `max_body_size` still stops a body sent without a
    length, but when a length is declared it answers in plain text.)"""

    def __init__(self, app, paths: tuple[str, ...], max_bytes: int, message: str):
        self.app = app
        self.paths = paths
        self.max_bytes = max_bytes
        self.message = message

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST" and scope["path"] in self.paths:
            length = Headers(scope=scope).get("content-length", "")
            if length.isdigit() and int(length) > self.max_bytes:
                await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_error_handlers(app: FastAPI, policy: SearchPolicy) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        return JSONResponse({"detail": exc.message, **exc.details}, status_code=STATUS.get(exc.reason, 400))

    @app.exception_handler(UnknownFilterValue)
    async def _unknown_filter(request: Request, exc: UnknownFilterValue):
        return JSONResponse({"detail": str(exc), "field": exc.field, "value": exc.value,
                             "suggestions": exc.suggestions}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = too_large_text(policy) if exc.status_code == 413 else exc.detail
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(NoProduct)
    async def _no_product(request: Request, exc: NoProduct):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        log.warning("store error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)
