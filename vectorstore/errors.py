"""The store's failures, each a sentence a person can act on (vectorstore/guard.py words them)."""
from __future__ import annotations

from pathlib import Path

from catalog.errors import UserError
from catalog.text import clipped


class StoreError(UserError, RuntimeError):
    """The store cannot answer: no index yet, built with other weights, server down..."""


class NoIndex(StoreError):
    """No collection for `model` yet; `hint` is the command that builds it, where known."""

    def __init__(self, model: str, hint: str = ""):
        self.model = model
        self.hint = hint
        super().__init__(f"no index for {model} yet" + (f". Build it first: {hint}" if hint else ""))


class NoProduct(StoreError):
    """The product is not in the index (any more: a rebuild or an update removed it)."""

    def __init__(self, model: str, product_id: str):
        self.model, self.product_id = model, product_id
        super().__init__(f"no product {clipped(product_id)!r} in the {model} index")


class WeightsMismatch(StoreError):
    pass


class DiskFull(StoreError):
    """The store's disk is full; what was committed is kept and the same command resumes."""


class ReadOnlyStore(StoreError):
    """The store's folder cannot be written by this process."""


class DamagedIndex(StoreError):
    """A collection's files cannot be read; only a rebuild brings it back."""


class StoreUnreachable(StoreError):
    """The Chroma server does not answer."""


class IndexLocked(StoreError):
    """Another indexer holds the folder; `holder` is what it wrote about itself."""

    def __init__(self, folder: Path, holder: dict):
        self.folder, self.holder = folder, holder
        command = str(holder.get("command", "?"))
        who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} "
               f"({command[:120] + ('...' if len(command) > 120 else '')}), since {holder.get('since', '?')}")
        super().__init__(f"another indexer is writing to {folder}: {who}. Wait for it to finish (or stop it), "
                         "then run this command again.")
