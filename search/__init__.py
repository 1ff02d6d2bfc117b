"""Searching by photo or by product: the Searcher (one embedder and one collection per model),
the query's views, and the reordering of the nearest products by what the query most likely is.
May import `catalog`, `embedding` and `vectorstore`."""
from search.query_views import AS_IS, QueryViews
from search.reorder import NO_RERANK, RerankSettings, rerank
from search.searcher import Answer, Result, Searcher

__all__ = ["AS_IS", "QueryViews", "NO_RERANK", "RerankSettings", "rerank", "Answer", "Result", "Searcher"]
