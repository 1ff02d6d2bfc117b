"""The process's memory, as glibc's malloc keeps it: handing freed memory back to the system,
and bounding the arenas of a serving process. No-ops where there is no glibc."""
from __future__ import annotations

import functools

# glibc's mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
SERVING_ARENAS = 2
SERVING_MMAP_THRESHOLD = 8 * 1024 * 1024


@functools.cache
def _libc():
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def bound_malloc_for_serving(arenas: int = SERVING_ARENAS, mmap_threshold: int = SERVING_MMAP_THRESHOLD) -> bool:
    """Memory that comes back after a burst. A serving process decodes photos on many threads
    (Starlette's pool, the chat's queue): by default glibc may give each its own arena (8 per
    core), and after a large block is freed it raises its mmap threshold (up to 32 MB), so later
    decode buffers come from the arenas' heaps, and what a burst frees there stays resident.
    At most `arenas` arenas for the threads started from now on, and a fixed threshold (blocks
    of `mmap_threshold` bytes or more are mapped apart and unmapped when freed): bench/soak.py
    measures the memory after a burst. False where there is no glibc."""
    try:
        libc = _libc()
        return bool(libc.mallopt(_M_ARENA_MAX, arenas)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    except (OSError, AttributeError):
        return False


def return_freed_memory() -> None:
    """Hand what the process freed back to the system: glibc keeps freed blocks, and after a
    burst (big photos decoded, a million products' metadata read through short-lived dicts) the
    process stayed at its peak."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


__all__ = ["bound_malloc_for_serving", "return_freed_memory", "SERVING_ARENAS", "SERVING_MMAP_THRESHOLD"]
