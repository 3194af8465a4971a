"""glibc malloc settings for a process that runs for months.

glibc gives a thread that allocates while another holds the main arena an arena of its own, up to eight per core.
The refresh threads (``asyncio.to_thread``) spread their short-lived allocations over those arenas, and each keeps
the pages it freed: in the soak the exporter's RSS crept up by 7 to 13 MiB an hour while the Python heap traced by
tracemalloc stayed flat (49 MB, 12,000 objects, over 24 minutes). Two arenas (what ``MALLOC_ARENA_MAX=2`` does) and
a periodic ``malloc_trim``, which hands freed pages in every arena back to the kernel, keep RSS where the heap is.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os
import platform

_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2
TRIM_EVERY = 300.0  # seconds


@functools.cache  # loaded once, not at each trim
def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_arenas() -> bool:
    """Call before any thread starts. An explicit MALLOC_ARENA_MAX in the environment is left to win."""
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(ARENAS)))


def trim() -> bool:
    """Give freed pages back to the kernel; True if some were."""
    libc = _glibc()
    return bool(libc.malloc_trim(ctypes.c_size_t(0))) if libc is not None else False


async def trim_forever(every: float = TRIM_EVERY) -> None:
    while True:
        await asyncio.sleep(every)
        trim()
