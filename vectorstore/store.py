"""Which store holds the collections, and the client every layer passes around.

`StoreSettings.engine` picks the adapter: "chroma" (an embedded folder, `--db`, or a Chroma server,
`--chroma-host`) or "lancedb" (a LanceDB folder or object-store URI, `--lance-uri`; the engine
filters inside its index, so no serving process holds the catalog's metadata to plan a search).
Both implement vectorstore/collection.py's `ProductCollection`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from catalog.errors import UserError
from vectorstore.collection import (
    CENTER_KEY,
    CENTERED_KEY,
    COLLECTION_PREFIX,
    DIGEST_KEY,
    EF_SEARCH,
    RETIRED_SLOT,
    RUNTIME_KEY,
    Hit,
    ProductCollection,
    collection_name,
)
from vectorstore.errors import NoIndex, StoreError

ENGINES = ("chroma", "lancedb")


@dataclass(frozen=True)
class StoreSettings:
    path: Path = Path("data/chroma")
    host: str | None = None
    port: int | None = None
    engine: str = "chroma"
    # LanceDB: a folder, or an object store's URI (s3://bucket/prefix) that several serving
    # machines read; None: `path`.
    uri: str | None = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise UserError(f"--store must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.engine == "lancedb" and self.host:
            raise UserError("--chroma-host is for --store chroma; a LanceDB store is a folder or a URI (--lance-uri)")

    def argv(self) -> list[str]:
        """The command-line flags that name this store (for a child process, or a hint)."""
        if self.engine == "lancedb":
            return ["--store", "lancedb"] + (["--lance-uri", self.uri] if self.uri else ["--db", str(self.path)])
        if self.host:
            return ["--chroma-host", self.host, "--chroma-port", str(self.port or 8000)]
        return ["--db", str(self.path)]

    @property
    def where(self) -> str:
        if self.engine == "lancedb":
            return self.uri or str(self.path)
        return f"Chroma server {self.host}:{self.port}" if self.host else f"{self.path}"


def make_client(settings: StoreSettings):
    """The client of the store `settings` name: a Chroma client, or a `LanceStore`."""
    if settings.engine == "lancedb":
        from vectorstore.lance_store import connect
        return connect(settings.uri or settings.path)
    from vectorstore.chroma_store import make_chroma_client
    return make_chroma_client(settings)


__all__ = ["CENTER_KEY", "CENTERED_KEY", "COLLECTION_PREFIX", "DIGEST_KEY", "EF_SEARCH", "ENGINES", "RETIRED_SLOT",
           "RUNTIME_KEY", "Hit", "NoIndex", "ProductCollection", "StoreError", "StoreSettings", "collection_name",
           "make_client"]
