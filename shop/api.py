"""The JSON API: thin adapters over operations/ (checks, search) and the catalog browser."""

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field, create_model
from starlette.datastructures import UploadFile as StarletteUploadFile

from catalog import ImageError
from catalog.text import clipped
from operations import FilterRequest, LookSettings, Refused, find_the_look
from search.searcher import RESULT_FIELDS, Result
from shop.context import ShopContext, id_url, shop_context
from shop.errors import FORM_OVERHEAD, ApiError
from shop.settings import ShopSettings
from shop.similar import similar_items
from vectorstore import StoreError

# One product's fields as `search --json` writes them; `image` is the URL of its picture here.
_PRODUCT_FIELDS = {name: ((int if name == "year" else str) | None, None) for name in RESULT_FIELDS}
ProductOut = create_model("ProductOut", id=(str, ...), **_PRODUCT_FIELDS)
Recommendation = create_model("Recommendation", id=(str, ...), score=(float, ...), **_PRODUCT_FIELDS)


class Item(BaseModel):
    label: str | None = Field(description="the item's catalog category (a subCategory, e.g. Topwear, Shoes, Bags)")
    box: list[float] = Field(description="[x0, y0, x1, y1] as fractions of the photo's width and height")
    score: float = Field(description="the parser's confidence in the item (for a photo searched whole: the "
                                     "share of its results in that category)")
    colour: str | None = Field(None, description="the colour of the item's own pixels, in the catalog's words")
    results: list[Recommendation]


class Recommendations(BaseModel):
    model: str
    results: list[Recommendation] = Field(description="the first (most prominent) item's products")
    items: list[Item] | None = Field(None, description="every item found in the photo, the most prominent "
                                                       "first; absent with items=false")


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
    indexing: str | None = None  # how far background indexing is; None when it is done
    # Self-tuning: phase (training, indexing, checking, ready, switched, rejected, skipped, failed), epoch,
    # epochs, minutes_left, the figures before and after, and `line`; None when it is off.
    tuning: dict | None = None


Context = Annotated[ShopContext, Depends(shop_context)]


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


def api_router(settings: ShopSettings) -> APIRouter:
    """The routes; `settings` sets what the schema documents (models, k's range, the body limit)."""
    policy = settings.policy
    models = ", ".join(policy.models)
    router = APIRouter(prefix="/api", tags=["api"])

    @router.post("/recommend", response_model=Recommendations,
                 max_body_size=policy.max_upload_bytes + FORM_OVERHEAD,
                 response_model_exclude_unset=True,  # no `items` key with items=false, as before
                 responses={400: {"description": "no file, not an image, unknown model or filter value"},
                            413: {"description": "the photo is over the size limit"},
                            422: {"description": "no product can be seen in the photo (blank, a sliver, a few pixels)"}})
    def recommend(request: Request, shop: Context,
                  image: Annotated[UploadFile | None, File(description="the shopper's photo (JPEG, PNG, WebP, GIF or BMP)")] = None,
                  model: Annotated[str | None, Form(description=f"one of {models}; default {policy.default_model}")] = None,
                  k: Annotated[int | None, Form(ge=1, le=policy.max_k, description=f"how many products (default {policy.k})")] = None,
                  gender: Annotated[str | None, Form(description="e.g. Women, Men, Unisex")] = None,
                  category: Annotated[str | None, Form(description="a department, category or type, e.g. Footwear, Shoes, Heels")] = None,
                  items: Annotated[bool, Form(description="find every item in the photo and search each "
                                                          "(false: the whole photo as one query)")] = True,
                  ) -> Recommendations:
        """The products most similar to the uploaded photo, best first; with `items`, also
        every item found in it (a whole outfit: the top, the trousers, the shoes, the bag),
        each with its own products."""
        if not isinstance(image, StarletteUploadFile):
            raise Refused("no_photo", "no photo: send the image file in the multipart form field 'image'")
        # One byte past the limit is enough to know it is over; the rest is never read.
        data = image.file.read(policy.max_upload_bytes + 1)
        try:
            look = find_the_look(shop.searcher, policy, data, name=image.filename or "the photo", model=model,
                                 k=k, filters=FilterRequest(gender=gender, category=category),
                                 settings=LookSettings(items=items))
        except ImageError as exc:
            raise ApiError(400, f"{image.filename or 'the upload'}: {exc}") from exc
        answer = look.first
        results = [recommendation(request, r) for r in answer.results]
        if not items:
            return Recommendations(model=answer.model, results=results)
        return Recommendations(model=answer.model, results=results,
                               items=[Item(**f.to_json(lambda r: recommendation(request, r))) for f in look.items])

    @router.get("/products/{product_id}/similar", response_model=Recommendations,
                responses={400: {"description": "unknown model or filter value"},
                           404: {"description": "no such product"}})
    def similar_products(request: Request, shop: Context, product_id: str,
                         model: Annotated[str | None, Query(description=f"default {policy.default_model}")] = None,
                         k: Annotated[int | None, Query(ge=1, le=policy.max_k)] = None,
                         gender: str | None = None, category: str | None = None,
                         same_gender: Annotated[bool, Query(description=(
                             "keep the product's gender (Unisex products match either) when any such product "
                             "is similar, as the shop's product page does; ignored with `gender`"))] = False,
                         ) -> Recommendations:
        """The products most similar to a catalog product (by its stored vector), itself excluded;
        among shapes alike, those of its own colour first."""
        answer = similar_items(shop, product_id, model=model, k=k, same_gender=same_gender,
                               filters=FilterRequest(gender=gender, category=category))
        return Recommendations(model=answer.model, results=[recommendation(request, r) for r in answer.results])

    @router.get("/products", response_model=ProductPage)
    def list_products(request: Request, shop: Context, gender: str | None = None, category: str | None = None,
                      page: Annotated[int, Query(ge=1)] = 1,
                      per_page: Annotated[int, Query(ge=1, le=200)] = settings.page_size) -> ProductPage:
        """One page of the catalog, optionally filtered by gender and category."""
        found = shop.browser.page(shop.browser.resolve(gender, category), page, per_page)
        return ProductPage(page=found.number, pages=found.pages, total=found.total,
                           products=[product_out(request, p) for p in found.products])

    @router.get("/products/{product_id}", response_model=ProductOut,
                responses={404: {"description": "no such product"}})
    def get_product(request: Request, shop: Context, product_id: str) -> ProductOut:
        product = shop.browser.product(product_id)
        if product is None:
            raise ApiError(404, f"no product with id {clipped(product_id)!r}")
        return product_out(request, product)

    @router.get("/health", response_model=Health)
    def health(shop: Context) -> Health:
        """Ready when every served model has an index; `models` gives each one's product count."""
        counts, status = {}, "ok"
        for model in policy.models:
            try:
                counts[model] = shop.searcher.collection(model, check_weights=False).count()
            except StoreError:
                counts[model], status = 0, "degraded"
        indexing = shop.status()
        if indexing and indexing.startswith("Indexing stopped"):
            status = "indexing stopped"
        elif indexing and status == "ok":
            status = "indexing"
        return Health(status=status, default_model=policy.default_model, models=counts,
                      assistant=shop.chat_mounted, indexing=indexing, tuning=shop.tuning())

    return router
