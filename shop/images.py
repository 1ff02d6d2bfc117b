"""A product's picture, and nothing else: only files inside the catalog's images folder."""

import logging
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from shop.context import ShopContext, shop_context
from shop.errors import ApiError

log = logging.getLogger(__name__)


def images_router() -> APIRouter:
    router = APIRouter(tags=["images"])

    @router.get("/images/{product_id}", name="product_image",
                responses={404: {"description": "no such product or image"}})
    def product_image(product_id: str, shop: ShopContext = Depends(shop_context)):
        """A product's picture; only files inside the catalog's images folder are served."""
        product = shop.browser.product(product_id)
        root = shop.images_root()
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

    return router
