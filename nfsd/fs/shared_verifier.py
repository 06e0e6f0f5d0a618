"""The write verifier, one for every worker process of a server (``--workers N``).

WRITE and COMMIT replies carry an 8-byte verifier; a client that sees it change resends
what it wrote UNSTABLE and has not seen committed.  It changes at each boot (the boot
counter's four bytes lead) and when a write-back error may have lost data acknowledged
UNSTABLE (``reset``: knfsd's ``nfsd_reset_write_verifier``).  A client's connections may
reach different workers (nconnect, a reconnect, another client process), so a reset made by
one worker must be what every worker answers from then on: the value lives in an anonymous
shared mapping made before the workers fork (a restarted worker is forked by the same
parent and sees the same value, reset or not).

Reading it, for every WRITE and COMMIT reply, is one aligned 8-byte load (a memoryview of
native unsigned 64-bit integers: 17 ns above a Python call, ctypes' ``c_uint64`` took 56): no
lock, no system call.  A reset is one aligned 8-byte store, so a reader sees the old value or
the new one, not a mixture (and a mixture would still differ from the old one: the client
would only resend once more).  Two workers resetting at once both pick values that differ
from the old one; whichever store lands last is the verifier, which is all a client needs.
"""
from __future__ import annotations

import mmap
import os

_LOW = 0xFFFFFFFF  # the part a reset changes; the boot counter's part stays


class WriteVerifier:
    """An 8-byte verifier in shared memory (0: not set yet).  Made in the parent before the
    workers fork (or by a lone server for itself); ``current`` is the fast path."""

    __slots__ = ("_map", "_cells", "_last")

    def __init__(self, initial: bytes | None = None) -> None:
        self._map = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and MAP_SHARED: kept across fork
        self._cells = memoryview(self._map).cast("Q")  # the first: page-aligned
        # (value, its bytes): one reference, swapped whole, so threads never pair two values
        self._last = (0, bytes(8))
        if initial is not None:
            self.set(initial)

    def current(self) -> bytes:
        """The verifier as every worker answers it now."""
        value = self._cells[0]
        last = self._last
        if last[0] == value:
            return last[1]
        self._last = last = (value, value.to_bytes(8, "big"))
        return last[1]

    def is_set(self) -> bool:
        """Whether a worker fixed it already (the primary's first start: not zero)."""
        return self._cells[0] != 0

    @property
    def boot(self) -> int:
        """The boot counter it was made from (its first four bytes)."""
        return self._cells[0] >> 32

    def set(self, verf: bytes) -> None:
        """Fix the boot's verifier (eight bytes; a boot's never all zero: boots count from 1)."""
        if len(verf) != 8:
            raise ValueError(f"a write verifier is 8 bytes: {verf!r}")
        self._cells[0] = int.from_bytes(verf, "big")

    def reset(self) -> bytes:
        """A new verifier for every worker, the boot's part kept; returned."""
        old = self._cells[0]
        new = old
        while new == old or new == 0:
            new = (old & ~_LOW) | int.from_bytes(os.urandom(4), "big")
        self._cells[0] = new
        return self.current()
