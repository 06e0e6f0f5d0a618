"""Group commit of directory fsyncs.

NFSv3 wants a namespace change (CREATE, REMOVE, RENAME...) on stable storage before its reply,
so every such call fsyncs its directory (``LocalFS.fsync_dir``).  A burst of pipelined creates
in one directory would pay one fsync each, one after another; but an fsync that *begins* after
a change was made covers that change too.  So callers queue per directory: whoever holds the
directory's turn fsyncs once for every change made before it began, and the callers whose
changes that fsync covered return without an fsync of their own.
"""
from __future__ import annotations

import threading
from typing import Callable


class _Dir:
    __slots__ = ("turn", "changes", "synced", "users")

    def __init__(self) -> None:
        self.turn = threading.Lock()  # one fsync of this directory at a time
        self.changes = 0              # changes reported so far (tickets handed out)
        self.synced = 0               # every change up to this ticket is durable
        self.users = 0                # callers inside ``sync`` (the entry goes when none is)


class DirSync:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[int, _Dir] = {}

    def sync(self, key: int, fsync: Callable[[], None]) -> None:
        """Return once a change already made in directory ``key`` is durable: after an
        ``fsync()`` that began after it, this caller's own or another's."""
        with self._lock:
            d = self._dirs.get(key)
            if d is None:
                d = self._dirs[key] = _Dir()
            d.users += 1
            d.changes += 1
            ticket = d.changes
        try:
            with d.turn:
                if d.synced >= ticket:
                    return  # an fsync that began after this change covered it
                with self._lock:
                    upto = d.changes  # every change with a ticket up to here is made
                fsync()
                d.synced = upto
        finally:
            with self._lock:
                d.users -= 1
                if not d.users:
                    del self._dirs[key]
