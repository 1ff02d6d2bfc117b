"""Catalog -> collections: the plan (what is new, changed, gone), one run definition with two
engines (this process, or Ray Data actors), and background indexing in a serving process.
May import `catalog`, `embedding` and `vectorstore`."""
from indexing.pipeline import index_catalog, run_index
from indexing.plan import IndexRefused, IndexReport, drop_stale

__all__ = ["IndexRefused", "IndexReport", "drop_stale", "index_catalog", "run_index"]
