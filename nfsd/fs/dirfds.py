"""A bounded set of read-only directory descriptors for ``LocalFS.fsync_dir``.

A directory fsync needs a descriptor fsync accepts; a node's own ``fd`` is ``O_PATH``, which
fsync refuses (EBADF).  Opening ``"."`` through it, fsyncing and closing costs three system
calls that each release and take back the GIL: in the pool thread that runs the fsync job,
each is a hand-off with the event loop (futex calls, docs/design.rst "directory fsync's
hand-offs").  Kept open here, a directory costs one fsync.

Bounded (``LIMIT``, least recently used out) so that an export with 100k directories does not
hold 100k descriptors.  Keyed by the node, which holds its inode open, so the number cannot
name another directory meanwhile.  A descriptor is taken out while it is being fsynced and
put back after, so that no other thread closes it in between (a closed number could be
reused by an unrelated open).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable, Hashable

#: descriptors kept: the directories changed lately (a burst's, a few busy ones)
LIMIT = 64


class DirFds:
    def __init__(self, limit: int | None = None) -> None:
        self._limit = LIMIT if limit is None else limit
        self._lock = threading.Lock()
        self._fds: OrderedDict[Hashable, int] = OrderedDict()

    def fsync(self, key: Hashable, open_fd: Callable[[], int]) -> None:
        """fsync the directory ``key`` through its kept descriptor, or one ``open_fd()``
        opens (then kept)."""
        with self._lock:
            fd = self._fds.pop(key, -1)
        if fd < 0:
            fd = open_fd()
        try:
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            if key in self._fds:  # another thread put its own back meanwhile
                extra = fd
            else:
                self._fds[key] = fd
                extra = self._fds.popitem(last=False)[1] if len(self._fds) > self._limit else -1
        if extra >= 0:
            os.close(extra)

    def drop(self, key: Hashable) -> None:
        """Close ``key``'s descriptor, if kept (its directory is gone)."""
        with self._lock:
            fd = self._fds.pop(key, -1)
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = list(self._fds.values()), OrderedDict()
        for fd in fds:
            os.close(fd)

    def __len__(self) -> int:
        return len(self._fds)
