"""The shop process: a FastAPI app serving the shop prototype, the JSON API, the catalog's
images and the Gradio assistant, all on one index (one `Searcher`).

Everything a shopper or a shop's code sends is checked here and refused with a 4xx whose
`detail` a person can read; product text reaches HTML only through autoescaped templates.
"""
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi_offline import FastAPIOffline
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, create_model
from starlette.datastructures import Headers, UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from catalog import ImageError, ImageLimits, open_image
from vectorstore import Searcher, StoreError, UnknownFilterValue
from vectorstore.embedders import MODEL_NAMES
from vectorstore.search import RESULT_FIELDS, Result

from assistant.shop.browse import CatalogBrowser

log = logging.getLogger(__name__)

SHOP_DIR = Path(__file__).resolve().parent / "shop"
MB = 1024 * 1024
# Multipart framing and the small text fields around the photo; a body past the photo limit
# by more than this is refused before it is read.
FORM_OVERHEAD = 64 * 1024
# Shop pages load scripts and styles from this app only: catalog text that slipped past
# escaping still could not run. The assistant (Gradio) is framed from the same origin.
SHOP_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")


@dataclass(frozen=True)
class ShopSettings:
    """What the shop process serves. `assistant` is the settings object handed to
    `assistant.ui.build_demo`; None serves the shop and API without the chat."""
    models: tuple[str, ...] = MODEL_NAMES
    model: str = "resnet50"
    k: int = 5
    max_k: int = 50
    page_size: int = 24
    # The catalog's images folder: the only folder images are served from. None: the folder
    # most of the index's stored image paths are in.
    images_dir: Path | None = None
    max_upload_bytes: int = 5 * MB
    assistant: Any = None
    assistant_path: str = "/assistant"
    title: str = "Demo shop"

    def __post_init__(self):
        if self.model not in self.models:
            raise ValueError(f"the default model {self.model!r} is not among the served models "
                             f"({', '.join(self.models)})")
        if not 1 <= self.k <= self.max_k:
            raise ValueError(f"k must be between 1 and {self.max_k}, not {self.k}")


# One product's fields as `search --json` writes them; `image` is the URL of its picture here.
_PRODUCT_FIELDS = {name: ((int if name == "year" else str) | None, None) for name in RESULT_FIELDS}
ProductOut = create_model("ProductOut", id=(str, ...), **_PRODUCT_FIELDS)
Recommendation = create_model("Recommendation", id=(str, ...), score=(float, ...), **_PRODUCT_FIELDS)


class Recommendations(BaseModel):
    model: str
    results: list[Recommendation]


class ProductPage(BaseModel):
    page: int
    pages: int
    total: int
    products: list[ProductOut]


class Health(BaseModel):
    status: str
    default_model: str
    models: dict[str, int]
    assistant: bool


class ApiError(Exception):
    """A refused request: `detail` is for a person; `extra` adds fields such as suggestions."""

    def __init__(self, status: int, detail: str, **extra):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


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


def size_text(n: int) -> str:
    return f"{n / MB:.0f} MB" if n >= MB else f"{n / 1024:.0f} KB"


def _filter_error(exc: UnknownFilterValue) -> ApiError:
    return ApiError(400, str(exc), field=exc.field, value=exc.value, suggestions=exc.suggestions)


def _images_root(settings: ShopSettings, browser: CatalogBrowser) -> Path | None:
    if settings.images_dir is not None:
        return Path(settings.images_dir).resolve()
    paths = browser.table().get("image")
    if paths is None or paths.dropna().empty:
        return None
    folder, _ = Counter(str(Path(p).parent) for p in paths.dropna()).most_common(1)[0]
    return Path(folder).resolve()


def id_url(request: Request, route: str, product_id: str) -> str:
    """The URL of a product's route. Starlette puts path parameters in as they are, so an id
    holding ?, #, % or a space would end the path early or read as an escape: quote it whole."""
    return str(request.url_for(route, product_id=quote(str(product_id), safe="")))


