"""Directory fsyncs shared by worker processes (``--workers N``): a group commit across them.

Each worker's ``DirSync`` runs one fsync job at a time and lets the bursts served meanwhile
join the next, but two workers changing one directory (a client's connections spread over
both) fsynced it each for itself: twice the fsyncs of one worker for the same calls (each an
``io_submit``, its completion and the jobs' bookkeeping: 20-30 % of a follower's CPU under
REMOVE load), and each worker's replies waited for its own.  Yet an fsync that *began* after
a change covers it, whichever process made it.  So, per directory, this table in shared
memory (made by the parent, inherited by every worker) says which worker has an fsync of it
in flight and since when, the start of each worker's last completed one, and what each
worker waits for:

- a worker about to fsync a directory another one fsyncs already does not start its own: it
  notes the time after its changes (``want``) and waits;
- when an fsync completes, its worker records its start (``done``) and wakes the waiting
  workers (an eventfd each); one whose changes came before that start replies, any other
  starts the next fsync if nobody has (or waits for the one that started meanwhile).

A reply never leaves before an fsync that began after its change has completed: the start
is read from ``CLOCK_MONOTONIC`` (one clock for every process) under the table's lock before
the fsync is submitted, a change's time after it was made, and ``done`` is written only once
the fsync succeeded.  A failed fsync covers nothing: its waiters fsync for themselves (and
meet the error themselves).  A worker that dies mid-fsync leaves its mark behind until it is
started again (``attach`` clears it), so a waiter gives up after ``WAIT_LIMIT`` and fsyncs
itself.  The lock is a POSIX record lock on the table's memfd (a microsecond or two; taken
once per fsync job and per wait, not per call; let go by the kernel if its holder dies).
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from typing import Hashable

#: directories tracked at once (hashed; a directory whose place is taken by a busy other one
#: is fsynced unshared)
ENTRIES = 256
PROBES = 4
#: a worker waiting for another's fsync fsyncs itself after this many seconds
WAIT_LIMIT = 0.5

_KEY = struct.Struct("=QQ")    # the directory: fsid, inode (0, 0: free)
_CELL = struct.Struct("=QQQ")  # per worker: began (0: none in flight), done, want (0: none)

COVERED, WAIT, START, UNSHARED = "covered", "wait", "start", "unshared"


def _key_numbers(key: Hashable) -> tuple[int, int]:
    """(fsid, inode) of a ``LocalFS.fsync_dir`` key (any other key: its hash), never (0, 0)."""
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, int) for k in key):
        a, b = key[0] & 0xFFFFFFFFFFFFFFFF, key[1] & 0xFFFFFFFFFFFFFFFF
    else:
        a, b = 1, hash(key) & 0xFFFFFFFFFFFFFFFF
    return (a, b) if (a, b) != (0, 0) else (0, 1)


class SharedFsyncs:
    """The table (module docstring): ``create`` in the parent, ``attach`` in each worker."""

    def __init__(self, fd: int, workers: int, wake_fds: list[int]) -> None:
        self.fd, self.workers, self.wake_fds = fd, workers, wake_fds
        self._entry = _KEY.size + workers * _CELL.size
        self._map: mmap.mmap | None = None
        self.slot = 0

    @classmethod
    def create(cls, workers: int) -> "SharedFsyncs":
        fd = os.memfd_create("pysfsd-fsyncs", 0)  # not CLOEXEC: only forks use it
        os.ftruncate(fd, ENTRIES * (_KEY.size + workers * _CELL.size))
        return cls(fd, workers, [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(workers)])

    def attach(self, slot: int) -> None:
        """In worker ``slot``: map the table and clear what an earlier life of this slot left."""
        self._map = mmap.mmap(self.fd, ENTRIES * self._entry, mmap.MAP_SHARED)
        self.slot = slot
        with self._locked():
            for i in range(ENTRIES):
                _CELL.pack_into(self._map, self._cell(i, slot), 0, 0, 0)

    @property
    def wake_fd(self) -> int:
        """Readable when another worker finished an fsync this one waits for."""
        return self.wake_fds[self.slot]

    # -- the table, under its lock ---------------------------------------------------------
    def _locked(self) -> "_Lock":
        return _Lock(self.fd)

    def _cell(self, entry: int, worker: int) -> int:
        return entry * self._entry + _KEY.size + worker * _CELL.size

    def _find(self, numbers: tuple[int, int]) -> int | None:
        """The entry of a directory, taken if need be (a free one, or one no worker uses)."""
        assert self._map is not None
        start = hash(numbers) % ENTRIES
        idle = None
        for p in range(PROBES):
            i = (start + p) % ENTRIES
            found = _KEY.unpack_from(self._map, i * self._entry)
            if found == numbers:
                return i
            if idle is None and all(self._cells(i, w)[0] == 0 and self._cells(i, w)[2] == 0
                                    for w in range(self.workers)):
                idle = i
        if idle is not None:
            _KEY.pack_into(self._map, idle * self._entry, *numbers)
            for w in range(self.workers):
                _CELL.pack_into(self._map, self._cell(idle, w), 0, 0, 0)
        return idle

    def _cells(self, entry: int, worker: int) -> tuple[int, int, int]:
        assert self._map is not None
        began, done, want = _CELL.unpack_from(self._map, self._cell(entry, worker))
        return began, done, want

    def claim(self, key: Hashable, need: int, force: bool = False) -> tuple[str, int]:
        """For changes made in directory ``key`` before ``need`` (monotonic ns): COVERED (an
        fsync that began after them has completed), WAIT (another worker's is in flight: this
        one is woken when it ends), START with the fsync's start time (this worker fsyncs
        now, and calls ``finished`` after), or UNSHARED (no room in the table: fsync alone).
        ``force``: no more waiting (``WAIT_LIMIT``): START unless COVERED."""
        numbers = _key_numbers(key)
        with self._locked():
            i = self._find(numbers)
            if i is None:
                return UNSHARED, 0
            cells = [self._cells(i, w) for w in range(self.workers)]
            if any(done > need for _, done, _ in cells):
                if cells[self.slot][2]:
                    self._set(i, self.slot, want=0)
                return COVERED, 0
            if not force and any(began for w, (began, _, _) in enumerate(cells) if w != self.slot):
                self._set(i, self.slot, want=max(need, cells[self.slot][2]))
                return WAIT, 0
            began = time.monotonic_ns()  # CLOCK_MONOTONIC: one clock for every process
            self._set(i, self.slot, began=began, want=0)
            return START, began

    def finished(self, key: Hashable, began: int, ok: bool) -> None:
        """This worker's fsync of ``key`` that began at ``began`` ended (``ok``: succeeded):
        recorded, and every worker waiting on the directory woken to look."""
        numbers = _key_numbers(key)
        wake: list[int] = []
        with self._locked():
            i = self._find(numbers)
            if i is None:
                return
            _, done, _ = self._cells(i, self.slot)
            self._set(i, self.slot, began=0, done=max(done, began) if ok else done)
            wake = [w for w in range(self.workers) if w != self.slot and self._cells(i, w)[2]]
        for w in wake:
            try:
                os.eventfd_write(self.wake_fds[w], 1)
            except OSError:
                pass  # (the counter is full: it is readable anyway)

    def _set(self, entry: int, worker: int, began: int | None = None, done: int | None = None,
             want: int | None = None) -> None:
        assert self._map is not None
        old = self._cells(entry, worker)
        _CELL.pack_into(self._map, self._cell(entry, worker), old[0] if began is None else began,
                        old[1] if done is None else done, old[2] if want is None else want)


class _Lock:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

