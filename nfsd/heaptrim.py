"""Give the heap a load left behind back to the system once the server is quiet.

``tune_malloc`` (nfsd/cli/main.py) keeps freed memory in the process on purpose: 1 MiB
READ/WRITE buffers come from the heap and glibc returns nothing below 256 MiB of free top,
so a buffer's pages stay mapped and the next record does not fault them in again.  After
a load, though, that memory stayed for good: a worker that served 1 MiB READs and WRITEs
kept 40-50 MiB of free heap at rest.  So once a worker has been quiet for a whole period
after being busy, it calls ``malloc_trim(0)`` once: free pages anywhere in the heap and its
top (the threads share the one arena, ``tune_malloc``: a second arena's top is not
trimmed; figures in docs/design.rst, "Several worker processes").  Quiet is told
by the process's own CPU time, which costs one clock read per period and nothing on the
path of a call; the next burst's first records pay the page faults again, once.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Any, Callable

#: a period is quiet when the process used at most this share of one core in it (an idle
#: worker's timers take well under 1 %)
QUIET_SHARE = 0.02


_libc: Any = None  # looked up once: ``find_library`` runs ldconfig in a child process
_malloc_trim: Any = None  # libc's, looked up at the first trim; False where there is none


def c_library() -> Any:
    """The C library (ctypes), loaded at the first call and shared: the heap's trim here,
    its figures in nfsd/memtrace.py.  Raises OSError where it cannot be loaded."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return _libc


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (``malloc_trim(0)``); elsewhere than
    glibc, nothing.  Also called after a large query-directory fault (nfsd/fs/semantic.py)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = c_library().malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to give back this way
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


class HeapTrim:
    """Told at the end of every period (``look``); trims once per quiet spell that follows
    a busy one, never twice in a row."""

    def __init__(self, cpu: Callable[[], float] = time.process_time,
                 trim: Callable[[], None] = trim_heap) -> None:
        self._cpu, self._trim = cpu, trim
        self._last = cpu()
        self._busy = True  # start-up (the exports' first scan) leaves garbage too

    def look(self, period: float) -> bool:
        """Whether it trimmed now (``period``: seconds since the last look)."""
        now = self._cpu()
        used, self._last = now - self._last, now
        if used > QUIET_SHARE * period:
            self._busy = True
            return False
        if not self._busy:
            return False
        self._busy = False
        self._trim()
        return True
