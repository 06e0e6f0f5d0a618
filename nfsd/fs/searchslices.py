"""A search for an unplaced handle runs in short slices, never holding the event loop long.

A call whose handle needs a walk of the export (``LocalFS._find``) walks for at most one
slice (``SLICE_SECONDS``); if that does not end the search the call is held
(``NfsPending``: the dispatcher answers it when the walk has met the inode or ended,
nfsd/rpc/held.py; a call it may not hold answers NFS3ERR_JUKEBOX, and the Linux client
retries after 5 s) and the walk goes on in the background, one slice per turn of the event
loop (``call_soon``: every other call waiting meanwhile is served between two slices), as
long as ``SearchGate`` grants walking time, else after the wait it names (``call_later``).
A call that arrives while the gate grants none joins the walk at once and is held too
(``wait_for``).  A later call is answered from the walk: its inode met
(found: the node; the walk records where it met every directory and, up to PLACES_MAX, every
other entry), or, for an inode looked for while the walk ran, absent once the walk ended
(STALE; a directory it could not read counts as walked, as it always did) -- never STALE
because a deadline cut the walk.

One walk per export and worker process at a time (``ExportWalk``: at most 18 directory
descriptors open, whatever the export's shape); a new one starts when a handle needs an
answer the last one cannot give.  A walk whose wanted inodes are all placed pauses (one
asked about later resumes it); one not asked about for RESULT_SECONDS is closed.
"""
from __future__ import annotations

import asyncio
import os
import threading
from typing import Callable, Generic, NoReturn, TypeVar

from protocol.nfs3 import nfsstat3

from ..nfs3.errors import NfsError, NfsPending
from ..rpc.held import Waiting
from .searchgate import SearchGate
from .searchwalk import ExportWalk

SLICE_SECONDS = 0.02  # the longest one call, or one background turn, walks for
RESULT_SECONDS = 60.0  # how long a finished walk answers for (the client retries after 5 s)
# Directories per slice, 0 for no such bound: the server tests make a slice one directory
SLICE_DIRS = int(os.environ.get("PYSFSD_SEARCH_SLICE_DIRS", "0") or 0)

N = TypeVar("N")
Opened = Callable[[int, os.stat_result, int, bytes], N]  # (O_PATH fd, its stat, parent, name)


class _Absent:
    pass


ABSENT = _Absent()  # ``known``: a finished walk proved the inode is not in the export


