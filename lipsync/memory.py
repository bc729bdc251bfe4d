"""Giving freed heap back to the system: one place for glibc's ``malloc_trim`` and its arena limit.

A request or a live session allocates and frees a few hundred MB of frames,
codec buffers and graphs from several threads. glibc keeps freed memory in
per-thread arenas, so a long-running process's resident size creeps up from
one request to the next although nothing is leaked. Fewer arenas keep the free
memory together (:func:`limit_malloc_arenas`), and :func:`release_memory` hands
it back. Elsewhere than glibc only the garbage collection runs.
"""

from __future__ import annotations

import ctypes
import gc

__all__ = ["release_memory", "limit_malloc_arenas"]

#: glibc's mallopt parameter for the number of malloc arenas
M_ARENA_MAX = -8

_libc: list = []


def _glibc():
    if not _libc:
        try:
            _libc.append(ctypes.CDLL("libc.so.6"))
        except OSError:
            _libc.append(None)
    return _libc[0]


def release_memory(collect: bool = True) -> None:
    """Collect reference cycles (when ``collect``), then return the heap's free pages to the system."""
    if collect:
        gc.collect()
    libc = _glibc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)


def limit_malloc_arenas(n: int = 2) -> None:
    """Let glibc keep at most ``n`` malloc arenas (it makes up to 8 per core otherwise)."""
    libc = _glibc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is not None:
        mallopt(M_ARENA_MAX, n)