def build_app(searcher: Searcher, settings: ShopSettings = ShopSettings()) -> FastAPI:
    """The whole shop process as one ASGI app; serve it with uvicorn."""
    # Swagger UI's script and stylesheet come from the installed fastapi-offline package, served
    # by this app: FastAPI's default loads them from a CDN, which left /docs blank offline.
    app = FastAPIOffline(title=f"{settings.title}: visual shopping assistant API", redoc_url=None,
                  static_url="/docs-static",
                  description="Find the catalog products most similar to a photo, and the products "
                              "similar to a catalog product. The chat assistant is mounted at "
                              f"`{settings.assistant_path}/`.",
                  version="1.0")
    browser = CatalogBrowser(lambda: searcher.collection(settings.model, check_weights=False).table())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(SHOP_DIR / "templates"),
                             autoescape=True)
    env.globals["product_url"] = jinja2.pass_context(
        lambda context, route, product_id: id_url(context["request"], route, product_id))
    templates = Jinja2Templates(env=env)
    state = {"images_root": None, "assistant": False}
    app.state.shop_settings = settings
    app.state.searcher = searcher

    def images_root() -> Path | None:
        if state["images_root"] is None:
            state["images_root"] = _images_root(settings, browser)
        return state["images_root"]

    app.add_middleware(UploadSizeLimit, paths=("/api/recommend",),
                       max_bytes=settings.max_upload_bytes + FORM_OVERHEAD,
                       message=f"the upload is too large; the limit is {size_text(settings.max_upload_bytes)}")

    # -- errors ----------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 413:
            detail = f"the upload is too large; the limit is {size_text(settings.max_upload_bytes)}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        log.warning("store error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)

    # -- helpers shared by pages and API --------------------------------------------------
    def check_model(model: str | None) -> str:
        model = model or settings.model
        if model not in settings.models:
            raise ApiError(400, f"unknown model {model!r}; choose one of {', '.join(settings.models)}",
                           models=list(settings.models))
        return model

    def raw_filters(gender: str | None, category: str | None) -> dict[str, list[str]]:
        raw = {}
        if gender and gender.strip():
            raw["gender"] = [gender]
        if category and category.strip():
            raw["category"] = [category]
        return raw

    def image_url(request: Request, product_id: str) -> str:
        return id_url(request, "product_image", product_id)

    def recommendation(request: Request, result: Result) -> Recommendation:
        data = result.to_json()
        data["image"] = image_url(request, result.id) if result.get("image") else None
        return Recommendation(**data)

    def product_out(request: Request, product: dict) -> ProductOut:
        data = {key: product.get(key) for key in ProductOut.model_fields}
        data["image"] = image_url(request, product["id"]) if product.get("image") else None
        return ProductOut(**data)

    def similar(model: str, product_id: str, k: int, gender=None, category=None):
        if searcher.collection(model, check_weights=False).metadata_of(product_id) is None:
            raise ApiError(404, f"no product with id {product_id!r} in the {model} index")
        try:
            return searcher.similar_to(model, product_id, k=k, filters=raw_filters(gender, category))
        except UnknownFilterValue as exc:
            raise _filter_error(exc) from exc

    # -- JSON API ----------------------------------------------------------------------------
    @app.post("/api/recommend", response_model=Recommendations, tags=["api"],
              max_body_size=settings.max_upload_bytes + FORM_OVERHEAD,
              responses={400: {"description": "no file, not an image, unknown model or filter value"},
                         413: {"description": "the photo is over the size limit"}})
    def recommend(request: Request,
                  image: Annotated[UploadFile | None, File(description="the shopper's photo (JPEG, PNG, WebP, GIF or BMP)")] = None,
                  model: Annotated[str | None, Form(description=f"one of {', '.join(settings.models)}; default {settings.model}")] = None,
                  k: Annotated[int | None, Form(ge=1, le=settings.max_k, description=f"how many products (default {settings.k})")] = None,
                  gender: Annotated[str | None, Form(description="e.g. Women, Men, Unisex")] = None,
                  category: Annotated[str | None, Form(description="a department, category or type, e.g. Footwear, Shoes, Heels")] = None,
                  ) -> Recommendations:
        """The products most similar to the uploaded photo, best first."""
        if not isinstance(image, StarletteUploadFile):
            raise ApiError(400, "no photo: send the image file in the multipart form field 'image'")
        model = check_model(model)
        data = image.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, f"{image.filename or 'the photo'} is over the "
                                f"{size_text(settings.max_upload_bytes)} limit")
        try:
            filters = searcher.resolve(model, raw_filters(gender, category))
        except UnknownFilterValue as exc:
            raise _filter_error(exc) from exc
        try:
            photo = open_image(data, ImageLimits(max_bytes=settings.max_upload_bytes))
        except ImageError as exc:
            raise ApiError(400, f"{image.filename or 'the upload'}: {exc}") from exc
        answer = searcher.search_image(model, photo, k=k or settings.k, filters=filters)
        return Recommendations(model=model, results=[recommendation(request, r) for r in answer.results])

    @app.get("/api/products/{product_id}/similar", response_model=Recommendations, tags=["api"],
             responses={400: {"description": "unknown model or filter value"},
                        404: {"description": "no such product"}})
    def similar_products(request: Request, product_id: str,
                         model: Annotated[str | None, Query(description=f"default {settings.model}")] = None,
                         k: Annotated[int | None, Query(ge=1, le=settings.max_k)] = None,
                         gender: str | None = None, category: str | None = None) -> Recommendations:
        """The products most similar to a catalog product (by its stored vector), itself excluded."""
        model = check_model(model)
        answer = similar(model, product_id, k or settings.k, gender, category)
        return Recommendations(model=model, results=[recommendation(request, r) for r in answer.results])

    @app.get("/api/products", response_model=ProductPage, tags=["api"])
    def list_products(request: Request, gender: str | None = None, category: str | None = None,
                      page: Annotated[int, Query(ge=1)] = 1,
                      per_page: Annotated[int, Query(ge=1, le=200)] = settings.page_size) -> ProductPage:
        """One page of the catalog, optionally filtered by gender and category."""
        try:
            filters = browser.resolve(gender, category)
        except UnknownFilterValue as exc:
            raise _filter_error(exc) from exc
        found = browser.page(filters, page, per_page)
        return ProductPage(page=found.number, pages=found.pages, total=found.total,
                           products=[product_out(request, p) for p in found.products])

    @app.get("/api/products/{product_id}", response_model=ProductOut, tags=["api"],
             responses={404: {"description": "no such product"}})
    def get_product(request: Request, product_id: str) -> ProductOut:
        product = browser.product(product_id)
        if product is None:
            raise ApiError(404, f"no product with id {product_id!r}")
        return product_out(request, product)

    @app.get("/api/health", response_model=Health, tags=["api"])
    def health() -> Health:
        """Ready when every served model has an index; `models` gives each one's product count."""
        counts, status = {}, "ok"
        for model in settings.models:
            try:
                counts[model] = searcher.collection(model, check_weights=False).count()
            except StoreError:
                counts[model], status = 0, "degraded"
        return Health(status=status, default_model=settings.model, models=counts,
                      assistant=state["assistant"])

    # -- catalog images ----------------------------------------------------------------------
    @app.get("/images/{product_id}", name="product_image", tags=["images"],
             responses={404: {"description": "no such product or image"}})
    def product_image(product_id: str):
        """A product's picture; only files inside the catalog's images folder are served."""
        product = browser.product(product_id)
        root = images_root()
        if product is None or not product.get("image") or root is None:
            raise ApiError(404, f"no image for product {product_id!r}")
        path = Path(product["image"]).resolve()
        # resolve() follows links and '..': whatever the stored path says, the file itself must
        # lie inside the images folder.
        if not path.is_relative_to(root) or not path.is_file():
            log.warning("refused image path outside %s for product %r", root, product_id)
            raise ApiError(404, f"no image for product {product_id!r}")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600",
                                           "X-Content-Type-Options": "nosniff"})

    # -- shop pages ------------------------------------------------------------------------
    app.mount("/shop-static", StaticFiles(directory=SHOP_DIR / "static"), name="shop_static")

    def page(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
        context = {"title": settings.title, "assistant_url": f"{settings.assistant_path}/" if state["assistant"] else None,
                   **context}
        return templates.TemplateResponse(request, name, context, status_code=status,
                                          headers={"Content-Security-Policy": SHOP_CSP,
                                                   "X-Content-Type-Options": "nosniff"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def shop_grid(request: Request, gender: str | None = None, category: str | None = None,
                  page_number: Annotated[int, Query(alias="page")] = 1):
        error, status = None, 200
        try:
            filters = browser.resolve(gender, category)
        except UnknownFilterValue as exc:
            error, status = exc, 400
            filters = browser.resolve(None, None)
        found = browser.page(filters, page_number, settings.page_size)
        vocabulary = browser.vocabulary()
        return page(request, "grid.html", {
            "found": found, "error": error,
            "genders": vocabulary.get("gender", []), "category_groups": browser.category_groups(),
            "gender": (filters.get("gender") or (None,))[0] if not error else gender,
            "category": (filters.get("category") or (None,))[0] if not error else category,
            "query": {"gender": gender or "", "category": category or ""},
        }, status)

    @app.get("/products/{product_id}", response_class=HTMLResponse, include_in_schema=False)
    def shop_product(request: Request, product_id: str, model: str | None = None):
        product = browser.product(product_id)
        if product is None:
            return page(request, "message.html", {"heading": "Product not found",
                                                  "message": f"There is no product {product_id} in this shop."}, 404)
        error, results, chosen = None, [], model or settings.model
        try:
            chosen = check_model(model)
            results = similar(chosen, product_id, settings.k).results
        except ApiError as exc:
            error = exc.detail
        except StoreError as exc:
            error = str(exc)
        return page(request, "product.html", {"product": product, "similar": results, "error": error,
                                              "models": settings.models, "model": chosen},
                    400 if error and model else 200)

    @app.get("/embed", response_class=HTMLResponse, include_in_schema=False)
    def embed_example(request: Request):
        """The snippet a shop pastes, live: the assistant as Gradio's web component."""
        base = str(request.base_url).rstrip("/")
        response = page(request, "embed.html", {"base": base, "path": settings.assistant_path})
        # Gradio's own bundle builds styles at run time; the strict shop policy would block it.
        del response.headers["Content-Security-Policy"]
        return response

    if settings.assistant is not None:
        mount_assistant(app, searcher, settings, images_root())
        state["assistant"] = True
    return app


def gradio_frontend_dir() -> Path:
    import gradio
    return Path(gradio.__file__).resolve().parent / "templates" / "frontend"


def mount_assistant(app: FastAPI, searcher: Searcher, settings: ShopSettings, images_root: Path | None) -> None:
    """Mount the chat assistant (issue 3's Gradio app) at `settings.assistant_path`.

    Imported here, not at the top: the API and shop work (and test) without the chat, and
    Gradio's import cost is paid only when it is served.
    """
    import gradio as gr
    from assistant import ui

    path = settings.assistant_path.rstrip("/")
    frontend = gradio_frontend_dir()
    chat = settings.assistant
    if images_root is not None and not chat.allowed_paths:
        chat = replace(chat, allowed_paths=(images_root,))  # the chat shows the shop's own images only
    if chat.product_url is None:
        # "View product" on a result opens the shop's own product page, in the shop's window
        # (the chat is framed in its side panel).
        chat = replace(chat, product_url="/products/{id}", product_link_target="_top")

    # The web component's loader: the wheel's own gradio.js, at a URL whose "./assets/..."
    # imports land on the mounted app's asset route (no CDN is reachable here).
    @app.get(f"{path}/gradio.js", include_in_schema=False)
    def gradio_js():
        return FileResponse(frontend / "gradio.js", media_type="text/javascript",
                            headers={"Access-Control-Allow-Origin": "*"})

    # The web component asks for its base stylesheet as "./assets/..." from the origin's root,
    # not from beside gradio.js, so the same build files are served there too.
    app.mount("/assets", StaticFiles(directory=frontend / "assets"), name="gradio_assets")

    demo = ui.build_demo(searcher, chat)
    # As `ui.launch` does: several sessions' searches at once, a bounded queue.
    demo.queue(default_concurrency_limit=chat.concurrency, max_size=chat.queue_size)
    # No allowed_paths: the chat shows copies of product images (ui.product_picture), so Gradio
    # serves no folder of the server's as it is, the images folder included.
    gr.mount_gradio_app(app, demo, path=path, root_path=path, max_file_size=chat.upload_hard_limit_bytes,
                        footer_links=[], css=getattr(ui, "CSS", None), ssr_mode=False, show_error=False)
    ui.check_uploads_like_launch(demo)
