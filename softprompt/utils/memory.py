"""Handing freed heap memory back to the system, and how much of it there is.

glibc keeps freed heap pages for reuse, so a process's RSS stays at its peak long after the memory was
freed: the row-major weights prepacking replaced (prepacked.py), a server's activations after a burst
(serve/batcher.py, which calls this when idle, so a slow leak does not hide in that noise), or a sharded
base's weights gathered for one block (distributed.py).
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


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_allocations(threshold: int = 2**20) -> None:
    """Have glibc map every allocation of `threshold` bytes or more on its own, so that freeing it returns it
    to the system at once. For memory that comes and goes in large pieces, as a sharded model's gathered
    weights do block after block: the heap would keep each freed piece (glibc raises its own threshold up to
    32 MB after such frees), and the process would hold the whole model again. A no-op without glibc."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, threshold)


def _malloc_trim():
    return _libc_function("malloc_trim")


@functools.cache
def _libc_function(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
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
