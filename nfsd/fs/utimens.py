"""utimensat(2) with a choice per timestamp: a given time, the current time (UTIME_NOW) or
no change (UTIME_OMIT).

``os.utime`` can only set both timestamps, so setting one of them would mean reading the other
first and writing it back: a stale value that can roll back a concurrent WRITE's mtime.
SETATTR says, per timestamp, "leave it", "the server's time" or "this time", which is what
utimensat expresses, so it is called through ctypes.
"""
from __future__ import annotations

import ctypes
import os

from .backend import ServerTime, TimeSet

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_SYMLINK_NOFOLLOW = 0x100


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_utimensat = _libc.utimensat
_utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
_utimensat.restype = ctypes.c_int
_futimens = _libc.futimens
_futimens.argtypes = [ctypes.c_int, ctypes.c_void_p]
_futimens.restype = ctypes.c_int


def _timespec(t: TimeSet) -> _Timespec:
    if t is None:
        return _Timespec(0, UTIME_OMIT)
    if isinstance(t, ServerTime):
        return _Timespec(0, UTIME_NOW)
    sec, nsec = divmod(t, 1_000_000_000)
    return _Timespec(sec, nsec)


def utimensat(dir_fd: int, path: bytes, atime: TimeSet, mtime: TimeSet, follow: bool = True) -> None:
    """Set ``path`` (relative to ``dir_fd``) timestamps; OSError as from os.utime.

    Both to the server's time is passed as a NULL array (utimensat's "touch": write
    permission suffices); any other combination needs ownership as far as the kernel goes."""
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    if isinstance(atime, ServerTime) and isinstance(mtime, ServerTime):
        result = _utimensat(dir_fd, path, None, flags)
    else:
        times = (_Timespec * 2)(_timespec(atime), _timespec(mtime))
        result = _utimensat(dir_fd, path, ctypes.byref(times), flags)
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(path))


def futimens(fd: int, atime: TimeSet, mtime: TimeSet) -> None:
    """``utimensat`` of an ordinary (not O_PATH) descriptor's object: both timestamps given
    or both the server's time through ``os.utime`` (a C call), one of them left alone
    through ctypes' futimens."""
    if isinstance(atime, ServerTime) and isinstance(mtime, ServerTime):
        os.utime(fd)  # futimens(fd, NULL): write permission suffices, as above
    elif isinstance(atime, int) and isinstance(mtime, int):
        os.utime(fd, ns=(atime, mtime))
    else:
        times = (_Timespec * 2)(_timespec(atime), _timespec(mtime))
        if _futimens(fd, ctypes.byref(times)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
