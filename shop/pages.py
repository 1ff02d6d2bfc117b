"""The shop's HTML pages. Product text reaches HTML only through autoescaped templates, and the
pages load scripts and styles from this app only (SHOP_CSP)."""

from pathlib import Path
from typing import Annotated

import jinja2
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from catalog.text import clipped, shown_text
from embedding.registry import model_label
from operations import Refused
from shop.context import ShopContext, id_url, shop_context
from shop.errors import PAGE_TAG
from shop.similar import similar_items
from vectorstore import StoreError, UnknownFilterValue

SHOP_DIR = Path(__file__).resolve().parent
# Catalog text that slipped past escaping still could not run. The assistant (Gradio) is framed
# from the same origin.
SHOP_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")

Context = Annotated[ShopContext, Depends(shop_context)]


def shop_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(SHOP_DIR / "templates"), autoescape=True,
                             finalize=_shown)
    env.globals["product_url"] = jinja2.pass_context(
        lambda context, route, product_id: id_url(context["request"], route, product_id))
    env.globals["model_label"] = model_label  # "EfficientNet-Lite0", not efficientnet_lite0
    return Jinja2Templates(env=env)


def _shown(value):
    """Every value a page prints, without bidi controls (catalog names, ids, filter values);
    the templates' own markup (macros, Markup) is left as it is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return shown_text(value)
    return value


def render(shop: ShopContext, request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
    settings = shop.settings
    context = {"title": settings.title, "indexing": shop.notice(),
               "assistant_url": f"{settings.assistant_path}/" if shop.chat_mounted else None, **context}
    return shop.templates.TemplateResponse(request, name, context, status_code=status,
                                           headers={"Content-Security-Policy": SHOP_CSP,
                                                    "X-Content-Type-Options": "nosniff"})


def error_page(request: Request, status: int, heading: str, message: str) -> HTMLResponse:
    """A refusal on an HTML page (shop/errors.py decides which), in the shop's own layout."""
    return render(shop_context(request), request, "message.html", {"heading": heading, "message": message}, status)


def pages_router() -> APIRouter:
    router = APIRouter(include_in_schema=False, tags=[PAGE_TAG])

    @router.get("/", response_class=HTMLResponse)
    def shop_grid(request: Request, shop: Context, gender: str | None = None, category: str | None = None,
                  page_number: Annotated[int, Query(alias="page")] = 1):
        browser = shop.browser
        error, status = None, 200
        try:
            filters = browser.resolve_choice(gender, category)
        except UnknownFilterValue as exc:
            error, status = exc, 400
            filters = browser.resolve(None, None)
        found = browser.page(filters, page_number, shop.settings.page_size)
        vocabulary = browser.vocabulary()
        chosen = browser.choice_of((filters.get("category") or (None,))[0])
        return render(shop, request, "grid.html", {
            "found": found, "error": error,
            "genders": vocabulary.get("gender", []), "category_groups": browser.category_groups(),
            "gender": (filters.get("gender") or (None,))[0] if not error else gender,
            "category": chosen.label if chosen and not error else category,
            "query": {"gender": gender or "", "category": category or ""},
        }, status)

    @router.get("/products/{product_id}", response_class=HTMLResponse)
    def shop_product(request: Request, shop: Context, product_id: str, model: str | None = None):
        product = shop.browser.product(product_id)
        if product is None:
            return render(shop, request, "message.html", {"heading": "Product not found",
                                                          "message": f"There is no product {clipped(product_id)} in this shop."}, 404)
        policy = shop.settings.policy
        error, preparing, results, chosen = None, False, [], model or policy.default_model
        try:
            results = similar_items(shop, product_id, model=model, same_gender=True).results
        except Refused as exc:
            # In the catalog, not in this model's index yet: its page shows now, its similar
            # items once indexing reaches it.
            preparing = exc.reason == "no_product" and shop.coverage.indexing()
            error = None if preparing else exc.message
        except StoreError as exc:
            error = str(exc)
        return render(shop, request, "product.html", {"product": product, "similar": results, "error": error,
                                                      "preparing": preparing, "crumbs": shop.browser.crumbs(product),
                                                      "models": policy.models, "model": chosen},
                      400 if error and model else 200)

    @router.get("/embed", response_class=HTMLResponse)
    def embed_example(request: Request, shop: Context):
        """The snippet a shop pastes, live: the assistant as Gradio's web component."""
        base = str(request.base_url).rstrip("/")
        response = render(shop, request, "embed.html", {"base": base, "path": shop.settings.assistant_path})
        # Gradio's own bundle builds styles at run time; the strict shop policy would block it.
        del response.headers["Content-Security-Policy"]
        return response

    return router
