"""What every route of the shop depends on, built once by `build_app` and injected with
FastAPI's `Depends(shop_context)` (no module globals, no mutable dict inside a closure)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fastapi import Request
from fastapi.templating import Jinja2Templates

from search import Searcher
from shop.browse import CatalogBrowser
from shop.coverage import IndexCoverage
from shop.settings import ShopSettings
from vectorstore import Filters

IMAGES_ROOT_SAMPLE = 200


@dataclass
class ShopContext:
    searcher: Searcher
    settings: ShopSettings
    browser: CatalogBrowser
    templates: Jinja2Templates
    # What the default model's index holds of the catalog while background indexing runs.
    coverage: IndexCoverage
    # Where self-tuning stands (training/tune_state.py's snapshot, with its `line`), or None.
    tuning: Callable[[], dict | None] = lambda: None
    chat_mounted: bool = False
    _images_root: Path | None = field(default=None, repr=False)

    def status(self) -> str | None:
        """How far background indexing is, for /api/health (None: nothing to say)."""
        return self.coverage.line()

    def notice(self) -> str | None:
        """The pages' notice: indexing, then tuning."""
        tuning = self.tuning()
        line = tuning and tuning.get("line")
        said = [self.status(), f"{line[0].upper()}{line[1:]}." if line else None]
        return " ".join(filter(None, said)) or None

    def images_root(self) -> Path | None:
        """The only folder images are served from: the configured one, else the folder most
        stored image paths are in (found once, when first needed)."""
        if self._images_root is None:
            self._images_root = _images_root(self.settings, self.browser)
        return self._images_root


def shop_context(request: Request) -> ShopContext:
    return request.app.state.shop


def _images_root(settings: ShopSettings, browser: CatalogBrowser) -> Path | None:
    if settings.images_dir is not None:
        return Path(settings.images_dir).resolve()
    # The folder most of a first page's images are in: a sample, so that an engine that pages
    # by itself (LanceDB) is not made to load every product's metadata for it.
    paths = [p["image"] for p in browser.page(Filters(), 1, IMAGES_ROOT_SAMPLE).products if p.get("image")]
    if not paths:
        return None
    folder, _ = Counter(str(Path(p).parent) for p in paths).most_common(1)[0]
    return Path(folder).resolve()


def id_url(request: Request, route: str, product_id: str) -> str:
    """The URL of a product's route. Starlette puts path parameters in as they are, so an id
    holding ?, #, % or a space would end the path early or read as an escape: quote it whole."""
    return str(request.url_for(route, product_id=quote(str(product_id), safe="")))
