"""Reading the export as safely as the server does (see ``nfsd.fs.localfs``).

Every name is resolved relative to an open directory descriptor with ``O_NOFOLLOW``, so no
symbolic link is ever followed and nothing outside the export is reached.  A file's content
is read only after an ``O_PATH`` descriptor proved it a regular file (the very inode that was
listed); it is then reopened for reading through ``/proc/self/fd``, which never walks a path,
so a FIFO, socket or device swapped in meanwhile is never opened.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from typing import Iterator

O_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
FS_IOC_GETVERSION = 0x80087601


def open_listing(name: bytes | str, dir_fd: int | None = None, flags: int = _DIR_FLAGS) -> int:
    """A descriptor of directory ``name`` to list for the server's own purposes (the index,
    the watcher): with ``O_NOATIME`` where allowed, so that the server reading its export
    does not move the directories' access times (a client's READDIR still does).
    ``O_NOATIME`` needs ownership or CAP_FOWNER; without, the listing moves atime as any
    reader's would."""
    try:
        return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError as exc:
        if exc.errno != errno.EPERM:  # EACCES: no permission to read at all
            raise
        return os.open(name, flags, dir_fd=dir_fd)


def open_dir_at(dir_fd: int, name: bytes | str, ino: int) -> int | None:
    """A listable descriptor of subdirectory ``name``, or None unless it is still the
    directory ``ino`` (not a symlink, not replaced)."""
    try:
        fd = open_listing(name, dir_fd)
    except OSError:
        return None
    if os.fstat(fd).st_ino != ino:
        os.close(fd)
        return None
    return fd


def open_path(root_fd: int, relpath: bytes) -> int | None:
    """A listable descriptor of the directory at ``relpath`` (components walked one by one
    from the export root, never through a symlink), or None."""
    fd = open_listing(".", root_fd)  # its own offset: never share a listing position
    for part in relpath.split(b"/") if relpath else ():
        if part in (b"", b".", b".."):
            os.close(fd)
            return None
        try:
            sub = open_listing(part, fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = sub
    return fd


def list_dir(dir_fd: int) -> Iterator[tuple[bytes, os.stat_result]]:
    """(name, lstat) of each entry, in inode order: inode tables are read sequentially and
    the index's records are appended rather than inserted.  Entries that vanish while
    listed are skipped.  The names are read in full first (an OSError then means nothing
    was listed)."""
    with os.scandir(dir_fd) as it:
        entries = sorted((e.inode(), os.fsencode(e.name)) for e in it)
    for _, name in entries:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            continue
        yield name, st


def lstat_at(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


class OpenFile:
    """A regular file open for reading: its head, read lazily, and its generation."""

    __slots__ = ("fd", "st", "_data", "_eof")

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd, self.st = fd, st
        self._data = b""
        self._eof = st.st_size == 0

    def head(self, limit: int) -> bytes:
        """The first ``limit`` bytes (fewer at end of file)."""
        while len(self._data) < limit and not self._eof:
            # reads double as the head grows, so a 64 MiB head is copied a few times, not 64
            size = min(limit - len(self._data), max(1 << 20, len(self._data)))
            chunk = os.pread(self.fd, size, len(self._data))
            if len(chunk) < size:
                # a regular file's short read is its end: no second read to hear it (a small
                # new file, the usual case of a flush, is read by one system call)
                self._eof = True
            self._data += chunk
        return self._data[:limit]

    def complete(self, limit: int) -> bool:
        """Whether ``head(limit)`` is the whole file."""
        return len(self.head(limit)) < limit or self.st.st_size <= limit

    def generation(self) -> int:
        return read_generation(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_regular(dir_fd: int, name: bytes, ino: int) -> OpenFile | None:
    """Open entry ``name`` for reading if it is still the regular file ``ino`` (else None);
    OSError if it is but cannot be read."""
    try:
        pfd = os.open(name, O_PATH_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != ino:
            return None
        proc = f"/proc/self/fd/{pfd}"
        try:
            fd = os.open(proc, _READ_FLAGS | os.O_NOATIME)
        except PermissionError:  # O_NOATIME needs ownership; then atime may move
            fd = os.open(proc, _READ_FLAGS)
        return OpenFile(fd, st)
    finally:
        os.close(pfd)


def read_generation(fd: int) -> int:
    """FS_IOC_GETVERSION, or 0 where the file system keeps none."""
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETVERSION, b"\0" * 8)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return 0
        raise
    return struct.unpack("q", raw)[0] & 0xFFFFFFFF


def generation_at(dir_fd: int, name: bytes, ino: int) -> int | None:
    """The generation of regular file ``name`` (still inode ``ino``), None if it is gone."""
    try:
        f = open_regular(dir_fd, name, ino)
    except OSError:
        return 0
    if f is None:
        return None
    try:
        return f.generation()
    except OSError:
        return 0
    finally:
        f.close()
