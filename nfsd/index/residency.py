"""Keeping LMDB's file mapping out of the resident set during scans.

LMDB reads through a shared, read-only mapping of its data file, and a scan's inserts walk
the B-trees through it: every page touched stays mapped, so the process's RSS grows with the
size of the database (about 450 bytes per file) although those pages are page cache -- clean,
shared with every other process, and never copied.  After each batch the scan drops the
mapping's page-table entries (``madvise(MADV_DONTNEED)``): the pages stay in the page cache
(and on disk), the next access costs a minor fault, and the RSS shows what the process really
holds.  Nothing is lost: LMDB never writes through this mapping (no ``MDB_WRITEMAP``).
Queries map pages too (a million-result one, nearly the whole database): after a large
fault, and twice a second, the mapping is dropped once the process's file-backed resident
set (``RssFile``) passes ``MAPPED_MAX`` (``trim_over``), so it stays bounded without making
every query pay minor faults for what the previous one mapped.

A read fault on a file mapping normally maps up to 16 neighbouring page-cache pages at once
(the kernel's *fault-around*, ``fault_around_bytes``, 64 KiB); MADV_RANDOM does not stop it.
LMDB's pages of one table lie interleaved with every other table's in the file, so a query
that reads 10,000 scattered file records (a 10,000-result listing at 1M files) took ~6,900
faults mapping ~440 MB, of which it used 40 MB: ~30 ms of faults and ~10 ms of dropping
them again.  The kernel skips fault-around on a range registered for userfaultfd
write-protection (``uffd_disable_fault_around``); with ``UFFD_FEATURE_WP_ASYNC`` (Linux 6.7)
the kernel resolves write-protect faults itself, so nothing ever waits on the descriptor, and
LMDB never writes through its read-only mapping anyway.  Registered once per mapping
(``no_fault_around``), the same query maps 54 MB and takes ~10,000 one-page faults (~24 ms
instead of ~31, and no trim).  Where the kernel refuses (older kernels, no permission for
userfaultfd, a read-only file), fault-around stays: only slower, never wrong.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import fcntl
import os
import struct
import threading
import time

import lmdb

log = logging.getLogger("pysfsd.index")
MADV_DONTNEED = 4
MAPPED_MAX = 96 << 20  # RssFile beyond which queries' mapped pages are dropped


def rss_file() -> int:
    """The process's file-backed resident bytes (0 where /proc does not tell)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"RssFile:"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.syscall.restype = ctypes.c_long

# userfaultfd(2) on x86-64 and aarch64, and the ioctls of <linux/userfaultfd.h>
_SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}.get(os.uname().machine)
_UFFD_USER_MODE_ONLY = 1  # what an unprivileged process may ask (vm.unprivileged_userfaultfd=0)
_UFFD_API = 0xAA
_UFFD_FEATURE_WP_ASYNC = 1 << 15
_UFFDIO_API = 0xC018AA3F       # _IOWR(0xAA, 0x3F, struct uffdio_api)
_UFFDIO_REGISTER = 0xC020AA00  # _IOWR(0xAA, 0x00, struct uffdio_register)
_UFFDIO_REGISTER_MODE_WP = 1 << 1
_no_fault_around: dict[tuple[str, int, int], int] = {}  # (file, start, end) -> its userfaultfd
_no_fault_around_lock = threading.Lock()


def _map_regions(data: str) -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of the file ``data``."""
    try:
        with open("/proc/self/maps") as maps:
            regions = [line.split()[0] for line in maps if line.rstrip("\n").endswith(data)]
    except OSError:
        return []
    return [(int(a, 16), int(b, 16)) for a, b in (r.split("-") for r in regions)]


def no_fault_around(data: str, start: int, end: int) -> bool:
    """Register ``start``..``end`` (a read-only mapping of the file ``data``) for asynchronous
    userfaultfd write-protection, which turns the kernel's fault-around off there (module
    docstring).  The descriptor stays open while the mapping lives: closing it would undo the
    registration.  False where the kernel refuses."""
    if _SYS_USERFAULTFD is None:
        return False
    fd = _libc.syscall(_SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY)
    if fd < 0:
        log.debug("userfaultfd: %s", os.strerror(ctypes.get_errno()))
        return False
    key = (data, start, end)
    with _no_fault_around_lock:
        try:
            fcntl.ioctl(fd, _UFFDIO_API, bytearray(struct.pack("=QQQ", _UFFD_API, _UFFD_FEATURE_WP_ASYNC, 0)))
            fcntl.ioctl(fd, _UFFDIO_REGISTER, bytearray(struct.pack("=QQQQ", start, end - start,
                                                                    _UFFDIO_REGISTER_MODE_WP, 0)))
        except OSError as e:
            os.close(fd)
            if e.errno == errno.EBUSY and key in _no_fault_around:
                return True  # already registered, by the descriptor kept for this mapping
            log.debug("no userfaultfd write-protection on the LMDB map: %s", e)
            return False
        old = _no_fault_around.pop(key, None)
        if old is not None:
            os.close(old)  # a mapping unmapped since, that took the same addresses
        _no_fault_around[key] = fd
        return True


class MapTrimmer:
    def __init__(self, env: lmdb.Environment) -> None:
        path = os.path.realpath(env.path())
        self._data = os.path.join(path, "data.mdb") if os.path.isdir(path) else path
        self._failed = False
        self._last = 0.0
        regions = _map_regions(self._data)
        # whether reads still map their neighbours (the kernel refused no_fault_around)
        self.fault_around = not regions or not all([no_fault_around(self._data, a, b) for a, b in regions])

    def trim_over(self, limit: int = MAPPED_MAX) -> bool:
        """``trim`` if the file-backed resident set is over ``limit``; True if it was."""
        if self._failed or rss_file() <= limit:
            return False
        self.trim()
        return True

    def trim(self) -> None:
        """Drop the mapping's pages from the resident set (at most once a second)."""
        now = time.monotonic()
        if self._failed or now - self._last < 0.0:
            return
        self._last = now
        for start, end in _map_regions(self._data):
            if _libc.madvise(start, end - start, MADV_DONTNEED) != 0:
                self._failed = True  # harmless: the pages just stay mapped
                log.debug("madvise on the LMDB map failed: %s", os.strerror(ctypes.get_errno()))
