"""Embedders and the Chroma collections: turning product images into vectors, storing them,
and finding the nearest ones. May import `catalog`, never `assistant`."""
from vectorstore.architectures import MODEL_NAMES, Architecture, architecture
from vectorstore.embedders import Embedder, best_model, load_embedder, load_embedders, model_dim
from vectorstore.weights import WeightsChoice, resolve as resolve_weights, tuned_file
from vectorstore.weights_file import WeightsError, held_out_ids
from vectorstore.filters import CATEGORY, Filters, UnknownFilterValue, resolve_filters
from vectorstore.indexing import IndexRefused, IndexReport, index_catalog
from vectorstore.label_prior import NO_RERANK, LabelPrior, RerankSettings, rerank
from vectorstore.query_views import AS_IS, QueryViews
from vectorstore.search import Answer, Result, Searcher
from vectorstore.store import (Hit, NoIndex, ProductCollection, StoreError, StoreSettings, WeightsMismatch,
                               make_client)

__all__ = ["best_model", "MODEL_NAMES", "Architecture", "architecture", "load_embedders", "resolve_weights", "tuned_file",
           "Embedder", "WeightsChoice", "WeightsError", "held_out_ids", "load_embedder", "model_dim",
           "CATEGORY", "Filters", "UnknownFilterValue", "resolve_filters", "IndexRefused", "IndexReport", "index_catalog",
           "LabelPrior", "RerankSettings", "NO_RERANK", "rerank", "QueryViews", "AS_IS", "Answer", "Result", "Searcher", "Hit", "NoIndex", "ProductCollection", "StoreError", "StoreSettings", "WeightsMismatch", "make_client"]
