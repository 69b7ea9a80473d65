"""Handing freed heap memory back to the system, and how much of it there is.

glibc keeps freed heap pages for reuse, so a process's RSS stays at its peak long after the memory was
freed: the row-major weights prepacking replaced (prepacked.py), or a server's activations after a burst
(serve/batcher.py, which calls this when idle, so a slow leak does not hide in that noise).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's `malloc_trim`; a no-op without glibc). It costs a
    few milliseconds, and the next allocations fault the pages back in."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


def available_bytes() -> int | None:
    """Memory the system can still give (Linux's MemAvailable), or None where that is not known."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