class SearchSlices(Generic[N]):
    """The walk of one export in one process (see the module); ``opened`` makes the node of
    an inode the walk found, ``repair`` records the directories it met."""

    def __init__(self, root_fd: int, root_ino: int, gate: SearchGate, opened: Opened[N],
                 repair: Callable[[list[tuple[int, int, bytes]]], None], slice_dirs: int = SLICE_DIRS) -> None:
        self.root_fd, self.root_ino, self.gate = root_fd, root_ino, gate
        self._opened, self._repair, self.slice_dirs = opened, repair, slice_dirs
        self._lock = threading.Lock()  # calls in the thread pool resolve handles too
        self._walk: ExportWalk | None = None
        self._used = 0.0  # when the walk was last asked about
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None  # the next background turn, and when
        self._due = 0.0
        self._repair_ratio = 0.0  # the last slice's handle-table write time per walking time
        # futures of held calls by the inode they wait for: True once the walk met it or
        # ended (run the call again), False if the walk was closed (answer JUKEBOX)
        self._waiters: dict[int, Waiting] = {}

    def known(self, ino: int) -> N | _Absent | None:
        """What the current walk tells of ``ino``: its node, ABSENT, or None (no answer)."""
        with self._lock:
            w = self._current()
            if w is None:
                return None
            self._used = self.gate.now()
            if ino in w.places:
                return self._open(w, ino)
            if w.done and ino in w.wanted and ino not in w.seen:
                return ABSENT
            return None

    def search(self, ino: int) -> N | None:
        """Walk for ``ino`` for one slice: its node, None if the walk ended without meeting
        it (STALE); ``NfsPending`` (JUKEBOX, or held) if it goes on in the background."""
        with self._lock:
            w = self._wanting(ino)
            if ino not in w.places or (found := self._open(w, ino)) is None:
                self._slice(w)
                found = self._open(w, ino) if ino in w.places else None
            if found is not None or w.done:
                return found
            self._schedule(0.0)
            raise self._pending(ino, "the search goes on")

    def wait_for(self, ino: int) -> NoReturn:
        """Look for ``ino`` too, in the background only (walks used up their share now):
        raises ``NfsPending``, answered once the walk met it or ended."""
        with self._lock:
            self._wanting(ino)
            self._schedule(self.gate.wait())
            raise self._pending(ino, "searches used up their share")

    def _wanting(self, ino: int) -> ExportWalk:
        """The walk, a new one if none is running, told to look for ``ino``."""
        self._note_loop()
        w = self._current()
        if w is None or w.done:
            if w is not None:
                w.close()
            self._walk = None
            try:
                w = self._walk = ExportWalk(self.root_fd, self.root_ino)
            except OSError as exc:  # (out of descriptors, say: not an answer)
                raise NfsError(nfsstat3.NFS3ERR_JUKEBOX, f"cannot walk the export: {exc}") from None
        self._used = self.gate.now()
        w.want(ino)
        return w

    def _pending(self, ino: int, why: str) -> NfsPending:
        """The exception that holds a call until the walk meets ``ino`` or ends."""
        return NfsPending(self._waiters.setdefault(ino, Waiting()).new(), f"inode {ino}: {why}")

    def _wake(self, w: ExportWalk | None) -> None:
        """Settle the futures of held calls whose inode ``w`` met, all if it ended (or None:
        closed, so their calls answer JUKEBOX)."""
        waiters = self._waiters
        if not waiters:
            return
        for ino in [i for i in waiters if w is None or w.done or i not in w.missing]:
            waiters.pop(ino).settle(w is not None)

    def close(self) -> None:
        with self._lock:
            self._wake(None)
            if self._walk is not None:
                self._walk.close()
                self._walk = None

    def _current(self) -> ExportWalk | None:
        w = self._walk
        if w is not None and self.gate.now() - self._used > RESULT_SECONDS:  # abandoned
            w.close()
            w = self._walk = None
            self._wake(None)
        return w

    def _open(self, w: ExportWalk, ino: int) -> N | None:
        """The node of ``ino`` where ``w`` met it; None (and looked for again) if it is no
        longer there."""
        got = w.open_place(ino)
        if got is not None:
            return self._opened(*got)
        del w.places[ino]
        if ino in w.wanted:
            w.missing.add(ino)
        return None

    def _slice(self, w: ExportWalk) -> None:
        """Walk, then record the directories met: that write took ~a third of the walking
        time again, past the slice's end (a 20 ms slice held the loop ~27 ms), so the
        walking stops early by the last slice's ratio of the two."""
        clock = self.gate.now
        started = clock()
        w.step(clock, started + SLICE_SECONDS / (1.0 + self._repair_ratio), self.slice_dirs)
        walked = clock()
        self.gate.spend(started)
        dirs = w.take_dirs()
        if dirs:
            self._repair(dirs)
            if walked > started:
                self._repair_ratio = min(1.0, (clock() - walked) / (walked - started))
        if w.done:
            self.gate.finished(w.seen if w.whole else None)
        self._wake(w)

    def _note_loop(self) -> None:
        loop = asyncio._get_running_loop()  # (None in a thread of the pool)
        if loop is not None:
            self._loop = loop

    def _schedule(self, delay: float) -> None:
        """A background turn in ``delay`` seconds (or sooner, if one is due sooner), on the
        event loop last seen (none in a test without one)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if asyncio._get_running_loop() is not loop:
            try:
                loop.call_soon_threadsafe(self._turn)  # (from the pool: it decides the rest there)
            except RuntimeError:
                pass  # closed meanwhile
            return
        due = loop.time() + delay
        if self._timer is not None:
            if self._due <= due:
                return
            self._timer.cancel()
        self._timer, self._due = loop.call_at(due, self._turn), due  # (uvloop's has no ``when``)

    def _turn(self) -> None:
        """A background slice, while someone waits for an inode the walk has not met; else
        the check that closes a walk no longer asked about."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            w = self._current()
            if w is None:
                return
            if w.done or not w.missing:
                self._schedule(RESULT_SECONDS)  # (to close it once unused)
                return
            if not self.gate.may_walk():
                self._schedule(self.gate.wait())
                return
            self._slice(w)
            self._schedule(RESULT_SECONDS if w.done else 0.0)
