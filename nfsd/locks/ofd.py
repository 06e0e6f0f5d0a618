"""Locks on the real file: Linux open-file-description (OFD) locks through our own descriptor.

Each NLM lock owner gets its own descriptor on the file, so its locks are an OFD of their
own: the kernel then makes them exclude every POSIX lock (``fcntl(F_SETLK)``) and OFD lock
a process on the server host takes, and the reverse, as knfsd's locks do.  ``struct flock``
offsets are signed 64-bit: a range reaching past 2**63-1 is mirrored as "to end of file",
and one starting past it is not mirrored at all (no local process can name those bytes);
the lock table keeps the exact 64-bit ranges.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct

log = logging.getLogger("pysfsd.nlm")

MAX_OFF = (1 << 63) - 1
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on 64-bit Linux (native layout)


def _range(start: int, end: int) -> tuple[int, int]:
    s = min(start, MAX_OFF)
    return s, 0 if end > MAX_OFF else end - s


def open_for_locks(path: str) -> int:
    """A descriptor for locking: read-write if we may (exclusive locks need write access),
    else read-only (shared locks only)."""
    flags = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        return os.open(path, os.O_RDWR | flags)
    except (PermissionError, IsADirectoryError):
        return os.open(path, os.O_RDONLY | flags)


def try_lock(fd: int, start: int, end: int, exclusive: bool | None) -> bool:
    """Set (``exclusive`` True/False) or clear (None) the range without waiting.  False when
    another holder (a local process) has a conflicting lock; True when set, or when the
    descriptor cannot carry this kind of lock (then only the lock table holds it)."""
    if start > MAX_OFF:
        return True
    kind = fcntl.F_UNLCK if exclusive is None else fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    s, length = _range(start, end)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, s, length, 0))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        log.info("cannot mirror an NLM lock onto the file: %s", exc)
    return True


def local_holder(fd: int, start: int, end: int, exclusive: bool) -> tuple[bool, int, int, int] | None:
    """(exclusive, pid, start, end) of a local lock that would conflict, or None."""
    if start > MAX_OFF:
        return None
    s, length = _range(start, end)
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    try:
        raw = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(kind, os.SEEK_SET, s, length, 0))
    except OSError:
        return None
    typ, _, ls, ll, pid = _FLOCK.unpack(raw)
    if typ == fcntl.F_UNLCK:
        return None
    return typ == fcntl.F_WRLCK, pid, ls, (1 << 64) if ll == 0 else ls + ll
