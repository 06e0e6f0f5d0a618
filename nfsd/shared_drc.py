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
import hashlib
import mmap
import os
import struct
import threading
import zlib

from .drc import CHECKSUM_BYTES, IN_PROGRESS

SLOTS = 4096
SLOT = 1024
PROBE = 8
_HEAD = struct.Struct("=16sBxxxiIQ")  # digest, state, owner pid, reply length, stamp
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
        port: a retransmission on a new connection comes from another port), as a digest
        every worker computes alike."""
        text = b"%s|%d|%d|%d|%d|%d|%d" % (host.encode(), xid, prog, vers, proc,
                                           zlib.crc32(args[:CHECKSUM_BYTES]), len(args))
        return hashlib.blake2b(text, digest_size=16).digest()

    def _locked(self) -> "_Held":
        return _Held(self)

    def _find(self, m: mmap.mmap, key: bytes) -> tuple[int, int]:
        """(offset of the slot holding ``key`` or -1, offset of the slot to reuse)."""
        start = int.from_bytes(key[:8], "little") % self.slots
        victim, best = -1, -2
        for i in range(PROBE):
            off = _BASE + ((start + i) % self.slots) * SLOT
            digest, state, _, _, stamp = _HEAD.unpack_from(m, off)
            if state != _FREE and digest == key:
                return off, off
            rank = -1 if state == _FREE else stamp  # a free slot first, else the oldest
            if best == -2 or rank < best:
                victim, best = off, rank
        return -1, victim

    def _stamp(self, m: mmap.mmap) -> int:
        n = int.from_bytes(m[0:8], "little") + 1
        m[0:8] = n.to_bytes(8, "little")
        return n

    def begin(self, key: bytes) -> object | None:
        """None if the call is new (now marked in progress by us); else IN_PROGRESS or the
        cached reply bytes."""
        m = self._map
        assert m is not None, "attach() first"
        with self._locked():
            off, victim = self._find(m, key)
            if off >= 0:
                _, state, pid, length, _ = _HEAD.unpack_from(m, off)
                if state == _DONE:
                    _HEAD.pack_into(m, off, key, _DONE, pid, length, self._stamp(m))
                    return m[off + _HEAD.size: off + _HEAD.size + length]
                if pid == self._pid or _alive(pid):
                    return IN_PROGRESS
                victim = off  # its worker died: serve the retransmission
            _HEAD.pack_into(m, victim, key, _BUSY, self._pid, 0, self._stamp(m))
            return None

    def finish(self, key: bytes, reply: bytes | None) -> None:
        m = self._map
        assert m is not None, "attach() first"
        with self._locked():
            off, _ = self._find(m, key)
            if off < 0:
                return  # pushed out meanwhile
            _, state, pid, _, stamp = _HEAD.unpack_from(m, off)
            if state != _BUSY or pid != self._pid:
                return
            if reply is None or len(reply) > MAX_REPLY:
                _HEAD.pack_into(m, off, bytes(16), _FREE, 0, 0, 0)
                return
            m[off + _HEAD.size: off + _HEAD.size + len(reply)] = reply
            _HEAD.pack_into(m, off, key, _DONE, pid, len(reply), stamp)


class _Held:
    """The thread lock, then the process lock (flock on our own file description)."""

    __slots__ = ("c",)

    def __init__(self, c: SharedDuplicateRequestCache) -> None:
        self.c = c

    def __enter__(self) -> None:
        self.c._thread_lock.acquire()
        try:
            fcntl.flock(self.c._lock_fd, fcntl.LOCK_EX)
        except BaseException:
            self.c._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.c._lock_fd, fcntl.LOCK_UN)
        finally:
            self.c._thread_lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
