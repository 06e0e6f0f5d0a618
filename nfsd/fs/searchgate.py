"""What a handle the handle table cannot place may cost: a bounded share of the event loop.

A handle whose recorded place is gone (its file removed or moved behind the server's back,
its tombstone purged, or never recorded) is looked for by a walk of the export, in slices on
the event loop (``LocalFS._search``, nfsd/fs/searchslices.py).  Without a gate a client
sending handles of ever-new inode numbers made *every* call walk the whole export (the
per-handle memory of stale handles does not help against new numbers).  Two rules bound it:

* a walk that went through the whole export leaves the set of inode numbers it met (up to
  ``SNAPSHOT_MAX``): for ``SNAPSHOT_SECONDS`` after it ended, and while no live place was
  dropped since (``moved``: the index saw an entry go behind the server's back), a number
  not in it is not in the export, so its handle is STALE without a walk (a handle with a
  live record is always walked for: its place may be newer than the walk; one the server
  gave out with no record, on a full store, for a file made behind its back since the walk
  passed its directory, could be told STALE for those 5 s);
* walks take at most ``SHARE`` of the time, after a first ``BURST`` seconds of them (a
  credit of walking time, charged slice by slice and refilled at ``SHARE`` per second: a
  few files moved behind the server's back are each found at once); a handle that would
  need a walk with no credit left is answered NFS3ERR_JUKEBOX (try again later: the file
  may only have moved), never a false STALE.  A quarter: a slice holds the loop at most
  ``SLICE_SECONDS`` (20 ms), so the share only bounds the throughput walks take from the
  other clients; at a tenth a walk of ~2 s of CPU took ~20 s.
"""
from __future__ import annotations

import time
from typing import Callable

SHARE = 0.25
BURST = 0.5
SNAPSHOT_SECONDS = 5.0
SNAPSHOT_MAX = 1_000_000


class SearchGate:
    """Decides whether a walk of the export may look for an inode (see the module)."""

    def __init__(self, share: float = SHARE, clock: Callable[[], float] = time.monotonic,
                 burst: float = BURST) -> None:
        self.share, self.burst = share, burst
        self._now = clock
        self._credit, self._credit_at = burst, clock()  # seconds of walking allowed, as of when
        self._seen: set[int] | None = None  # the last complete walk's inode numbers
        self._seen_at = 0.0

    def known_absent(self, ino: int) -> bool:
        """Whether the last complete walk, still current, proves ``ino`` is not in the export."""
        seen = self._seen
        if seen is None:
            return False
        if self._now() - self._seen_at > SNAPSHOT_SECONDS:
            self._seen = None  # let its memory go (a walk's numbers: up to tens of MB)
            return False
        return ino not in seen

    def _refill(self, now: float) -> None:
        self._credit = min(self.burst, self._credit + (now - self._credit_at) * self.share)
        self._credit_at = now

    def may_walk(self) -> bool:
        """Whether a walk may start now (walks have not used up their share)."""
        self._refill(self._now())
        return self._credit > 0

    def wait(self) -> float:
        """Seconds until walks may go on (0 if they may now)."""
        self._refill(self._now())
        return max(0.0, -self._credit / self.share) + 0.001

    def spend(self, started: float) -> None:
        """A slice of walking that began at ``started`` (this clock) ended: charge it."""
        end = self._now()
        self._refill(end)
        self._credit -= end - started

    def finished(self, seen: set[int] | None) -> None:
        """A walk ended; ``seen``: every inode number it met if it went through the whole
        export, else None.  Its numbers answer from now (a walk in slices may take long)."""
        if seen is not None and len(seen) <= SNAPSHOT_MAX:
            self._seen, self._seen_at = seen, self._now()
        else:  # (an older walk's numbers are not this one's: never answer from them)
            self._seen = None

    def now(self) -> float:
        return self._now()

    def moved(self) -> None:
        """A live place was dropped (an entry went behind the server's back): the last walk
        no longer tells where everything is."""
        self._seen = None
