"""Work a serving process runs beside its requests, once, in a daemon thread (background
indexing, background tuning): started, then waited for, the same way."""
from __future__ import annotations

import threading


class DaemonJob:
    """Subclasses define `_run` (the work; it reports its own failures) and `thread_name`."""
    thread_name = "background-job"
    _thread: threading.Thread | None = None

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job has ended (finished or failed), or was never started."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _run(self) -> None:
        raise NotImplementedError


__all__ = ["DaemonJob"]
