"""Debugging only: where a worker's memory goes, on demand (``PYSFSD_TRACEMALLOC=DIR``).

A slow growth of anonymous memory under a long load cannot be told from the outside:
VmRSS mixes the Python heap with LMDB's map and page-cache pages, and RssAnon mixes live
objects with free heap glibc keeps.  With the variable set, each server process starts
``tracemalloc`` when it starts serving (it costs CPU and memory: never in production) and,
on ``SIGUSR2``, writes into DIR

* ``<name>-<n>.tracemalloc``: a ``tracemalloc`` snapshot (compare two with
  ``Snapshot.load(b).compare_to(Snapshot.load(a), "lineno")``), and
* ``<name>-<n>.json``: the traced total, glibc's ``mallinfo2`` (heap in use and free) and
  the live objects counted by type (``gc.get_objects``),

``name`` being ``w<slot>`` for a worker, ``main`` for a server of one process.  Unset, this
module costs one environment look at start.
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import gc
import json
import os
import signal
import tracemalloc
from pathlib import Path
from typing import Any

ENV = "PYSFSD_TRACEMALLOC"
#: frames kept per traced allocation: enough to see who called the allocating line
FRAMES = 8
#: types listed in the counts, most numerous first
TOP_TYPES = 60


_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
              "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def mallinfo() -> dict[str, int]:
    """glibc's heap figures (``arena`` bytes from the system, ``uordblks`` in use,
    ``fordblks`` free, ``hblkhd`` in mmapped blocks); empty where there is no mallinfo2."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        call = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    call.restype = _MallInfo2
    info = call()
    return {name: int(getattr(info, name)) for name in _MALLINFO2}


def type_counts(limit: int = TOP_TYPES) -> dict[str, int]:
    """Live objects the collector tracks, counted by type name, the most numerous first."""
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return dict(counts.most_common(limit))


class MemTrace:
    """Writes one snapshot pair per ``take``; numbered so that several can be compared."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name, self.taken = directory, name, 0

    def take(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"{self.name}-{self.taken}"
        self.taken += 1
        tracemalloc.take_snapshot().dump(f"{stem}.tracemalloc")
        current, peak = tracemalloc.get_traced_memory()
        figures: dict[str, Any] = {"pid": os.getpid(), "traced": current, "traced_peak": peak,
                                   "mallinfo": mallinfo(), "types": type_counts()}
        Path(f"{stem}.json").write_text(json.dumps(figures, indent=1))
        return stem


def install(loop: asyncio.AbstractEventLoop, name: str) -> MemTrace | None:
    """With ``PYSFSD_TRACEMALLOC`` set: start tracing and answer SIGUSR2 with a snapshot."""
    directory = os.environ.get(ENV, "")
    if not directory:
        return None
    if not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)
    trace = MemTrace(Path(directory), name)
    loop.add_signal_handler(signal.SIGUSR2, trace.take)
    return trace
