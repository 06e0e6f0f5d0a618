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

``name`` being ``w<slot>`` for a worker, ``main`` for a server of one process.  With
``PYSFSD_TRACEMALLOC_FRAMES=0`` nothing is traced (calls keep their speed, so a load keeps
its rate): each signal writes the ``.json`` without the traced figures and the type counts,
with the large records' buffer pool (protocol/record.py), and ``<name>-<n>.malloc.xml``,
glibc's ``malloc_info``: the free chunks by size, which tells a heap that grew for live
memory from one fragmented around it.  Unset, this module costs one environment look at
start.
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import json
import logging
import os
import signal
import tracemalloc
from pathlib import Path
from typing import Any

from protocol.record import buffer_stats

from .heaptrim import c_library

ENV = "PYSFSD_TRACEMALLOC"
FRAMES_ENV = "PYSFSD_TRACEMALLOC_FRAMES"
#: frames kept per traced allocation: enough to see who called the allocating line
FRAMES = 8
#: types listed in the counts, most numerous first
TOP_TYPES = 60

log = logging.getLogger("pysfsd.memtrace")


_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
              "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def mallinfo() -> dict[str, int]:
    """glibc's heap figures (``arena`` bytes from the system, ``uordblks`` in use,
    ``fordblks`` free, ``hblkhd`` in mmapped blocks); empty where there is no mallinfo2."""
    try:
        call = c_library().mallinfo2
    except (OSError, AttributeError):
        return {}
    call.restype = _MallInfo2
    info = call()
    return {name: int(getattr(info, name)) for name in _MALLINFO2}


def write_malloc_info(path: Path) -> bool:
    """glibc's ``malloc_info`` (XML: each arena's free chunks by size, its system bytes)
    into ``path``; False where there is none."""
    try:
        libc = c_library()
        fopen, malloc_info, fclose = libc.fopen, libc.malloc_info, libc.fclose
    except (OSError, AttributeError):
        return False
    fopen.restype = ctypes.c_void_p
    malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    fclose.argtypes = [ctypes.c_void_p]
    stream = fopen(os.fsencode(path), b"w")
    if not stream:
        return False
    try:
        return malloc_info(0, stream) == 0
    finally:
        fclose(stream)


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
        figures: dict[str, Any] = {"pid": os.getpid(), "mallinfo": mallinfo(), "buffers": buffer_stats()}
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(f"{stem}.tracemalloc")
            figures["traced"], figures["traced_peak"] = tracemalloc.get_traced_memory()
            figures["types"] = type_counts()
        else:
            write_malloc_info(Path(f"{stem}.malloc.xml"))
        Path(f"{stem}.json").write_text(json.dumps(figures, indent=1))
        return stem


def _frames(text: str) -> int:
    """``PYSFSD_TRACEMALLOC_FRAMES`` as a count; a value that is none (a typo in a debugging
    variable must not stop a worker) gives the default, and the log says so."""
    try:
        frames = int(text)
    except ValueError:
        frames = -1
    if frames < 0:
        log.warning("%s=%r is not a count of frames (0 or more): %d used", FRAMES_ENV, text, FRAMES)
        return FRAMES
    return frames


def install(loop: asyncio.AbstractEventLoop, name: str) -> MemTrace | None:
    """With ``PYSFSD_TRACEMALLOC`` set: start tracing (unless ``PYSFSD_TRACEMALLOC_FRAMES``
    is 0) and answer SIGUSR2 with a snapshot."""
    directory = os.environ.get(ENV, "")
    if not directory:
        return None
    frames = _frames(os.environ.get(FRAMES_ENV) or str(FRAMES))
    if frames > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    trace = MemTrace(Path(directory), name)
    loop.add_signal_handler(signal.SIGUSR2, trace.take)
    return trace
