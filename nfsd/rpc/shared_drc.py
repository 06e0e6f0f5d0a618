"""The duplicate-request cache shared by the worker processes of ``--workers N``.

A client retransmits a call it got no reply to, and after a reconnect (or over UDP, or
with ``nconnect``) the retransmission may reach another worker than the original.  So the
table lives in one shared memory file (a memfd the parent creates before forking) that
every worker maps.  Each worker *writes* only its own partition of it (``SLOTS`` slots of
``SLOT`` bytes in sets of ``WAYS``: a key lives in the set its hash names, in a free slot
or else the older one, never pushing out a call still in progress while the other holds
a finished one) and *reads* every partition: a call is new when no partition holds its
key.  The partition is used by its worker's event loop alone (every look-up and every
store is made there, as with the per-process cache): no lock at all.  (The first shared
version probed 4 slots with a thread lock and chose a victim by unpacking 4 headers:
4.5 us a call against 1.9 now and 0.6 for the per-process cache, in-process on this
machine, ``SETATTR`` load.)  So no lock is shared between processes (a first version took an
``flock`` around every look-up: 15 % of a worker's time went to waiting for it under
SETATTR load), and a worker that dies can wedge nobody.

A slot is read without a lock as a seqlock is: its header, then the reply, then the header
again; the reply counts only if the header did not change meanwhile (the owner marks a
slot free before rewriting it, and every write has a new stamp).  What this gives up: a
retransmission that arrives at another worker at the very moment the original arrives
(before either is marked in progress) is served twice; a retransmission comes after a
timeout, when the original is long marked.  A reply longer than a slot is not kept
(non-idempotent replies are a few hundred bytes: CREATE's is the largest, about 300).  A
call left in progress by a worker that died is served again when retransmitted.
"""
from __future__ import annotations

import mmap
import os
import struct
import zlib

from .drc import CHECKSUM_BYTES, IN_PROGRESS

SLOTS = 4096   # per worker
SLOT = 512
WAYS = 2       # a key lives in one of 2 neighbouring slots (its set), the older one reused
_HEAD = struct.Struct("=16sBxxxiIQ")  # digest, state, owner pid, reply length, stamp
_KEY = struct.Struct("=qII")
_FREE, _BUSY, _DONE = 0, 1, 2
MAX_REPLY = SLOT - _HEAD.size
_KEY_STATE = struct.Struct("=16sB")  # a header's digest and state
# a set's two headers (digest, state, stamp each: ``_HEAD``'s fields) in one unpack
_SET_HEADS = struct.Struct(f"=16sB11xQ{SLOT - _HEAD.size}x16sB11xQ")
_SET_KEYS = struct.Struct(f"=16s{SLOT - 16}x16s")  # a set's two digests
_STAMPS = struct.Struct(f"={_HEAD.size - 8}xQ{SLOT - _HEAD.size}x")  # a slot's stamp (``iter_unpack``)
_STAMP_CHUNK = 128  # slots read at once by ``_highest_stamp``


