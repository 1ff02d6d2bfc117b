"""Storage of product vectors: one collection per model (vectorstore/collection.py's interface)
held by Chroma (chroma_store.py, with the filtered-search plan of planner.py) or LanceDB
(lance_store.py), filters as data, and the nearest products under a filter. May import `catalog`."""
from vectorstore.errors import (
                                DamagedIndex,
                                DiskFull,
                                IndexLocked,
                                NoIndex,
                                NoProduct,
                                ReadOnlyStore,
                                StoreError,
                                StoreUnreachable,
                                WeightsMismatch,
)
from vectorstore.filters import CATEGORY, Filters, UnknownFilterValue, resolve_filters
from vectorstore.store import Hit, ProductCollection, StoreSettings, make_client

__all__ = ["CATEGORY", "Filters", "UnknownFilterValue", "resolve_filters", "Hit", "NoIndex", "ProductCollection",
           "StoreError", "StoreSettings", "WeightsMismatch", "make_client", "DamagedIndex", "DiskFull", "IndexLocked",
           "NoProduct", "ReadOnlyStore", "StoreUnreachable"]
