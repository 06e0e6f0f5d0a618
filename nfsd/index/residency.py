"""Keeping LMDB's file mapping out of the resident set during scans.

LMDB reads through a shared, read-only mapping of its data file, and a scan's inserts walk
the B-trees through it: every page touched stays mapped, so the process's RSS grows with the
size of the database (about 450 bytes per file) although those pages are page cache -- clean,
shared with every other process, and never copied.  After each batch the scan drops the
mapping's page-table entries (``madvise(MADV_DONTNEED)``): the pages stay in the page cache
(and on disk), the next access costs a minor fault, and the RSS shows what the process really
holds.  Nothing is lost: LMDB never writes through this mapping (no ``MDB_WRITEMAP``).
Queries map pages too (a million-result one, nearly the whole database): after a large
fault, and twice a second, the mapping is dropped once the process's file-backed resident
set (``RssFile``) passes ``MAPPED_MAX`` (``trim_over``), so it stays bounded without making
every query pay minor faults for what the previous one mapped.
"""
from __future__ import annotations

import ctypes
import logging
import os
import time

import lmdb

log = logging.getLogger("pysfsd.index")
MADV_DONTNEED = 4
MAPPED_MAX = 96 << 20  # RssFile beyond which queries' mapped pages are dropped


def rss_file() -> int:
    """The process's file-backed resident bytes (0 where /proc does not tell)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"RssFile:"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class MapTrimmer:
    def __init__(self, env: lmdb.Environment) -> None:
        path = os.path.realpath(env.path())
        self._data = os.path.join(path, "data.mdb") if os.path.isdir(path) else path
        self._failed = False
        self._last = 0.0

    def trim_over(self, limit: int = MAPPED_MAX) -> bool:
        """``trim`` if the file-backed resident set is over ``limit``; True if it was."""
        if self._failed or rss_file() <= limit:
            return False
        self.trim()
        return True

    def trim(self) -> None:
        """Drop the mapping's pages from the resident set (at most once a second)."""
        now = time.monotonic()
        if self._failed or now - self._last < 0.0:
            return
        self._last = now
        try:
            with open("/proc/self/maps") as maps:
                regions = [line.split()[0] for line in maps if line.rstrip("\n").endswith(self._data)]
        except OSError:
            regions = []
        for region in regions:
            start, end = (int(x, 16) for x in region.split("-"))
            if _libc.madvise(start, end - start, MADV_DONTNEED) != 0:
                self._failed = True  # harmless: the pages just stay mapped
                log.debug("madvise on the LMDB map failed: %s", os.strerror(ctypes.get_errno()))
