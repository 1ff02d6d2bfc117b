"""Per-stage wall-clock totals, so a run can say where its time went."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager


class StageTimer:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.seconds[name] += elapsed
                self.calls[name] += 1

    def add(self, seconds: dict[str, float]) -> None:
        """Stage times measured elsewhere (a decoding worker process)."""
        with self._lock:
            for name, value in seconds.items():
                self.seconds[name] += value
                self.calls[name] += 1

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1]))
