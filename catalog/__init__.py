"""What a product is and how a shop's catalog folder is read. Imports nothing of the project."""
from catalog.images import ImageError, ImageLimits, open_image
from catalog.products import METADATA_FIELDS, Product
from catalog.reader import Catalog, CatalogError, Skipped, count_reasons, read_catalog

__all__ = ["Product", "METADATA_FIELDS", "Catalog", "CatalogError", "Skipped", "count_reasons", "read_catalog",
           "ImageError", "ImageLimits", "open_image"]
