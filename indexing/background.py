"""Indexing in the background, so that `serve` and `shop` answer from the products indexed so
far instead of waiting for the whole catalog.

`BackgroundIndexer` runs `index_catalog` in a thread, the selected model first (alone, so it
answers with the whole catalog sooner), then the others together; `IndexProgress` is what a
UI reads to say how far it is. A kill resumes as `index_catalog` always does: the next start
indexes only what was not committed, with no duplicates and no gaps.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from catalog.jobs import DaemonJob
from embedding.embedders import Embedder
from indexing.pipeline import index_catalog
from indexing.plan import IndexReport
from vectorstore.errors import IndexLocked

# While another indexer (an `index` run) holds the folder, the background indexer looks again
# this often; it never writes beside it.
LOCK_POLL_SECONDS = 2.0
RESUME_HINT = "restart the server (or run `python app.py index` with the same --catalog and --db) to resume"


@dataclass
class IndexProgress:
    """How far background indexing is; read from any thread (each read is one snapshot)."""
    total: int = 0
    done: int = 0
    models: tuple[str, ...] = ()       # the pass under way
    passes_left: int = 0               # passes after this one
    first_pass: bool = True            # the selected model's pass: its index is not complete yet
    finished: bool = False
    error: str | None = None
    waiting: str | None = None         # another indexer holds the folder: who
    reports: list[IndexReport] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **values) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)

    def snapshot(self) -> dict:
        with self._lock:
            return {"total": self.total, "done": self.done, "models": self.models, "finished": self.finished,
                    "passes_left": self.passes_left, "first_pass": self.first_pass, "error": self.error,
                    "waiting": self.waiting}

    def status(self) -> str | None:
        """For the pages, while it matters to a shopper: how far indexing is and what that
        means for the results; None once every model's index is complete."""
        state = self.snapshot()
        if state["finished"]:
            return None
        if state["error"]:
            return (f"Indexing stopped ({state['error']}); results come from the products indexed before "
                    f"it stopped; {RESUME_HINT}.")
        if state["waiting"]:
            return (f"Indexing waits while another indexer writes ({state['waiting']}); results come from "
                    "what is stored.")
        if state["first_pass"] or not state["total"]:
            return (f"Indexing the catalog: {state['done']:,} of {state['total']:,} products indexed. "
                    "Results come from the products indexed so far.")
        # the selected model is complete; the other models' pass is under way
        return (f"Indexing the catalog for {', '.join(state['models'])}: {state['done']:,} of "
                f"{state['total']:,} products. The default model searches the whole catalog.")

    def line(self) -> str:
        """For a person: '3,200 of 12,186 products indexed (resnet50)', or that it is done."""
        state = self.snapshot()
        if state["error"]:
            return f"indexing stopped: {state['error']}; {RESUME_HINT}"
        if state["waiting"]:
            return f"indexing waits for another indexer: {state['waiting']}"
        if state["finished"]:
            return f"all {state['total']:,} products indexed"
        models = ",".join(state["models"])
        more = f"; {state['passes_left']} more model pass(es) after it" if state["passes_left"] else ""
        return f"{state['done']:,} of {state['total']:,} products indexed ({models}){more}"


class BackgroundIndexer(DaemonJob):
    """Bring the collections in line with `catalog` in a daemon thread.

    `embedders` in order, the selected model first. `on_pass_done` runs after each pass (the
    caller drops cached collection handles there: a pass ends by centering its collection,
    and a handle opened before must reload the center). Use `start()` then read `progress`."""
    thread_name = "background-indexer"


    def __init__(self, catalog, client, embedders: Sequence[Embedder], *, batch_size: int = 32,
                 on_pass_done: Callable[[], None] | None = None, log: Callable[[str], None] | None = None,
                 log_every_s: float = 30.0):
        self.catalog, self.client = catalog, client
        embedders = list(embedders)
        self.passes = [embedders[:1], embedders[1:]] if len(embedders) > 1 else [embedders]
        self.batch_size = batch_size
        self.on_pass_done = on_pass_done or (lambda: None)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.log_every_s = log_every_s
        self.progress = IndexProgress(total=len(catalog.products))

    def start(self) -> BackgroundIndexer:
        """Create the missing collections now (a search right after this finds them, empty),
        then index in the thread."""
        from vectorstore.store import ProductCollection
        for embedder in (e for group in self.passes for e in group):
            ProductCollection.open(self.client, embedder.name, weights_id=embedder.weights_id, dim=embedder.dim,
                                   create=True, runtime=embedder.runtime)
        self._start_thread()
        return self

    def _run(self) -> None:
        last_log = [0.0]

        def heard(done: int, total: int) -> None:
            self.progress.update(done=done, total=total)
            if time.monotonic() - last_log[0] >= self.log_every_s:
                last_log[0] = time.monotonic()
                self.log(self.progress.line())

        try:
            for number, embedders in enumerate(self.passes):
                self.progress.update(models=tuple(e.name for e in embedders), done=0, first_pass=number == 0,
                                     passes_left=len(self.passes) - number - 1)
                report = self._index_when_free(embedders, heard)
                self.progress.reports.append(report)
                self.on_pass_done()
                if sum(report.indexed.values()) or sum(report.removed.values()):
                    self.log(report.summary())
            self.progress.update(finished=True, done=self.progress.total)
        except Exception as exc:  # the server keeps answering from what is stored; said once
            self.progress.update(error=_short(f"{type(exc).__name__}: {exc}"), waiting=None)
            self.log(self.progress.line())

    def _index_when_free(self, embedders, heard) -> IndexReport:
        """One pass, once no other indexer holds the folder (an `index` run beside the server)."""
        told = False
        while True:
            try:
                report = index_catalog(self.catalog, self.client, embedders, batch_size=self.batch_size,
                                       show_progress_bar=False, on_progress=heard)
                self.progress.update(waiting=None)
                return report
            except IndexLocked as exc:
                holder = exc.holder
                self.progress.update(waiting=f"process {holder.get('pid', '?')} since {holder.get('since', '?')}")
                if not told:
                    self.log(f"background indexing waits: {exc}")
                    told = True
                time.sleep(LOCK_POLL_SECONDS)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["BackgroundIndexer", "IndexProgress"]
