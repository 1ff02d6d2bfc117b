"""build_app: the shop's routers, its error handlers and its context, put together."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from catalog import Catalog
from search import Searcher
from shop.api import api_router
from shop.browse import CatalogBrowser, catalog_metadata
from shop.context import ShopContext
from shop.coverage import IndexCoverage
from shop.errors import FORM_OVERHEAD, UploadSizeLimit, install_error_handlers, too_large_text
from shop.images import images_router
from shop.pages import SHOP_DIR, error_page, pages_router, shop_templates
from shop.settings import ShopSettings

# Mounts the chat into the shop at settings.assistant_path; given the app and the images
# folder the chat may show pictures from. app.py passes assistant.mount.mount_assistant, so
# the shop never imports the chat.
MountChat = Callable[[FastAPI, Path | None], None]


def build_app(searcher: Searcher, settings: ShopSettings = ShopSettings(),
              mount_chat: MountChat | None = None, status: Callable[[], str | None] | None = None,
              catalog: Catalog | None = None, tuning: Callable[[], dict | None] | None = None) -> FastAPI:
    """The whole shop process as one ASGI app; serve it with uvicorn. `status` says how far
    background indexing is (a notice on every page and in /api/health until done); `tuning`
    where self-tuning stands (a snapshot with its `line`; in /api/health and the notice); `catalog`
    is the catalog that indexing works through: until the default model's index holds all of
    it, the shop lists the catalog, and a product not indexed yet still has its page."""
    # Swagger UI's script and stylesheet come from the installed fastapi-offline package, served
    # by this app: FastAPI's default loads them from a CDN, which left /docs blank offline.
    app = FastAPIOffline(title=f"{settings.title}: visual shopping assistant API", redoc_url=None,
                         static_url="/docs-static",
                         description="Find the catalog products most similar to a photo, and the products "
                                     "similar to a catalog product. The chat assistant is mounted at "
                                     f"`{settings.assistant_path}/`.",
                         version="1.0")
    policy = settings.policy
    coverage = IndexCoverage(searcher, policy.default_model, status or (lambda: None), catalog)
    shop = ShopContext(searcher, settings, _browser(searcher, policy.default_model, coverage), shop_templates(),
                       coverage, tuning=tuning or (lambda: None))
    app.state.shop = shop

    app.add_middleware(UploadSizeLimit, paths=("/api/recommend",),
                       max_bytes=policy.max_upload_bytes + FORM_OVERHEAD, message=too_large_text(policy))
    install_error_handlers(app, policy, page=error_page)
    app.include_router(api_router(settings))
    app.include_router(images_router())
    app.include_router(pages_router())
    app.mount("/shop-static", StaticFiles(directory=SHOP_DIR / "static"), name="shop_static")
    if mount_chat is not None:
        mount_chat(app, shop.images_root())
        shop.chat_mounted = True
    return app


def _browser(searcher: Searcher, model: str, coverage: IndexCoverage) -> CatalogBrowser:
    """Browse the default model's index; the catalog itself while that index is still short of it."""
    def indexed():
        return searcher.collection(model, check_weights=False).metadata

    if coverage.catalog is None:
        return CatalogBrowser(indexed)
    whole = catalog_metadata(coverage.catalog)
    return CatalogBrowser(lambda: whole if coverage.partial() else indexed())