class SharedDuplicateRequestCache:
    """``DuplicateRequestCache``'s interface over shared memory.  Create it in the parent
    (``create``, one partition per worker), then ``attach`` in each worker after fork.
    Used by its worker's event loop alone (as the per-process cache is): no lock."""

    def __init__(self, fd: int, partitions: int, slots: int) -> None:
        if slots % WAYS:
            raise ValueError(f"slots must be a multiple of {WAYS}")
        self.fd, self.partitions, self.slots = fd, partitions, slots
        self._map: mmap.mmap | None = None
        self._others: tuple[int, ...] = ()  # the other partitions' first byte
        self._pid = os.getpid()
        self._stamp = 0
        self._sets = slots // WAYS
        self._mine: dict[bytes, int] = {}  # key -> its slot, from begin to finish
        self._own_base = 0
        self._keyed, self._keyed_set = b"", 0  # the last key made, and its set (``key``)

    @classmethod
    def create(cls, partitions: int, slots: int = SLOTS) -> "SharedDuplicateRequestCache":
        fd = os.memfd_create("pysfsd-drc", 0)  # not CLOEXEC: only forks use it, never exec
        os.ftruncate(fd, partitions * slots * SLOT)
        return cls(fd, partitions, slots)

    def attach(self, partition: int) -> None:
        """In worker ``partition``: map the table; stamps go on from the highest left in our
        partition (by an earlier incarnation of this worker)."""
        self._map = mmap.mmap(self.fd, self.partitions * self.slots * SLOT, mmap.MAP_SHARED)
        self._own_base = partition * self.slots * SLOT
        self._others = tuple(p * self.slots * SLOT for p in range(self.partitions) if p != partition)
        self._pid = os.getpid()
        self._stamp = self._highest_stamp(self._own_base)

    def _highest_stamp(self, base: int) -> int:
        """The highest stamp in the partition at ``base``, read through the descriptor, not
        the map: reading a slot never written finds a hole of the memfd and allocates
        nothing, where touching the map made every page of the partition resident (2 MiB
        per worker, at rest)."""
        chunk = bytearray(_STAMP_CHUNK * SLOT)
        highest = 0
        for at in range(base, base + self.slots * SLOT, len(chunk)):
            got = os.preadv(self.fd, [chunk], at)
            for (stamp,) in _STAMPS.iter_unpack(memoryview(chunk)[:got - got % SLOT]):
                if stamp > highest:
                    highest = stamp
        return highest

    def key(self, host: str, xid: int, prog: int, vers: int, proc: int, args: bytes | memoryview) -> bytes:
        """The same fields as ``DuplicateRequestCache.key`` (the client's address, not its
        port: a retransmission on a new connection comes from another port) in 16 bytes:
        Python's hash of them, the same in every worker (forks of one interpreter share its
        hash seed), then the xid and the arguments' length.  Short arguments (every
        namespace call) are hashed whole, as the per-process key keeps them: two calls
        reusing an xid with equal checksums still differ in the hash; longer ones by the
        checksum of their first 256 bytes and their length.  (The set the key lives in is
        kept for the ``begin`` that follows: the dispatcher calls it next.)"""
        n = len(args)
        if n <= CHECKSUM_BYTES:
            h = hash((host, xid, prog, vers, proc, bytes(args)))
        else:
            h = hash((host, xid, prog, vers, proc, zlib.crc32(args[:CHECKSUM_BYTES]), n))
        key = _KEY.pack(h, xid & 0xFFFFFFFF, n & 0xFFFFFFFF)
        self._keyed, self._keyed_set = key, (h % self._sets) * (WAYS * SLOT)
        return key

    def _set_of(self, key: bytes) -> int:
        """Byte offset, within a partition, of the ``WAYS`` slots ``key`` may live in."""
        if key is self._keyed:
            return self._keyed_set
        return (_KEY.unpack_from(key)[0] % self._sets) * (WAYS * SLOT)

    def _look(self, m: mmap.mmap, off: int, key: bytes) -> object | None:
        """What slot ``off`` (whose first 16 bytes are ``key``) says of it: None (not
        there), IN_PROGRESS, or the reply."""
        head = m[off:off + _HEAD.size]
        digest, state, pid, length, _ = _HEAD.unpack(head)
        if digest != key or state == _FREE:
            return None
        if state == _BUSY:
            return IN_PROGRESS if pid == self._pid or _alive(pid) else None
        reply = m[off + _HEAD.size: off + _HEAD.size + length]
        return reply if m[off:off + _HEAD.size] == head else None  # rewritten meanwhile

    def _find(self, m: mmap.mmap, off: int, key: bytes) -> object | None:
        """What the set at ``off`` says of ``key`` (see ``_look``)."""
        for o in range(off, off + WAYS * SLOT, SLOT):
            if m[o:o + 16] == key:
                found = self._look(m, o, key)
                if found is not None:
                    return found
        return None

    def begin(self, key: bytes) -> object | None:
        """None if the call is new (now marked in progress by us); else IN_PROGRESS or the
        cached reply bytes."""
        m = self._map
        assert m is not None, "attach() first"
        at = self._keyed_set if key is self._keyed else self._set_of(key)
        own = self._own_base + at
        # most calls are new: a slot's header is read only when its first 16 bytes are the
        # key (both slots' keys of a set in one unpack: a slice of the map costs twice that)
        for base in self._others:
            if key in _SET_KEYS.unpack_from(m, base + at):
                found = self._find(m, base + at, key)
                if found is not None:
                    return found
        key0, state0, stamp0, key1, state1, stamp1 = _SET_HEADS.unpack_from(m, own)
        if key == key0 or key == key1:
            found = self._find(m, own, key)
            if found is not None:
                return found
        # the victim: a free slot, else the older of the set (a call of ours still in
        # progress only if both are: its finish then finds it gone and keeps nothing)
        if state0 == _FREE:
            victim = own
        elif state1 == _FREE:
            victim = own + SLOT
        else:
            if (state0 == _BUSY) != (state1 == _BUSY):
                victim = own + SLOT if state0 == _BUSY else own
            else:
                victim = own if stamp0 <= stamp1 else own + SLOT
            m[victim + 16] = _FREE  # readers ignore it while it is rewritten
        self._stamp += 1
        _HEAD.pack_into(m, victim, key, _BUSY, self._pid, 0, self._stamp)
        mine = self._mine
        if len(mine) > 4 * self.slots:
            mine.clear()  # calls that never finished (cannot happen: a bound anyway)
        mine[key] = victim
        return None

    def finish(self, key: bytes, reply: bytes | bytearray | None) -> None:
        m = self._map
        assert m is not None, "attach() first"
        off = self._mine.pop(key, -1)
        if off < 0 or _KEY_STATE.unpack_from(m, off) != (key, _BUSY):
            return  # pushed out meanwhile
        if reply is None or len(reply) > MAX_REPLY:
            m[off + 16] = _FREE
            return
        # still marked in progress while the reply is written: readers do not read it
        m[off + _HEAD.size: off + _HEAD.size + len(reply)] = reply
        self._stamp += 1
        _HEAD.pack_into(m, off, key, _DONE, self._pid, len(reply), self._stamp)

    def finish_all(self, keys: list[bytes], replies: "list[bytes | bytearray] | list[bytes | None]") -> None:
        """``finish`` for each key and its reply: the dispatcher caches a burst's replies
        together when they may leave.  (One copy of the slot's write order: an inlined loop
        saved a fraction of a microsecond per call, not worth a second copy of it.)"""
        finish = self.finish
        for key, reply in zip(keys, replies):
            finish(key, reply)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
