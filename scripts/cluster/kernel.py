"""Kernel interfaces the multi-head facts are checked with, through ctypes (the standard
library has neither): file handles (name_to_handle_at / open_by_handle_at, which need
CAP_DAC_READ_SEARCH) and a one-shot inotify listener."""
from __future__ import annotations

import ctypes
import os
import select
import struct
import time
from collections.abc import Callable

_libc = ctypes.CDLL(None, use_errno=True)
_MAX_HANDLE = 128
IN_CREATE = 0x100


class FileHandle(ctypes.Structure):
    """struct file_handle with room for the largest handle we expect."""

    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_char * _MAX_HANDLE)]


def name_to_handle(path: str) -> FileHandle:
    """The kernel's handle of ``path`` (``handle_body`` gives its bytes)."""
    fh = FileHandle(_MAX_HANDLE, 0)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(-100, os.fsencode(path), ctypes.byref(fh), ctypes.byref(mount_id), 0):
        raise OSError(ctypes.get_errno(), "name_to_handle_at", path)
    return fh


def handle_body(fh: FileHandle) -> tuple[int, bytes]:
    """The handle's type and bytes (``fh.f_handle`` itself would stop at a zero byte)."""
    offset = FileHandle.f_handle.offset
    return fh.handle_type, bytes(fh)[offset:offset + fh.handle_bytes]


def open_by_handle(mount_dir: str, fh: FileHandle) -> int:
    """A read-only descriptor of the file ``fh`` names, on the mount holding ``mount_dir``."""
    mfd = os.open(mount_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "open_by_handle_at")
        return fd
    finally:
        os.close(mfd)


def inotify_events(watch_dir: str, action: Callable[[], object], wait: float) -> list[bytes]:
    """Names inotify reports in ``watch_dir`` within ``wait`` seconds after ``action()``."""
    ifd = _libc.inotify_init1(os.O_NONBLOCK)
    assert ifd >= 0
    try:
        assert _libc.inotify_add_watch(ifd, os.fsencode(watch_dir), IN_CREATE) >= 0
        action()
        names: list[bytes] = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([ifd], [], [], left)[0]:
                break
            buf = os.read(ifd, 4096)
            off = 0
            while off < len(buf):
                _, _, _, n = struct.unpack_from("iIII", buf, off)
                names.append(buf[off + 16:off + 16 + n].rstrip(b"\0"))
                off += 16 + n
        return names
    finally:
        os.close(ifd)
