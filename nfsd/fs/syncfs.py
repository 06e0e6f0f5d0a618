"""syncfs(2): write back a whole file system, for the objects that cannot be fsynced.

A new symbolic link, device node, FIFO or socket must reach the disk before CREATE's kin
answer (``LocalFS.fsync_new``), but user space cannot fsync it: a symbolic link opens only
as ``O_PATH`` (whose descriptor fsync refuses), opening a device acts on the device, a FIFO's
or a socket's descriptor has no fsync.  syncfs of a descriptor on the same file system makes
its inode durable with everything else there.  Python (3.11) has no ``os.syncfs``: ctypes.
"""
from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = _libc.syncfs
_syncfs.argtypes = [ctypes.c_int]
_syncfs.restype = ctypes.c_int


def syncfs(fd: int) -> None:
    """Write back the file system holding ``fd`` (an ordinary descriptor, not ``O_PATH``)."""
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
