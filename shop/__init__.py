"""The shop process: a FastAPI app with the shop's pages, the JSON API and the catalog's images,
all over one index (one `Searcher`); the chat assistant is mounted into it by app.py.

    settings.py   what the shop serves (ShopSettings, with the shared SearchPolicy)
    context.py    what every route depends on (ShopContext, injected with FastAPI's Depends)
    coverage.py   what the index holds of the catalog while background indexing runs
    errors.py     refusals as JSON with a person's message (as a page on the HTML pages); the upload size guard
    api.py        /api/... routes: thin adapters over operations/
    images.py     /images/{id}: files inside the catalog's images folder only
    pages.py      the HTML pages (grid, product, embed snippet)
    browse.py     pages of the catalog from the metadata table (the catalog's own while indexing)
    similar.py    similar items of the product's own gender, as the product page shows them
    app.py        build_app: the routers put together
"""
from shop.app import build_app
from shop.settings import ShopSettings

__all__ = ["ShopSettings", "build_app"]
