"""``--workers N``: whether the primary's lone-burst journal holds places LMDB lacks.

The primary journals a lone burst's handle-table writes (nfsd/state/store.py) only while no
other worker serves a connection; it raises this flag, one byte of shared memory the parent
creates before forking, before it appends, and lowers it once a fold has committed them.  A
follower reads it (a byte, no system call) before it touches the handle table and, while it
is up, has the primary fold first: so a handle the primary gave out resolves in a follower
at once, and a fold never puts an older journaled write over a follower's newer one.
"""
from __future__ import annotations

import mmap
import os


class JournalFlag:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: mmap.mmap | None = None

    @classmethod
    def create(cls) -> "JournalFlag":
        fd = os.memfd_create("pysfsd-journal-flag", 0)  # not CLOEXEC: only forks use it
        os.ftruncate(fd, mmap.PAGESIZE)
        return cls(fd)

    def attach(self) -> None:
        self._map = mmap.mmap(self.fd, mmap.PAGESIZE, mmap.MAP_SHARED)

    def up(self) -> bool:
        m = self._map
        return m is not None and m[0] != 0

    def set(self) -> None:
        if self._map is not None:
            self._map[0] = 1

    def clear(self) -> None:
        if self._map is not None:
            self._map[0] = 0
