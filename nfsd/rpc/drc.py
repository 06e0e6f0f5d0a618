"""Duplicate request cache: replays replies to retransmitted non-idempotent calls.

Keyed on client address, xid, program, version, procedure and the arguments: some clients
reuse an xid for a whole second, so the xid alone would replay the wrong reply.  Arguments of
at most ``CHECKSUM_BYTES`` (every namespace call, SETATTR) are part of the key as they are:
hashing them is cheaper than a checksum, and no two calls can be confused.  Longer ones
(WRITE) are keyed on a checksum of their first bytes and their length, as knfsd's are.

Entries leave oldest first (first in, first out): a plain dict and a queue of its keys cost
less per call than an ordered dict, and a retransmission (the only hit) needs no move.
"""
from __future__ import annotations

import zlib
from collections import deque
from typing import Hashable

IN_PROGRESS = object()
CHECKSUM_BYTES = 256


class DuplicateRequestCache:
    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[Hashable, object] = {}
        self._order: deque[Hashable] = deque()  # keys as they came (a key may repeat: see begin)

    @staticmethod
    def key(host: str, xid: int, prog: int, vers: int, proc: int, args: bytes | memoryview) -> Hashable:
        """Short arguments are kept whole in the key; longer ones by the checksum of their
        first 256 bytes and their length, as knfsd's: enough to tell calls apart, without
        hashing a 1 MiB WRITE."""
        if len(args) <= CHECKSUM_BYTES:
            return (host, xid, prog, vers, proc, bytes(args))  # (bytes: the same object, no copy)
        return (host, xid, prog, vers, proc, zlib.crc32(args[:CHECKSUM_BYTES]), len(args))

    def begin(self, key: Hashable) -> object | None:
        """None if the call is new (and now marked in progress); else IN_PROGRESS or the
        cached reply bytes."""
        entries = self._entries
        size = len(entries)
        found = entries.setdefault(key, IN_PROGRESS)  # one look-up (a new key grows the dict)
        if len(entries) == size:
            return found
        order = self._order
        order.append(key)
        if len(order) > self.max_entries:  # one in, one out
            # (a key forgotten by ``finish(key, None)`` and begun again is queued twice: its
            # older place may let it go early, never the cache grow past its bound)
            entries.pop(order.popleft(), None)
        return None

    def finish(self, key: Hashable, reply: bytes | bytearray | None) -> None:
        entries = self._entries
        if reply is None:
            entries.pop(key, None)
        elif key in entries:
            entries[key] = reply

    def finish_all(self, keys: list[Hashable], replies: "list[bytes | bytearray] | list[bytes | None]") -> None:
        """``finish`` for each key and its reply (a burst's, cached together)."""
        finish = self.finish
        for key, reply in zip(keys, replies):
            finish(key, reply)
