"""Directory fsyncs shared by the worker processes of ``--workers N``.

``DirSync`` lets one fsync of a directory answer every change made in it before that fsync
began, but only within one process.  Workers serving one client load change the same
directories, and each ran its own fsync cycle: the kernel wrote the directory twice as
often as for one process, and each worker's cycle answered half as many calls (load
generator, RENAME in one directory: 815 fsyncs for 25,089 calls with one worker, 1,228 for
19,006 with two).  A directory's fsync covers every change made before it began, whoever
made it, so the workers can share them like the threads of one process do.

A table in shared memory (a memfd the parent creates before forking) holds, per slot
(named by a hash of the directory's (device, inode)), the directory and the monotonic time
at which the last *completed* fsync of it began.  Before it fsyncs, a worker takes the
slot's POSIX record lock (``lockf``: held per process, so it excludes the other workers
and is released by the kernel when one dies); if meanwhile another worker's fsync that
began after the changes to be made durable has completed, it returns without one, else it
fsyncs and records when it began.  So while one worker fsyncs a directory, the other
waits for it (in a pool thread, never on the event loop) instead of writing the same
directory at the same time, and then usually needs no fsync of its own.

A record carries a check word, so a record torn by concurrent writers (two threads of one
process whose directories share a slot hold its lock together) is never taken for a
completed fsync: the worst case is an fsync not saved.  CLOCK_MONOTONIC is one clock for
every process of the machine.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
import threading
import time
from typing import Callable, Hashable

SLOTS = 4096
_RECORD = struct.Struct("=QQQQ")  # device, inode, start of the last completed fsync (ns), check
_MASK = (1 << 64) - 1


_FLOCK = struct.Struct("=hh4xqqi4x")  # struct flock on 64-bit Linux: type, whence, start, len, pid
_libc_fcntl: Callable[[int, int, bytes], int] | None
try:
    # The non-blocking lock and the unlock through ctypes.PyDLL, which keeps the GIL: they
    # never wait, and fcntl.lockf gives the GIL up around every call, so the event loop,
    # busy meanwhile, takes it and the pool thread must wait to get it back (two more
    # hand-offs, a few futex calls each, per fsync: measured under RENAME, 13-14 futex
    # calls per fsync job).  Only a lock another worker holds is waited for with lockf.
    _libc_fcntl = ctypes.PyDLL(None, use_errno=True).fcntl
    _libc_fcntl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p)
    _libc_fcntl.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - no libc fcntl: lockf for all
    _libc_fcntl = None


def _try_lock(fd: int, kind: int, slot: int) -> bool | None:
    """F_SETLK of byte ``slot`` (``kind``: F_WRLCK or F_UNLCK) keeping the GIL: True done,
    False held by another process, None: not possible here (use lockf)."""
    if _libc_fcntl is None or _FLOCK.size != 32 or not hasattr(fcntl, "F_SETLK"):
        return None
    if _libc_fcntl(fd, fcntl.F_SETLK, _FLOCK.pack(kind, os.SEEK_SET, slot, 1, 0)) == 0:
        return True
    if ctypes.get_errno() in (errno.EAGAIN, errno.EACCES):
        return False
    return None


def _check(dev: int, ino: int, began: int) -> int:
    return ((dev * 0x9E3779B97F4A7C15) ^ (ino * 0xC2B2AE3D27D4EB4F) ^ began ^ 0x5BD1E995) & _MASK


class SharedFsyncs:
    """Create in the parent (``create``), then ``attach`` in each worker after fork."""

    def __init__(self, fd: int, slots: int = SLOTS) -> None:
        self.fd, self.slots = fd, slots
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()  # this process's readers and writers of the table
        self.saved = 0    # fsyncs another worker's made unnecessary (for tests and figures)
        self.done = 0     # fsyncs made here

    @classmethod
    def create(cls, slots: int = SLOTS) -> "SharedFsyncs":
        fd = os.memfd_create("pysfsd-dirsync", 0)  # not CLOEXEC: only forks use it
        os.ftruncate(fd, slots * _RECORD.size)
        return cls(fd, slots)

    def attach(self) -> None:
        self._map = mmap.mmap(self.fd, self.slots * _RECORD.size, mmap.MAP_SHARED)

    def _slot(self, dev: int, ino: int) -> int:
        return hash((dev, ino)) % self.slots  # ints: the same hash in every process

    def _began(self, slot: int, dev: int, ino: int) -> int:
        """When the last completed fsync of (dev, ino) recorded in ``slot`` began; -1: none
        (or a record being written).  Under ``_lock``."""
        assert self._map is not None
        rdev, rino, began, check = _RECORD.unpack_from(self._map, slot * _RECORD.size)
        if rdev != dev or rino != ino or check != _check(dev, ino, began):
            return -1
        return began

    def fsync(self, key: Hashable, fsync: Callable[[], None], since: int, wait: bool = True) -> None:
        """Make durable every change to directory ``key`` (a (device, inode) pair) made
        before ``since`` (``time.monotonic_ns()``): by an fsync another worker began at or
        after ``since`` and completed, or by ``fsync()``.  ``wait``: take the slot's lock
        even if another worker holds it (a pool thread); else (the event loop) fsync
        without it rather than wait."""
        if self._map is None or not isinstance(key, tuple) or len(key) != 2:
            fsync()
            return
        dev, ino = key
        slot = self._slot(dev, ino)
        locked = _try_lock(self.fd, fcntl.F_WRLCK, slot)
        if locked is None or (locked is False and wait):
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, slot)
                locked = True
            except OSError:
                locked = False  # busy (not waiting), or no locks here: our own fsync is always right
        try:
            with self._lock:
                covered = self._began(slot, dev, ino) >= since
            if covered:
                self.saved += 1
                return
            began = time.monotonic_ns()
            fsync()
            self.done += 1
            if locked:  # unlocked, another writer may be between its fields: leave the record alone
                with self._lock:
                    if self._began(slot, dev, ino) < began:
                        _RECORD.pack_into(self._map, slot * _RECORD.size, dev, ino, began,
                                          _check(dev, ino, began))
        finally:
            if locked and not _try_lock(self.fd, fcntl.F_UNLCK, slot):
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, slot)
