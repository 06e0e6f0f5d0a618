"""Duplicate request cache: replays replies to retransmitted non-idempotent calls.

Keyed on client address, xid, program, version, procedure and a checksum of the arguments:
some clients reuse an xid for a whole second, so the xid alone would replay the wrong reply.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict
from typing import Hashable

IN_PROGRESS = object()
CHECKSUM_BYTES = 256


class DuplicateRequestCache:
    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, object] = OrderedDict()

    @staticmethod
    def key(host: str, xid: int, prog: int, vers: int, proc: int, args: bytes | memoryview) -> Hashable:
        """The checksum covers the first 256 bytes and the length, as knfsd's does: enough to
        tell calls apart, without hashing a 1 MiB WRITE."""
        return (host, xid, prog, vers, proc, zlib.crc32(args[:CHECKSUM_BYTES]), len(args))

    def begin(self, key: Hashable) -> object | None:
        """None if the call is new (and now marked in progress); else IN_PROGRESS or the
        cached reply bytes."""
        entries = self._entries
        found = entries.get(key)
        if found is not None:
            entries.move_to_end(key)
            return found
        entries[key] = IN_PROGRESS
        if len(entries) > self.max_entries:  # one in, one out
            entries.popitem(last=False)
        return None

    def finish(self, key: Hashable, reply: bytes | None) -> None:
        entries = self._entries
        if reply is None:
            entries.pop(key, None)
        elif key in entries:
            entries[key] = reply
