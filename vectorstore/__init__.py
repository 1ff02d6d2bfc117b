"""Embedders and the Chroma collections: turning product images into vectors, storing them,
and finding the nearest ones. May import `catalog`, never `assistant`."""
from vectorstore.embedders import (MODEL_NAMES, Embedder, WeightsChoice, WeightsError, held_out_ids, load_embedder,
                                   model_dim)
from vectorstore.filters import CATEGORY, Filters, UnknownFilterValue, resolve_filters
from vectorstore.indexing import IndexRefused, IndexReport, index_catalog
from vectorstore.search import Answer, Result, Searcher
from vectorstore.store import (Hit, NoIndex, ProductCollection, StoreError, StoreSettings, WeightsMismatch,
                               make_client)

__all__ = ["MODEL_NAMES", "Embedder", "WeightsChoice", "WeightsError", "held_out_ids", "load_embedder", "model_dim",
           "CATEGORY", "Filters", "UnknownFilterValue", "resolve_filters", "IndexRefused", "IndexReport", "index_catalog",
           "Answer", "Result", "Searcher", "Hit", "NoIndex", "ProductCollection", "StoreError", "StoreSettings", "WeightsMismatch", "make_client"]
