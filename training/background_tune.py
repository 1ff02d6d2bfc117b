"""Self-tuning seen from a serving process: start the tuning run (`app.py tune`) as a child
process at the lowest CPU priority, follow its state file, and when the tuned model's index is
complete, switch to it without a restart: the weights become the model's `--weights auto` file,
the index built beside the live one is promoted, and the Searcher swaps both between requests.

A kill of the server ends the child too (it watches its parent); the next start runs the same
command, which resumes from its checkpoint."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from catalog.jobs import DaemonJob
from embedding.embedders import Embedder
from embedding.weights import tuned_file
from search import Searcher
from training.tune_state import FAILED, READY, SWITCHED, TuneState
from training.tuning import TUNED_SLOT
from vectorstore.errors import IndexLocked
from vectorstore.guard import IndexLock, bump_generation

POLL_SECONDS = 1.0
# The child's niceness: the serving threads get the cores whenever a request wants them.
NICENESS = 19


@dataclass(frozen=True)
class TunePlan:
    """What the serving process needs to follow and finish a tuning run."""
    model: str
    catalog: Path
    command: tuple[str, ...]      # the tuning process's argv (app.py tune ...)
    state_path: Path
    candidate: Path               # the file the run writes
    weights_dir: Path             # where the switch puts it, as the model's --weights auto file
    log_path: Path


class BackgroundTuner(DaemonJob):
    """`build(path)` makes the served model's embedder from a weights file (the server's own
    builder, runtime included). Use `start()`, then read `snapshot()` / `status()`."""
    thread_name = "background-tuner"


    def __init__(self, plan: TunePlan, searcher: Searcher, build: Callable[[Path], Embedder],
                 log: Callable[[str], None] | None = None):
        self.plan, self.searcher, self.build = plan, searcher, build
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._state: TuneState | None = TuneState.read(plan.state_path)
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    # -- what the surfaces read ------------------------------------------------------------
    def snapshot(self) -> dict | None:
        """The state for /api/health and tune-status (None before the run writes one)."""
        state = self._current()
        return state.snapshot() if state is not None else None

    def status(self) -> str | None:
        """One sentence for the pages: what tuning is doing, or what it did."""
        state = self._current()
        if state is None:
            return "Learning your catalog: starting."
        line = state.line()
        return line[0].upper() + line[1:] + "."

    def _current(self) -> TuneState | None:
        with self._lock:
            return self._state

    def _set(self, state: TuneState | None) -> None:
        with self._lock:
            self._state = state

    # -- the run --------------------------------------------------------------------------
    def start(self) -> BackgroundTuner:
        self._start_thread()
        return self

    def _run(self) -> None:
        try:
            state = self._ours(TuneState.read(self.plan.state_path))
            # A run that failed is tried again at each start (a full disk, say, may be fixed since).
            if state is None or state.phase == FAILED or not (state.ended or state.phase == READY):
                state = self._child()
            if state is not None and state.phase == READY:
                state = self._switch(state)
            if state is not None:
                self.log(f"tuning: {state.line()}")
        except Exception as exc:  # the server keeps answering with the model it has; said once
            failed = (self._current() or TuneState(self.plan.model, str(self.plan.catalog.resolve())))
            self._set(failed.moved(phase=FAILED, reason=f"{type(exc).__name__}: {exc}"))
            self.log(f"tuning: {self._current().line()}")

    def _ours(self, state: TuneState | None) -> TuneState | None:
        """The state if it is of this catalog and model (else tuning starts over)."""
        if state is None or state.catalog != str(self.plan.catalog.resolve()) or state.model != self.plan.model:
            return None
        self._set(state)
        return state

    def _child(self) -> TuneState | None:
        """Run the tuning process to its end, following its state file; its last state."""
        self.plan.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.plan.log_path, "ab") as out:
            self._process = subprocess.Popen(self.plan.command, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        _lower_priority(self._process.pid)
        self.log(f"tuning {self.plan.model} on {self.plan.catalog} in the background (process "
                 f"{self._process.pid}, log {self.plan.log_path})")
        while True:
            ended = self._process.poll() is not None
            self._ours(TuneState.read(self.plan.state_path))
            if ended:
                break
            time.sleep(POLL_SECONDS)
        state = self._current()
        if self._process.returncode != 0 and (state is None or not state.ended and state.phase != READY):
            reason = f"the tuning process ended with code {self._process.returncode}; see {self.plan.log_path}"
            state = (state or TuneState(self.plan.model, str(self.plan.catalog.resolve()))).moved(
                phase=FAILED, reason=reason)
            self._set(state)
        return state

    def _switch(self, state: TuneState) -> TuneState:
        """The tuned file becomes the model's --weights auto file, its index the live one, and
        the Searcher serves both from the next request on."""
        final = tuned_file(self.plan.model, self.plan.weights_dir)
        _copy_atomically(self.plan.candidate, final)
        embedder = self.build(final)
        embedder.warm_up()
        lock = _index_lock(self.searcher.client)  # no indexer writes either collection meanwhile
        try:
            self.searcher.switch(self.plan.model, embedder, TUNED_SLOT)
            bump_generation(self.searcher.client)  # other processes on the folder reopen it
        finally:
            lock.release()
        switched = state.moved(phase=SWITCHED, weights=str(final)).write(self.plan.state_path)
        self._set(switched)
        return switched

    def stop(self) -> None:
        """End the child (tests, and a server shutting down cleanly)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait()


def _index_lock(client) -> IndexLock:
    """The folder's index lock, waited for (the server's own background indexing may hold it)."""
    while True:
        try:
            return IndexLock.of(client).acquire()
        except IndexLocked:
            time.sleep(POLL_SECONDS)


def _lower_priority(pid: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, NICENESS)
    except OSError:  # gone already, or not allowed: it runs at the server's priority
        pass


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def tune_command(argv: Sequence[str]) -> tuple[str, ...]:
    """This interpreter running `argv` (app.py's tune command and its flags)."""
    return (sys.executable, *argv)


__all__ = ["BackgroundTuner", "TunePlan", "tune_command", "NICENESS", "POLL_SECONDS"]
