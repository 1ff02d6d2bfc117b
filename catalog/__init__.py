"""What a product is and how a shop's catalog folder is read. Imports nothing of the project."""
from catalog.products import Product, METADATA_FIELDS
from catalog.reader import Catalog, CatalogError, Skipped, count_reasons, read_catalog
from catalog.images import ImageError, ImageLimits, open_image

__all__ = ["Product", "METADATA_FIELDS", "Catalog", "CatalogError", "Skipped", "count_reasons", "read_catalog",
           "ImageError", "ImageLimits", "open_image"]
