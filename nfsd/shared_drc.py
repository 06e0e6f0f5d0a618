"""The duplicate-request cache shared by the worker processes of ``--workers N``.

A client retransmits a call it got no reply to, and after a reconnect (or over UDP, or
with ``nconnect``) the retransmission may reach another worker than the original.  So the
table lives in one shared memory file (a memfd the parent creates before forking) that
every worker maps: fixed slots of ``SLOT`` bytes, found by the key's digest with a short
linear probe, the least recently stamped slot of the probe window reused first.  A reply
longer than a slot is not kept (non-idempotent replies are a few hundred bytes: CREATE's is
the largest, about 300).

Mutual exclusion between processes is an ``flock`` on each worker's own open file
description of the memfd: the kernel drops it when its holder dies, kill -9 included, so a
dead worker cannot wedge the others (a semaphore in the shared memory would stay taken).
A call left in progress by a worker that died is served again when retransmitted.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import zlib

from .drc import CHECKSUM_BYTES, IN_PROGRESS

SLOTS = 4096
SLOT = 1024
PROBE = 4
_HEAD = struct.Struct("=16sBxxxiIQ")  # digest, state, owner pid, reply length, stamp
_STAMP = struct.Struct("=Q")
_STAMP_AT = _HEAD.size - _STAMP.size
_KEY = struct.Struct("=qII")
_FREE, _BUSY, _DONE = 0, 1, 2
_BASE = 64                            # bytes 0..7: the stamp counter
MAX_REPLY = SLOT - _HEAD.size


class SharedDuplicateRequestCache:
    """``DuplicateRequestCache``'s interface over shared memory.  Create it in the parent
    (``create``), then call ``attach`` in each worker after fork."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd, self.slots = fd, slots
        self._map: mmap.mmap | None = None
        self._lock_fd = -1
        self._thread_lock = threading.Lock()
        self._pid = os.getpid()
        self._probe = [tuple(_BASE + ((start + i) % slots) * SLOT for i in range(PROBE)) for start in range(slots)]
        self._mine: dict[bytes, int] = {}  # key -> its slot, from begin to finish

    @classmethod
    def create(cls, slots: int = SLOTS) -> "SharedDuplicateRequestCache":
        fd = os.memfd_create("pysfsd-drc", 0)  # not CLOEXEC: only forks use it, never exec
        os.ftruncate(fd, _BASE + slots * SLOT)
        return cls(fd, slots)

    def attach(self) -> None:
        """In a worker: map the table and open a file description of our own to lock."""
        self._map = mmap.mmap(self.fd, _BASE + self.slots * SLOT, mmap.MAP_SHARED)
        self._lock_fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDWR | os.O_CLOEXEC)
        self._pid = os.getpid()

    @staticmethod
    def key(host: str, xid: int, prog: int, vers: int, proc: int, args: bytes | memoryview) -> bytes:
        """The same fields as ``DuplicateRequestCache.key`` (the client's address, not its
        port: a retransmission on a new connection comes from another port) in 16 bytes:
        Python's hash of them, the same in every worker (forks of one interpreter share its
        hash seed), then the xid and the checksum themselves."""
        crc = zlib.crc32(args[:CHECKSUM_BYTES])
        return _KEY.pack(hash((host, xid, prog, vers, proc, crc, len(args))), xid & 0xFFFFFFFF, crc)

    def _lock(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def _unlock(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _find(self, m: mmap.mmap, key: bytes) -> tuple[int, int]:
        """(offset of the slot holding ``key`` or -1, offset of the slot to reuse)."""
        start = _KEY.unpack_from(key)[0] % self.slots
        offsets = self._probe[start]
        for off in offsets:
            if m[off:off + 16] == key and m[off + 16] != _FREE:
                return off, off
        victim, best = -1, -2
        for off in offsets:  # a free slot first, else the least recently stamped
            rank = -1 if m[off + 16] == _FREE else _STAMP.unpack_from(m, off + _STAMP_AT)[0]
            if best == -2 or rank < best:
                victim, best = off, rank
                if rank == -1:
                    break
        return -1, victim

    def _stamp(self, m: mmap.mmap) -> int:
        n: int = _STAMP.unpack_from(m, 0)[0] + 1
        _STAMP.pack_into(m, 0, n)
        return n

    def begin(self, key: bytes) -> object | None:
        """None if the call is new (now marked in progress by us); else IN_PROGRESS or the
        cached reply bytes."""
        m = self._map
        assert m is not None, "attach() first"
        self._lock()
        try:
            off, victim = self._find(m, key)
            if off >= 0:
                _, state, pid, length, _ = _HEAD.unpack_from(m, off)
                if state == _DONE:
                    _STAMP.pack_into(m, off + _STAMP_AT, self._stamp(m))
                    return m[off + _HEAD.size: off + _HEAD.size + length]
                if pid == self._pid or _alive(pid):
                    return IN_PROGRESS
                victim = off  # its worker died: serve the retransmission
            _HEAD.pack_into(m, victim, key, _BUSY, self._pid, 0, self._stamp(m))
            if len(self._mine) > 4 * self.slots:
                self._mine.clear()  # calls that never finished (cannot happen: a bound anyway)
            self._mine[key] = victim
            return None
        finally:
            self._unlock()

    def finish(self, key: bytes, reply: bytes | None) -> None:
        m = self._map
        assert m is not None, "attach() first"
        off = self._mine.pop(key, -1)
        if off < 0:
            return
        self._lock()
        try:
            digest, state, pid, _, stamp = _HEAD.unpack_from(m, off)
            if digest != key or state != _BUSY or pid != self._pid:
                return  # pushed out meanwhile
            if reply is None or len(reply) > MAX_REPLY:
                m[off + 16] = _FREE
                return
            m[off + _HEAD.size: off + _HEAD.size + len(reply)] = reply
            _HEAD.pack_into(m, off, key, _DONE, pid, len(reply), stamp)
        finally:
            self._unlock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
