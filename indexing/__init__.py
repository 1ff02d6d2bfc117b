"""Catalog -> collections: the plan (what is new, changed, gone), reading, embedding and writing,
run by the local engine (a reader and a writer thread) or by Ray Data actors, and in the
background of a serving process. May import `catalog`, `embedding` and `vectorstore`."""
from indexing.pipeline import IndexRefused, IndexReport, index_catalog

__all__ = ["IndexRefused", "IndexReport", "index_catalog"]
