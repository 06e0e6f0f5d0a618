"""Calls held until the start-up index is further along, instead of told JUKEBOX.

Until the start-up scan is done (or the pass that gives the fields a query uses), a
directory fault cannot answer from the half-built index.  It used to answer
NFS3ERR_JUKEBOX, and the Linux client waits 5 s before it retries: a user who starts the
server and at once lists ``ext:/c/`` waited a multiple of 5 s past the scan's end.  Now the
fault raises ``NfsPending`` (nfsd/rpc/held.py holds the call, within its bounds) with a
future settled the moment this process learns the index moved on (``progressed``: the
primary as each pass ends, a follower when the writer tells it); the call then runs again
and answers, or is held again if what it needs is still not ready.  Nothing is changed
before the raise on those paths (see ``SemanticFS._fault``, ``TagDirs._flush``).
"""
from __future__ import annotations

from typing import Callable

from ..nfs3.errors import NfsPending
from ..rpc.held import Waiting, settle


class IndexWaits:
    """The futures of calls waiting for the index of one export (thread-safe: a fault may
    run in the thread pool, the index moves on in the event loop)."""

    def __init__(self) -> None:
        self._waiting = Waiting()

    def pending(self, waiting: Callable[[], bool], why: str) -> NfsPending:
        """The exception that holds a call until the index moved on.  ``waiting`` is asked
        again once the future is listed: progress made between the caller's look and now
        settles it at once (else the call would sleep until the next pass, or time out)."""
        fut = self._waiting.new()
        if not waiting():
            settle(fut, True)
        return NfsPending(fut, why, ends=True)  # (a pass always ends: the longer hold)

    def progressed(self) -> None:
        """The index moved on (a pass ended, or it is ready): every waiting call runs again."""
        self._waiting.settle(True)

    def __len__(self) -> int:
        return len(self._waiting)
