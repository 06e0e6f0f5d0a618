"""The narrow interface between the NFSv3 handlers and what they serve.

Handlers speak only this (as go-nfs's RPC layer speaks only ``billy.Filesystem``):
``LocalFS`` implements it over a real directory tree, ``SemanticFS`` adds query
directories on top.  Objects are opaque nodes carrying their handle and file id;
attributes are ``os.stat_result``-shaped.
"""
from __future__ import annotations

import os
import stat
from typing import Final, Hashable, Iterable, Protocol, TypeVar


class ServerTime:
    """``set_times``: the server's current time (utimensat's UTIME_NOW), as opposed to a time
    the client gives (nanoseconds) or ``None`` (leave that timestamp alone: UTIME_OMIT)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SERVER_TIME"


SERVER_TIME: Final = ServerTime()
#: one timestamp for ``set_times``: nanoseconds since the epoch, SERVER_TIME, or None (unchanged)
TimeSet = int | ServerTime | None


class ModeKinds:
    """``is_dir`` / ``is_link`` from a ``mode`` attribute, for node classes."""

    __slots__ = ()
    mode: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


class StatResult(Protocol):
    """Attributes as ``os.stat_result`` has them (``SemanticFS``'s virtual objects: ``VStat``)."""

    @property
    def st_mode(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_nlink(self) -> int: ...
    @property
    def st_uid(self) -> int: ...
    @property
    def st_gid(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_blocks(self) -> int: ...
    @property
    def st_rdev(self) -> int: ...
    @property
    def st_atime_ns(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...


class ObjectNode(Protocol):
    """An object as a backend hands it out: valid for the call that got it."""

    fh: bytes   # its handle (opaque, <= 64 bytes, valid across restarts)
    ino: int    # its file id
    gen: int    # its inode generation (0 for virtual objects)
    #: computed from a query, with no file of its own: never listed from the caches, never
    #: written, no descriptor (``SemanticFS``'s query directories and result links)
    virtual: bool

    @property
    def is_dir(self) -> bool: ...

    @property
    def is_link(self) -> bool: ...


NodeT = TypeVar("NodeT", bound=ObjectNode)


class Backend(Protocol[NodeT]):
    """What the handlers may ask of an export, over its own node type (``LocalFS``: real
    objects; ``SemanticFS``: real and virtual ones).  Failures are ``OSError`` (mapped to
    nfsstat3 by nfsd/nfs3/errors.py) or ``NfsError``; a node given to a method is one this backend
    handed out.  Names are single path components (no ``/``, not ``.`` or ``..``)."""

    fsid: int        # the file system id every object's attributes carry
    export_id: int   # the export's number in every handle
    root: NodeT      # the export's root directory
    root_path: str   # the exported directory (pathconf, messages)

    def node(self, fh: bytes) -> NodeT:
        """The object of a handle; NfsError STALE (gone) or BADHANDLE (never one of ours)."""
    def stat(self, n: NodeT) -> StatResult:
        """Its attributes now (not cached across calls)."""
    def lookup(self, d: NodeT, name: bytes) -> NodeT:
        """The entry ``name`` of directory ``d`` (a query directory may be computed here)."""
    def lookup_attrs(self, d: NodeT, name: bytes) -> tuple[NodeT, StatResult | None]:
        """``lookup``, and the attributes the look-up itself read (None: it read none)."""
    def parent_of(self, d: NodeT) -> NodeT:
        """Directory ``d``'s parent (the root is its own parent)."""
    def readlink(self, n: NodeT) -> bytes:
        """A symbolic link's (or result link's) target."""
    def scandir(self, d: NodeT) -> Iterable[tuple[bytes, int]]:
        """Directory ``d``'s entries as (name, file id), without ``.`` and ``..``."""
    def listing_key(self, d: NodeT) -> Hashable:
        """What identifies ``d``'s listing exactly (a query's result version), or None when
        its mtime and ctime do (real directories)."""
    def entry(self, d: NodeT, name: bytes) -> tuple[StatResult, bytes]:
        """Attributes and handle of entry ``name`` of ``d``, for READDIRPLUS, without a node."""
    def cookie_verifier(self, d: NodeT) -> bytes:
        """8 bytes that change when ``d``'s cookies stop meaning what they meant."""
    def create_file(self, d: NodeT, name: bytes, mode: int, exclusive: bool) -> NodeT:
        """A new regular file (FileExistsError if ``exclusive`` and the name is taken)."""
    def mkdir(self, d: NodeT, name: bytes, mode: int) -> NodeT:
        """A new directory."""
    def symlink(self, d: NodeT, name: bytes, target: bytes) -> NodeT:
        """A new symbolic link."""
    def mknod(self, d: NodeT, name: bytes, mode: int, device: int = 0) -> NodeT:
        """A new device, socket or FIFO (``mode`` carries the type bits)."""
    def remove(self, d: NodeT, name: bytes, directory: bool) -> None:
        """Unlink a non-directory, or (``directory``) remove an empty directory."""
    def rename(self, src: NodeT, sname: bytes, dst: NodeT, dname: bytes) -> None:
        """Rename within the export, replacing a compatible target as rename(2) does."""
    def link(self, n: NodeT, d: NodeT, name: bytes) -> None:
        """A new hard link to ``n``."""
    def set_mode(self, n: NodeT, mode: int) -> None:
        """chmod (permission and set-id bits)."""
    def set_owner(self, n: NodeT, uid: int, gid: int) -> None:
        """chown; -1 leaves that one unchanged."""
    def truncate(self, n: NodeT, size: int) -> None:
        """Set a regular file's size."""
    def set_times(self, n: NodeT, atime: TimeSet, mtime: TimeSet) -> None:
        """Set atime and mtime, each as ``TimeSet`` says."""
    def read(self, n: NodeT, offset: int, count: int, cached: bool = False) -> bytes | memoryview:
        """Up to ``count`` bytes at ``offset`` (fewer at the end of the file); ``cached``:
        only from the page cache, else ``WouldBlock`` (nfsd/fs/cachedread.py), the result
        then valid until the next such read."""
    def write(self, n: NodeT, offset: int, data: memoryview, sync: int) -> int:
        """Write ``data`` at ``offset``, on disk before returning unless ``sync`` is
        stable_how.UNSTABLE; the count written."""
    def open_for_writing(self, n: NodeT) -> None:
        """Open the file's shared read-write descriptor now, as the current identity (the
        export guard checked the caller's right first); nothing for objects without one."""
    def commit(self, n: NodeT) -> None:
        """Everything written to ``n`` is on disk."""
    def put_verifier(self, n: NodeT, verf: bytes) -> None:
        """Keep an EXCLUSIVE CREATE's verifier with the new file, durably (StoreFull)."""
    def verifier(self, n: NodeT) -> bytes | None:
        """The verifier kept with ``n`` by ``put_verifier``, if any."""
    def statvfs(self) -> os.statvfs_result:
        """The export's file system's capacity (FSSTAT)."""
    def flush(self) -> None:
        """Write what is pending (handle table, index notes)."""
    def close(self) -> None:
        """Release descriptors and caches; the backend is not used again."""
