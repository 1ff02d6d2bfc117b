"""Every refusal the shop gives is JSON with a `detail` a person can read (and, where it helps,
fields a program can act on: the models offered, the closest filter values), except on the
HTML pages: a browser gets a page with the same words, never raw JSON."""
from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from catalog.text import clipped
from operations import Refused, SearchPolicy
from vectorstore import StoreError, UnknownFilterValue
from vectorstore.errors import NoProduct

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Multipart framing and the small text fields around the photo; a body past the photo limit
# by more than this is refused before it is read.
FORM_OVERHEAD = 64 * 1024
STATUS = {"too_large": 413, "no_product": 404, "nothing_found": 422}  # every other refusal is a 400
# The HTML pages' routes carry this tag: their refusals are pages too.
PAGE_TAG = "pages"
# (request, status, heading, message) -> the shop's message page; pages.py renders it.
ErrorPage = Callable[[Request, int, str, str], Response]
# What a query value that did not parse should have been, by pydantic's error type.
WANTED = {"int_parsing": "a whole number", "int_from_float": "a whole number", "float_parsing": "a number",
          "bool_parsing": "true or false"}


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


def wants_page(request: Request) -> bool:
    """Whether a refusal should be an HTML page: on the shop's pages, and, where no route
    matched (a mistyped address), for a browser outside /api/."""
    route = request.scope.get("route")
    if route is not None:
        return PAGE_TAG in (getattr(route, "tags", None) or ())
    path = request.url.path
    return not (path == "/api" or path.startswith("/api/")) and "text/html" in request.headers.get("accept", "")


def invalid_text(errors: list[dict]) -> str:
    """What was wrong with the address's values, for a person ("page" must be a whole number)."""
    said = []
    for error in errors:
        name = str(error["loc"][-1]) if error.get("loc") else "a value"
        wanted = WANTED.get(error.get("type", ""))
        if wanted and "input" in error:
            said.append(f'"{clipped(name)}" must be {wanted}, not {clipped(str(error["input"]))!r}.')
        else:
            said.append(f'"{clipped(name)}": {error.get("msg", "not accepted")}.')
    return " ".join(dict.fromkeys(said)) or "The address holds a value the shop does not accept."


def install_error_handlers(app: FastAPI, policy: SearchPolicy, page: ErrorPage | None = None) -> None:
    """`page` renders a refusal on an HTML page; without it every refusal is JSON."""
    def as_page(request: Request) -> bool:
        return page is not None and wants_page(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        if as_page(request):
            return page(request, 400, "This address cannot be shown", invalid_text(exc.errors()))
        return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

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
        if exc.status_code == 404 and as_page(request):
            return page(request, 404, "Page not found", f"There is no page at {clipped(request.url.path)}.")
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(NoProduct)
    async def _no_product(request: Request, exc: NoProduct):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        log.warning("store error on %s: %s", request.url.path, exc)
        if as_page(request):
            return page(request, 503, "The shop cannot show this right now", str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=503)
