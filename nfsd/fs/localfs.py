"""The real-file backend: every object is reached relative to a directory descriptor.

Each object the server knows is held as an ``O_PATH | O_NOFOLLOW`` descriptor (a ``Node``;
one the server made itself, by the read-only descriptor it opened it with).
Such a descriptor names the inode, not a path, so it survives renames of the object and of
every parent, and nothing is ever resolved through a symbolic link: a name is opened with
``openat(dirfd, name, O_NOFOLLOW)``, so neither ``..`` tricks nor symlinks can reach outside
the export.  Data and metadata operations go through ``/proc/self/fd/N``, which reopens the
same inode without walking any path.

A handle that is not in memory (after a restart, or evicted) is found again through the LMDB
handle table (parent inode and name, walked down from the export root) and, if the file moved
behind the server's back, by a search of the export in short slices (searchslices.py).

When the handle table cannot grow (its store is full: ``StoreFull``), objects that already
exist are still served (their place is found again by searching, should the server restart),
but an object created through the server is removed again and the call answers
NFS3ERR_NOSPC: a handle the server could not remember must not be handed out for it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable, Iterator

from protocol.nfs3 import nfsstat3

from . import identity
from ..nfs3.dirlist import cookie_verifier
from .dirsync import DirSync, durability
from .idlefd import IdleIo
from .fchmod import chmod_fd
from .journaled import dir_fsync_covers_new_inodes
from .late_close import LateClose
from .syncfs import syncfs
from .backend import ModeKinds, TimeSet
from .cachedread import read_cached
from ..nfs3.errors import NfsError, NfsPending
from .handles import HANDLE_VERSION, KIND_REAL, pack_real, pack_real_fields, unpack_real
from .searchgate import SearchGate
from .searchslices import ABSENT, SearchSlices
from ..state.store import Store, StoreFull
from .utimens import futimens, utimensat

AT_FDCWD = -100
O_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
FS_IOC_GETVERSION = 0x80087601
MAX_NAME = 255
_S_IFMT, _S_IFDIR = 0o170000, stat.S_IFDIR  # (the file type bits: S_IFMT as a mask)
_S_IFREG, _S_IFLNK = stat.S_IFREG, stat.S_IFLNK
PLACES_MAX = 1_000_000  # inodes' places a sole writer remembers (~230 bytes each; ``_keep_place``)
PLACES_PER_NODE = 2     # ... and one of several workers, per cached node
MAX_DEPTH = 4096
STALE_MEMORY_SECONDS = 30.0
_UNREAD = object()      # ``record``: the caller did not read the place


def proc_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Node(ModeKinds):
    """An open object: its handle, O_PATH descriptor (for a file the server created, the
    read-only descriptor that created it; for a directory it made, a read-only one) and
    identity.

    The descriptors close when the last reference goes (CPython refcounting), so a node
    evicted from the cache while a call still uses it stays valid for that call.
    """

    __slots__ = ("fh", "fd", "ino", "gen", "mode", "parent", "name", "_io_fd", "_io_writable",
                 "_io_retired", "_io_lock", "_io_used", "_io_dirty", "_fresh", "plain", "_attrs_set",
                 "__weakref__")
    virtual = False  # a real object (nfsd/fs/backend.py, ObjectNode)

    def __init__(self, fh: bytes, fd: int, ino: int, gen: int, mode: int, parent: int, name: bytes) -> None:
        self.fh, self.fd, self.ino, self.gen, self.mode = fh, fd, ino, gen, mode
        self.parent, self.name = parent, name
        self._io_fd = -1
        self._io_writable = False
        #: the read-only descriptor a read-write one replaced, kept open until the node closes
        self._io_retired = -1
        self._io_lock = threading.Lock()
        self._io_used = False   # taken since ``LocalFS.detach_idle`` last looked
        self._io_dirty = False  # UNSTABLE data written since the last COMMIT (``close_detached``)
        self._fresh: os.stat_result | None = None
        #: ``fd`` is an ordinary descriptor, not O_PATH (the server made the object): fchmod,
        #: fchown and futimens take it as it is (``LocalFS._by_plain_fd``)
        self.plain = False
        self._attrs_set = False  # an attribute was set through the server (``_by_plain_fd``)

    def created_stat(self) -> os.stat_result | None:
        """The ``fstat`` taken when the server made this object, if nothing changed it since
        through the server (CREATE's and MKDIR's reply attributes without a second stat);
        given once, then forgotten, so no cached node keeps it or serves it stale."""
        st, self._fresh = self._fresh, None
        return st

    def io_fd(self, write: bool) -> int:
        """A read (or read-write) descriptor on the same inode, opened once and kept."""
        if not stat.S_ISREG(self.mode):
            raise NfsError(nfsstat3.NFS3ERR_ISDIR if self.is_dir else nfsstat3.NFS3ERR_INVAL)
        fd = self._io_fd
        self._io_used = True
        if fd >= 0 and (self._io_writable or not write):
            return fd
        with self._io_lock:
            if self._io_fd >= 0 and (self._io_writable or not write):
                return self._io_fd
            try:
                new = os.open(proc_path(self.fd), os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
                writable = True
            except PermissionError:
                if write:
                    raise
                new = os.open(proc_path(self.fd), os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
                writable = False
            # The descriptor replaced stays open: a call on another thread may have taken it
            # unlocked (the fast path above, fsync_new) and still be in its pread or fsync; if
            # it closed, the next open could reuse its number and that call would read another
            # file.  Only a read-only one is ever replaced (never the read-write one), so a node
            # keeps at most one retired descriptor.
            if self._io_fd >= 0:
                self._io_retired = self._io_fd
            self._io_fd, self._io_writable = new, writable
            return new

    def close(self) -> None:
        for fd in (self._io_fd, self._io_retired, self.fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._io_fd = self._io_retired = self.fd = -1

    def __del__(self) -> None:
        self.close()


def check_name(name: bytes) -> None:
    """Refuse names that are not a single path component (as knfsd does)."""
    if not name or b"/" in name or b"\0" in name:
        raise NfsError(nfsstat3.NFS3ERR_ACCES, f"illegal name {name!r}")
    if len(name) > MAX_NAME:
        raise NfsError(nfsstat3.NFS3ERR_NAMETOOLONG)


def read_generation(fd: int, mode: int) -> int:
    """The inode generation (FS_IOC_GETVERSION), or 0 where it cannot be had."""
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return 0  # never open devices, FIFOs or sockets just to read a number
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        try:
            io = os.open(proc_path(fd), flags)
        except PermissionError:
            # A caller the server acts as may not read it; the handle must not depend on who
            # looked the object up first (nfsd/fs/identity.py).
            with identity.as_server():
                io = os.open(proc_path(fd), flags)
    except OSError:
        return 0
    try:
        return ioctl_generation(io)
    finally:
        os.close(io)


def ioctl_generation(fd: int) -> int:
    """FS_IOC_GETVERSION on a descriptor opened for reading or writing; 0 if unsupported."""
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETVERSION, b"\0" * 8)
        return struct.unpack("q", raw)[0] & 0xFFFFFFFF
    except OSError:
        return 0


class LocalFS:
    """One exported directory tree."""

    def __init__(self, root: str, export_id: int, store: Store, max_nodes: int = 4096,
                 dirsync: DirSync | None = None) -> None:
        self.root_path = os.path.realpath(root)
        self.export_id = export_id
        self.store = store
        self.max_nodes = max_nodes
        self._lock = threading.Lock()
        self._dirsync = dirsync if dirsync is not None else DirSync()  # the server's: shared by exports
        self._nodes: OrderedDict[bytes, Node] = OrderedDict()
        self._recorded: dict[int, tuple[int, int, bytes]] = {}
        self._late = LateClose()  # removed files' nodes, closed after the reply (late_close.py)
        # False when other processes change the handle table too (``--workers``): then what
        # this one recorded may be out of date, and the committed record is asked instead
        self.sole_writer = True
        self._unsaved: set[int] = set()  # inodes whose place the full store could not take
        self._stale: dict[bytes, float] = {}
        fd = os.open(self.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.stat(fd)
        self.fsid = st.st_dev
        self.root_ino = st.st_ino
        gen = read_generation(fd, st.st_mode)
        self.root = Node(pack_real(export_id, st.st_ino, gen), fd, st.st_ino, gen, st.st_mode,
                         st.st_ino, b"")
        # where unplaced handles are looked for, within the gate's share of the time
        self._searches: SearchSlices[Node] = SearchSlices(fd, st.st_ino, SearchGate(), self._node_from_fd,
                                                          self._repair)

    # -- handles -> nodes -----------------------------------------------------------------
    def node(self, fh: bytes) -> Node:
        """The node for a handle; BADHANDLE if malformed, STALE if the object is gone."""
        n = self.cached(fh)
        if n is not None:
            return n
        return self._remember(self._load(fh))

    def cached(self, fh: bytes) -> Node | None:
        """The node of ``fh`` if it is in the node cache (or the root), else None: no
        parsing, no look-up in the store (``node`` does those)."""
        if fh == self.root.fh:
            return self.root
        with self._lock:
            n = self._nodes.get(fh)
            if n is not None:
                self._nodes.move_to_end(fh)  # recently used
            return n

    def _remember(self, n: Node) -> Node:
        with self._lock:
            existing = self._nodes.get(n.fh)
            if existing is not None:
                self._nodes.move_to_end(n.fh)
                return existing
            self._nodes[n.fh] = n
            while len(self._nodes) > self.max_nodes:
                self._nodes.popitem(last=False)
        return n

    def forget(self, fh: bytes) -> Node | None:
        """Drop the cached node of ``fh``; the node, if one was cached."""
        with self._lock:
            return self._nodes.pop(fh, None)

    def detach_idle(self) -> list[IdleIo]:
        """Take the I/O descriptors of the cached files idle since the last look, for the
        caller to close (nfsd/fs/idlefd.py).  A node used since then is only marked (its
        second chance: knfsd's REFERENCED flag).  A node is taken only if the cache alone
        refers to it, under the cache's lock (which every way to a cached node takes): no
        call holds it, so none is in a pread or fsync on its numbers, and none can take them
        after this.  Its I/O lock, had without waiting, stays held (a COMMIT or a reopen of
        the file waits) until the caller has fdatasync-ed what ``dirty`` says no COMMIT made
        durable, closed the numbers and called ``unlock``.  The node stays cached; its next
        use opens the file again."""
        unheld = 3  # ``sys.getrefcount``: the cache's reference, ``n``'s and the argument's
        taken: list[IdleIo] = []
        with self._lock:
            for n in self._nodes.values():
                if n._io_fd < 0 and n._io_retired < 0:
                    continue
                if n._io_used:
                    n._io_used = False
                    continue
                if sys.getrefcount(n) > unheld or not n._io_lock.acquire(blocking=False):
                    continue
                taken.append(IdleIo(n, n._io_fd, n._io_retired, n._io_dirty and n._io_writable,
                                    n._io_lock.release))
                n._io_fd = n._io_retired = -1
                n._io_writable = n._io_dirty = False
        return taken

    def stat(self, n: Node) -> os.stat_result:
        """Current attributes; STALE once the object has no name left."""
        try:
            st = os.stat(n.fd)
        except OSError as exc:
            raise NfsError(nfsstat3.NFS3ERR_STALE, str(exc)) from None
        if st.st_nlink == 0 and n is not self.root:
            self.forget(n.fh)
            raise NfsError(nfsstat3.NFS3ERR_STALE, "object was removed")
        return st

    def _load(self, fh: bytes) -> Node:
        h = unpack_real(fh)
        if h.export_id != self.export_id:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "handle of another export")
        seen = self._stale.get(fh)
        if seen is not None and time.monotonic() - seen < STALE_MEMORY_SECONDS:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "recently stale")
        rec = self.store.get_object(self.export_id, h.ino)
        if rec is not None and rec.deleted and rec.gen == h.gen:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "removed through the server")
        n = self._walk_to(h.ino) if rec is not None else None
        if n is None:
            n = self._find(h.ino, rec is None or rec.deleted)  # (a tombstone of another generation)
            if n is None and rec is not None and not rec.deleted and self._searches.gate.known_absent(h.ino):
                self._drop([(h.ino, rec.parent, rec.name)])  # gone unseen by the index: see ``_drop``
        if n is None or (h.gen and n.gen and n.gen != h.gen) or n.fh != fh:
            self._stale[fh] = time.monotonic()
            if len(self._stale) > 10000:
                self._stale.clear()
            raise NfsError(nfsstat3.NFS3ERR_STALE, f"inode {h.ino} not found")
        return n

    def _walk_to(self, ino: int) -> Node | None:
        """Open an object by walking its recorded names down from the root."""
        names: list[bytes] = []
        parent = ino
        while parent != self.root_ino:
            rec = self.store.get_object(self.export_id, parent)
            if rec is None or rec.deleted or len(names) > MAX_DEPTH:
                return None
            names.append(rec.name)
            parent = rec.parent
        fd = self.root.fd
        opened: list[int] = []
        try:
            for name in reversed(names):
                check_name(name)
                fd = os.open(name, O_PATH_FLAGS, dir_fd=fd)
                opened.append(fd)
        except (OSError, NfsError):
            for f in opened:
                os.close(f)
            return None
        for f in opened[:-1]:
            os.close(f)
        st = os.stat(fd)
        if st.st_ino != ino:
            os.close(fd)
            return None
        rec = self.store.get_object(self.export_id, ino)
        return self._node_from_fd(fd, st, rec.parent if rec else self.root_ino, names[0])

    def _find(self, ino: int, unplaced: bool) -> Node | None:
        """``_search`` for a handle the table could not place, as ``SearchGate`` allows,
        unless the current walk answers already (nfsd/fs/searchslices.py): None (STALE) if
        a complete walk proves it absent (the last one at all only for a handle with no
        live record: a recorded place may be newer than that walk); if walks used up their
        share, the inode joins the walk at once and the call is held (or JUKEBOX) until the
        background slices meet it (``SearchSlices.wait_for``)."""
        known = self._searches.known(ino)
        if isinstance(known, Node):
            return known
        if known is ABSENT:
            return None
        if unplaced and self._searches.gate.known_absent(ino):
            return None
        if not self._searches.gate.may_walk():
            self._searches.wait_for(ino)
        return self._search(ino)

    def _search(self, ino: int) -> Node | None:
        """Find an inode moved behind our back: walk the export for one slice (on in the
        background), repairing the handle table for every directory met; None if a walk
        ended without meeting it, ``NfsPending`` (held, or JUKEBOX) while it goes on
        (``SearchSlices``)."""
        return self._searches.search(ino)

    def _repair(self, dirs: list[tuple[int, int, bytes]]) -> None:
        """Record where a walk met these directories (inode, parent, name)."""
        recorded = self._recorded if self.sole_writer else {}
        try:  # (a generation not known here is read in the write transaction: ``put_places``)
            self.store.put_places(self.export_id, [(i, p, name, rec[1] if (rec := recorded.get(i)) else None)
                                                   for i, p, name in dirs])
        except StoreFull:
            pass  # only a cache of where directories are: the next search tries again

    def _known_gen(self, ino: int) -> int:
        rec = self._place(ino)
        if rec is not None:
            return rec[1]
        r = self.store.get_object(self.export_id, ino)
        return r.gen if r is not None else 0

    def _node_from_fd(self, fd: int, st: os.stat_result, parent: int, name: bytes,
                      gen: int | None = None, new: bool = False) -> Node:
        """``new``: the inode was just made by this call (``create_file``, ``_new_dir``)."""
        if gen is None:
            gen = read_generation(fd, st.st_mode)
        if gen == 0:
            rec = self.store.get_object(self.export_id, st.st_ino)
            if rec is not None and rec.parent == parent and rec.name == name:
                gen = rec.gen
        n = Node(pack_real(self.export_id, st.st_ino, gen), fd, st.st_ino, gen, st.st_mode, parent, name)
        self.record(st.st_ino, parent, gen, name, new=new)
        return n

    def _place(self, ino: int) -> tuple[int, int, bytes] | None:
        """(parent, generation, name) of an inode as last recorded: by this process, or
        (other workers writing too) in the handle table."""
        if self.sole_writer:
            return self._recorded.get(ino)
        rec = self.store.get_object(self.export_id, ino)
        return None if rec is None or rec.deleted else (rec.parent, rec.gen, rec.name)

    def record(self, ino: int, parent: int, gen: int, name: bytes, later: bool = False,
               new: bool = False, place: "tuple[int, int, bytes] | None | object" = _UNREAD) -> None:
        """Keep the handle table's (parent, name) for an inode current; ``later``: no caller
        needs to know now whether the store took it (``Store.end_burst``).  ``new``: an inode
        this call just made, whose place is written without first reading what is recorded
        (at most an old file's place or tombstone under a reused number; with ``--workers``
        that read is an LMDB read transaction per CREATE or MKDIR).  ``place``: what
        ``_place(ino)`` answered, when the caller has just read it (RENAME)."""
        if ino == self.root_ino:
            return
        value = (parent, gen, name)
        if not new and (self._place(ino) if place is _UNREAD else place) == value:
            if not self.sole_writer:  # LOOKUP's fast path finds its cached node by it
                self._keep_place(ino, value)
            return
        try:
            # from the event loop, in the burst being served (a thread-pool call: at once);
            # unless ``later``, only while the store surely has room (NOSPC is decided now)
            self.store.put_place(self.export_id, ino, parent, gen, name, not later)
        except StoreFull:
            if len(self._unsaved) > 100_000:
                self._unsaved.clear()
            self._unsaved.add(ino)
            return
        self._unsaved.discard(ino)
        self._keep_place(ino, value)

    def _keep_place(self, ino: int, value: tuple[int, int, bytes]) -> None:
        """Remember an inode's place in ``_recorded``, bounded by clearing it when full: a
        cache.  A sole writer keeps up to ``PLACES_MAX`` (its own REMOVEs and the index's
        reports take them out).  With other workers writing the table only LOOKUP's fast
        path reads it, for a node still cached, and a file another worker removes stays:
        under a soak (creates on one worker, listings and removes on another, inode
        numbers never reused on ext4 soon) it grew by ~230 bytes a file for hours, so
        then ``PLACES_PER_NODE`` times ``max_nodes``."""
        recorded = self._recorded
        if len(recorded) >= (PLACES_MAX if self.sole_writer else PLACES_PER_NODE * self.max_nodes):
            recorded.clear()
        recorded[ino] = value

    def handle_for_entry(self, dnode: Node, name: bytes, st: os.stat_result) -> bytes:
        """The handle of a directory entry without keeping it open (READDIRPLUS)."""
        with self._lock:
            rec = self._place(st.st_ino)
        if rec is not None and rec[0] == dnode.ino and rec[2] == name:
            gen = rec[1]
        else:
            gen = 0
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                try:
                    fd = os.open(name, O_PATH_FLAGS, dir_fd=dnode.fd)
                except OSError:
                    fd = -1
                if fd >= 0:
                    try:
                        if os.stat(fd).st_ino == st.st_ino:
                            gen = read_generation(fd, st.st_mode)
                    finally:
                        os.close(fd)
            self.record(st.st_ino, dnode.ino, gen, name, later=True, place=rec)  # (read just now)
        return pack_real(self.export_id, st.st_ino, gen)

    # -- names --------------------------------------------------------------------------
    def lookup(self, d: Node, name: bytes) -> Node:
        return self.lookup_attrs(d, name)[0]

    def lookup_attrs(self, d: Node, name: bytes) -> tuple[Node, os.stat_result | None]:
        """``lookup``, and the attributes it read of the object (LOOKUP's reply: no second
        ``fstat`` of what the look-up has just stat-ed; None for ``.`` and ``..``)."""
        # Every LOOKUP runs this, and a lone client's calls find the caches cold, where each
        # helper's code and objects cost about a microsecond (design.rst, "cold calls"): the
        # checks are written out (``is_dir``, ``check_name`` only to raise, ``pack_real``) and
        # a cached node is found and marked used under one hold of the lock (not ``_remember``).
        if d.mode & _S_IFMT != _S_IFDIR:
            raise NfsError(nfsstat3.NFS3ERR_NOTDIR)
        if name == b".":
            return d, None
        if name == b"..":
            return self.parent_of(d), None
        if not name or b"/" in name or b"\0" in name or len(name) > MAX_NAME:
            check_name(name)  # (raises)
        # Fast path: an object already open under this very name needs no new descriptor.
        st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        # (this process's own record is enough here, other workers or not: a cached node holds
        # its inode open, so that number cannot have been reused for another object)
        rec = self._recorded.get(st.st_ino)
        if rec is not None and rec[0] == d.ino and rec[2] == name:
            fh = pack_real_fields(HANDLE_VERSION, KIND_REAL, self.export_id, st.st_ino, rec[1] & 0xFFFFFFFF)
            nodes = self._nodes
            with self._lock:
                cached = nodes.get(fh)
                if cached is not None and cached.mode == st.st_mode:
                    nodes.move_to_end(fh)  # recently used (as ``_remember``)
                    return cached, st
        fd = os.open(name, O_PATH_FLAGS, dir_fd=d.fd)
        st = os.stat(fd)
        return self._adopt(fd, st, d.ino, name), st

    def parent_of(self, d: Node) -> Node:
        """``..`` of a directory; the export root is its own parent.

        The parent's own (parent, name) is learnt by climbing ``..`` until the export root:
        that also proves the directory is still inside the export (one moved out behind our
        back climbs to the file system root instead, and gets STALE)."""
        if d is self.root or d.ino == self.root_ino:
            return self.root
        fd = os.open("..", O_PATH_FLAGS | os.O_DIRECTORY, dir_fd=d.fd)
        st = os.stat(fd)
        if st.st_ino == self.root_ino:
            os.close(fd)
            return self.root
        try:
            grand, name = self._place_of(fd, st)
        except (OSError, NfsError):
            os.close(fd)
            raise
        return self._adopt(fd, st, grand, name)

    def _place_of(self, fd: int, st: os.stat_result) -> tuple[int, bytes]:
        """(parent inode, name) of the directory open as ``fd``, verified up to the root."""
        chain: list[tuple[int, int, bytes]] = []  # (ino, parent ino, name), child first
        cur = os.dup(fd)
        cur_ino = st.st_ino
        try:
            for _ in range(MAX_DEPTH):
                up = os.open("..", O_PATH_FLAGS | os.O_DIRECTORY, dir_fd=cur)
                up_ino = os.stat(up).st_ino
                if up_ino == cur_ino:  # reached "/" without meeting the export root
                    os.close(up)
                    raise NfsError(nfsstat3.NFS3ERR_STALE, "directory is no longer in the export")
                name = self._name_in(up, cur_ino)
                os.close(cur)
                cur, cur_ino_prev, cur_ino = up, cur_ino, up_ino
                chain.append((cur_ino_prev, up_ino, name))
                if up_ino == self.root_ino:
                    break
            else:
                raise NfsError(nfsstat3.NFS3ERR_STALE, "directory too deep")
        finally:
            os.close(cur)
        for ino, parent, name in chain:
            self.record(ino, parent, self._known_gen(ino), name)
        return chain[0][1], chain[0][2]

    def _name_in(self, dir_fd: int, ino: int) -> bytes:
        """The name under which ``ino`` appears in a directory (a scan: rare path)."""
        rfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            with os.scandir(rfd) as it:
                for e in it:
                    if e.inode() == ino:
                        return os.fsencode(e.name)
        finally:
            os.close(rfd)
        raise NfsError(nfsstat3.NFS3ERR_STALE, f"inode {ino} not found in its parent")

    def _adopt(self, fd: int, st: os.stat_result, parent: int, name: bytes,
               gen: int | None = None) -> Node:
        """Turn a freshly opened descriptor into the (shared) node for its object
        (``gen``: its generation, when the caller already has it)."""
        rec = self._recorded.get(st.st_ino)  # only to find a cached node: see ``lookup``
        if rec is not None and rec[0] == parent and rec[2] == name:
            fh = pack_real(self.export_id, st.st_ino, rec[1])
            with self._lock:
                existing = self._nodes.get(fh)
            if existing is not None and existing.mode == st.st_mode:
                os.close(fd)
                return self._remember(existing)
        return self._remember(self._node_from_fd(fd, st, parent, name, gen))

    def _entry_gone(self, ino: int) -> None:
        """An entry was removed through the server: tombstone it if it has no other name,
        and close what the server holds open of it (its blocks are freed only then; on the
        event loop once the reply has left, ``LateClose``)."""
        rec = self._recorded.pop(ino, None)
        if rec is not None:
            fh = pack_real_fields(HANDLE_VERSION, KIND_REAL, self.export_id, ino, rec[1] & 0xFFFFFFFF)
            with self._lock:  # (``forget`` written out)
                gone = self._nodes.pop(fh, None)
            if gone is not None:
                self._late.hold(gone)  # its descriptors close after the reply (late_close.py)
        self._unsaved.discard(ino)
        try:
            self.store.mark_deleted(self.export_id, ino, later=True)
        except StoreFull:
            pass  # without the tombstone its handle still turns STALE, after a search

    def vanished(self, places: list[tuple[int, int, bytes]]) -> None:
        """Entries (ino, parent, name) that vanished, as the index found: the places of those
        removed or moved behind the server's back go (``Store.drop_places``); the tombstone
        of one the server removed stays (its handle answers STALE without a search)."""
        if self._drop(places):
            self._searches.gate.moved()  # (the server's own removals and renames drop nothing)

    def _drop(self, places: list[tuple[int, int, bytes]]) -> int:
        """Drop live places (ino, parent, name) that no longer hold their inode; how many.
        Besides the index's reports, the place of a handle a complete walk did not find: a
        file that came and went behind the server's back between two index flushes was
        never known to the index, which cannot report it (it stayed until its inode number
        was reused); so it goes when first used (a handle never used again still stays)."""
        with self._lock:
            for ino, parent, name in places:
                rec = self._recorded.get(ino)
                if rec is not None and rec[0] == parent and rec[2] == name:
                    del self._recorded[ino]
        try:
            return self.store.drop_places(self.export_id, places)
        except StoreFull:
            return len(places)  # a cache: a wrong place only costs a search

    def purged(self, inos: list[int]) -> None:
        """Inodes the index forgot for good (an hour after they vanished, or at a full scan):
        their tombstones go (``Store.drop_tombstones``), so a workload that only removes does
        not grow the handle table without end; such a handle then costs what ``_find`` allows."""
        try:
            self.store.drop_tombstones(self.export_id, inos)
        except StoreFull:
            pass  # (a deletion: LMDB needs pages for it too) the next purge does not retry

    def _kept(self, n: Node, d: Node, name: bytes, undo: Callable[[], None]) -> Node:
        """A node just created as ``d/name``, if the handle table took its place; else the
        object is removed again (``undo``) and the call fails with ENOSPC."""
        if n.ino not in self._unsaved:
            self.fsync_new(d, n)  # first: see there
            self.fsync_dir(d)
            return n
        self.forget(n.fh)
        try:
            if self.lstat_at(d, name).st_ino == n.ino:
                undo()
        except OSError:
            pass
        raise StoreFull(f"cannot record {name!r}")

    # -- operations ---------------------------------------------------------------------
    def readlink(self, n: Node) -> bytes:
        if not n.is_link:
            raise NfsError(nfsstat3.NFS3ERR_INVAL, "not a symbolic link")
        return os.readlink(b"", dir_fd=n.fd)

    def create_file(self, d: Node, name: bytes, mode: int, exclusive: bool) -> Node:
        """Create a regular file; a non-exclusive create may reuse an existing one.

        An existing object that is not a regular file gets EXIST (as from knfsd): opening a
        FIFO for writing would block a server thread, opening a device would act on it.  The
        new file's identity and generation come from the descriptor that created it."""
        check_name(name)
        flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            # Read-only (the creator may open it so whatever its mode): closing it raises no
            # IN_CLOSE_WRITE for the watcher to handle, only the IN_CREATE.
            fd = os.open(name, flags | os.O_RDONLY | os.O_CREAT | os.O_EXCL, mode & 0o7777, dir_fd=d.fd)
            created = True
        except FileExistsError:
            if exclusive or not stat.S_ISREG(os.stat(name, dir_fd=d.fd, follow_symlinks=False).st_mode):
                raise
            fd = os.open(name, flags | os.O_WRONLY, dir_fd=d.fd)
            created = False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced between the two calls above
                raise FileExistsError(errno.EEXIST, "not a regular file", name)
            gen = ioctl_generation(fd)
            # a new file's node keeps the read-only descriptor that created it (no O_PATH one
            # opened through /proc, nor this one closed: two system calls less per CREATE)
            keep = fd if created else os.open(proc_path(fd), os.O_PATH | os.O_CLOEXEC)
        except BaseException:
            os.close(fd)
            raise
        if not created:
            os.close(fd)
            return self._adopt(keep, st, d.ino, name, gen)  # it existed before: served like any existing object
        # a new inode: no node can be cached for it (a cached node holds its inode open, so
        # that number is not free to reuse), so no look-up of one (``_adopt``)
        made = self._node_from_fd(keep, st, d.ino, name, gen, new=True)
        made.plain = True  # (on the node made here, whichever ``_remember`` answers)
        n = self._remember(made)
        n._fresh = st
        return self._kept(n, d, name, lambda: os.unlink(name, dir_fd=d.fd))

    def mkdir(self, d: Node, name: bytes, mode: int) -> Node:
        check_name(name)
        os.mkdir(name, mode & 0o7777, dir_fd=d.fd)
        n = self._kept(self._new_dir(d, name), d, name, lambda: os.rmdir(name, dir_fd=d.fd))
        return self._undo_umask(n, mode)

    def _new_dir(self, d: Node, name: bytes) -> Node:
        """The node of the directory just made as ``d/name``: held by a read-only descriptor
        whose generation is read straight from it (``lookup`` opens an ``O_PATH`` one, then
        a second through /proc for the generation, after a ``stat`` by name: four system
        calls more), and made without looking for a cached node (none can exist for a
        fresh inode, see ``create_file``).  A caller who may not read it gets ``lookup``'s."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d.fd)
        except OSError:  # no read permission (a 0300 directory), or replaced meanwhile
            return self.lookup(d, name)
        try:
            st = os.fstat(fd)
            gen = ioctl_generation(fd)
        except BaseException:
            os.close(fd)
            raise
        made = self._node_from_fd(fd, st, d.ino, name, gen, new=True)
        made.plain = True
        n = self._remember(made)
        n._fresh = st
        return n

    def symlink(self, d: Node, name: bytes, target: bytes) -> Node:
        check_name(name)
        if b"\0" in target:
            raise NfsError(nfsstat3.NFS3ERR_INVAL, "NUL in symlink target")
        os.symlink(target, name, dir_fd=d.fd)
        return self._kept(self.lookup(d, name), d, name, lambda: os.unlink(name, dir_fd=d.fd))

    def mknod(self, d: Node, name: bytes, mode: int, device: int = 0) -> Node:
        check_name(name)
        os.mknod(name, mode, device, dir_fd=d.fd)
        n = self._kept(self.lookup(d, name), d, name, lambda: os.unlink(name, dir_fd=d.fd))
        return self._undo_umask(n, mode)

    @staticmethod
    def _undo_umask(n: Node, mode: int) -> Node:
        """mkdir(2) and mknod(2) filter the mode through this process's umask, but the client
        already applied its own (knfsd creates with umask 0): restore the bits it took."""
        if n.mode & 0o777 != mode & 0o777:
            bits = (n.mode & 0o7000) | (mode & 0o777)
            if n.plain:  # MKDIR's read-only descriptor: no walk of /proc/self/fd
                os.fchmod(n.fd, bits)
            else:
                os.chmod(proc_path(n.fd), bits)
            n.mode = (n.mode & ~0o777) | (mode & 0o777)
            n._fresh = None  # its mode and ctime changed
        return n

    def remove(self, d: Node, name: bytes, directory: bool) -> None:
        # (the name check and the type test written out, as in ``lookup_attrs``: a lone
        # REMOVE runs cold)
        if not name or b"/" in name or b"\0" in name or len(name) > MAX_NAME:
            check_name(name)  # (raises)
        st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        if directory:
            os.rmdir(name, dir_fd=d.fd)
        else:
            if st.st_mode & _S_IFMT == _S_IFDIR:
                raise NfsError(nfsstat3.NFS3ERR_ISDIR)
            os.unlink(name, dir_fd=d.fd)
        if not durability.relaxed:  # (an async export: no fsync, ``fsync_dir`` not called)
            self.fsync_dir(d)
        if directory or st.st_nlink <= 1:
            self._entry_gone(st.st_ino)

    def rename(self, src: Node, sname: bytes, dst: Node, dname: bytes) -> None:
        check_name(sname)
        check_name(dname)
        st = os.stat(sname, dir_fd=src.fd, follow_symlinks=False)
        try:
            old = os.stat(dname, dir_fd=dst.fd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        os.rename(sname, dname, src_dir_fd=src.fd, dst_dir_fd=dst.fd)
        self.fsync_dir(dst)
        if src.ino != dst.ino:
            self.fsync_dir(src)
        if old is not None and old.st_ino != st.st_ino and (stat.S_ISDIR(old.st_mode) or old.st_nlink <= 1):
            self._entry_gone(old.st_ino)
        # its place read once, for its generation and to compare with the new one (with
        # ``--workers`` each read is an LMDB read transaction: ``_known_gen`` then ``record``
        # read it twice per RENAME)
        place = self._place(st.st_ino)
        gen = place[1] if place is not None else self._known_gen(st.st_ino)
        self.record(st.st_ino, dst.ino, gen, dname, later=True, place=place)

    def link(self, n: Node, d: Node, name: bytes) -> None:
        check_name(name)
        if n.is_dir:
            raise NfsError(nfsstat3.NFS3ERR_ISDIR)
        try:
            os.link(proc_path(n.fd), name, dst_dir_fd=d.fd, follow_symlinks=True)
        except PermissionError as exc:
            # The kernel refuses a protected hard link (fs.protected_hardlinks: EPERM) before
            # it looks at the directory; knfsd and Ganesha check the directory first (ACCES).
            if exc.errno == errno.EPERM and not os.access(".", os.W_OK | os.X_OK, dir_fd=d.fd,
                                                          effective_ids=True):
                raise NfsError(nfsstat3.NFS3ERR_ACCES, "no write permission on the directory") from None
            raise
        self.fsync_new(d, n)  # its link count changed (first: see there)
        self.fsync_dir(d)

    def set_mode(self, n: Node, mode: int) -> None:
        """A chmod, the most common SETATTR: the descriptor ``_by_plain_fd`` would choose,
        taken here when it is there already (no generic call with its argument tuple)."""
        kind = n.mode & _S_IFMT  # (n.is_link without the property's frame)
        if kind == _S_IFLNK:
            return  # Linux keeps no mode on symbolic links
        bits = mode & 0o7777
        if n.plain:
            os.fchmod(n.fd, bits)
            return
        if kind == _S_IFREG and n._io_fd >= 0:
            with n._io_lock:  # (as in ``_by_plain_fd``: a WRITE's upgrade closes the old one)
                fd = n._io_fd
                if fd >= 0:
                    os.fchmod(fd, bits)
                    return
        if not self._by_plain_fd(n, os.fchmod, bits):
            chmod_fd(n.fd, bits)

    @staticmethod
    def _by_plain_fd(n: Node, op: Callable[..., object], *args: object) -> bool:
        """Call ``op(fd, *args)`` (fchmod, fchown, futimens: C calls on a descriptor) with an
        ordinary descriptor of ``n``: its own when the server made the object, else its
        read/write one, opened read-only (as the server; kept for READ and WRITE) when a
        regular file has none and had an attribute set before.  The O_PATH descriptor a
        looked-up object is held by takes none of them: through /proc/self/fd a chown or
        utimensat walks procfs (about 3.5 us more), fchmodat2 goes through ctypes (1.2 us
        more).  Opening one costs about 5 us and a close later, so a file set once (``chmod
        -R``, ``touch`` of many files) keeps the path way; the second time pays it back.  The
        permission check is the same: the kernel asks it of the inode, as the thread's
        file-system identity, not of the descriptor.  False: no such descriptor (a
        directory or special file the server looked up, a first change, or a file the
        server may not open): the caller goes the path way."""
        if n.plain:
            op(n.fd, *args)
            return True
        if n.mode & 0o170000 != stat.S_IFREG:
            return False
        with n._io_lock:  # (a WRITE's upgrade of the read/write descriptor closes the old one)
            fd = n._io_fd
            if fd < 0:
                if not n._attrs_set:
                    n._attrs_set = True
                    return False
                try:
                    fd = LocalFS._open_readonly(n)
                except OSError:
                    return False
                n._io_fd, n._io_writable = fd, False
            op(fd, *args)
        return True

    def _link_parent(self, n: Node) -> Node:
        """The directory holding symlink ``n`` under ``n.name`` (verified), for the few calls
        that cannot go through /proc/self/fd without following the link.  The name the node
        was opened under may be out of date (renamed through the server or behind its back,
        or that hard link removed): then try the handle table's, then search the export, and
        remember the name found in the node."""
        places = [(n.parent, n.name)]
        rec = self.store.get_object(self.export_id, n.ino)
        if rec is not None and not rec.deleted:
            places.append((rec.parent, rec.name))
        for attempt in range(2):
            for parent_ino, name in places:
                parent = self.root if parent_ino == self.root_ino else self._walk_to(parent_ino)
                try:
                    if parent is not None and self.lstat_at(parent, name).st_ino == n.ino:
                        n.parent, n.name = parent_ino, name
                        return parent
                except OSError:
                    pass
            try:
                moved = self._search(n.ino) if attempt == 0 else None
            except NfsPending as pending:  # never held: its callers may have changed something
                pending.ready.cancel()
                raise NfsError(nfsstat3.NFS3ERR_JUKEBOX, str(pending)) from None
            if moved is None:
                break
            places = [(moved.parent, moved.name)]
        raise NfsError(nfsstat3.NFS3ERR_STALE, "symbolic link not found")

    def set_owner(self, n: Node, uid: int, gid: int) -> None:
        if n.is_link:
            parent = self._link_parent(n)  # keep the node (and its fd) alive across the call
            os.chown(n.name, uid, gid, dir_fd=parent.fd, follow_symlinks=False)
        elif not self._by_plain_fd(n, os.fchown, uid, gid):
            os.chown(proc_path(n.fd), uid, gid)

    def truncate(self, n: Node, size: int) -> None:
        """Through the file's shared read-write descriptor, so the caller's write permission
        (the owner always has it, as in knfsd) is checked here first: the descriptor may
        have been opened for someone else.  The truncation itself acts as the caller, so the
        kernel clears set-user-ID and set-group-ID bits as for that user."""
        if n.is_dir:
            raise NfsError(nfsstat3.NFS3ERR_ISDIR)
        if not stat.S_ISREG(n.mode):
            raise NfsError(nfsstat3.NFS3ERR_INVAL)
        ident = identity.current()
        if ident is not None and ident.uid != 0:
            if not identity.may(self.stat(n), ident, identity.W, owner_override=True):
                raise NfsError(nfsstat3.NFS3ERR_ACCES, "no write permission to truncate")
            with identity.as_server():
                fd = n.io_fd(write=True)
        else:
            fd = n.io_fd(write=True)
        os.truncate(fd, size)

    def set_times(self, n: Node, atime: TimeSet, mtime: TimeSet) -> None:
        """Set either timestamp or both (None: leave it), as knfsd does: to the server's
        time with write permission or ownership, to a client's time with ownership only.

        The kernel's utimensat asks ownership as soon as the two are not both the current
        time (``touch -a``), so when it refuses a caller who asked only for the server's
        time, write permission is asked of the kernel (``faccessat`` as the caller: ACLs
        count) and the times are set as the server.  Without it the answer is ACCES, not
        PERM (knfsd checks write permission first)."""
        parent = None
        if n.is_link:
            parent = self._link_parent(n)  # keep the node (and its fd) alive across the call
            dir_fd, path, follow = parent.fd, n.name, False
        else:
            dir_fd, path, follow = AT_FDCWD, os.fsencode(proc_path(n.fd)), True
        try:
            if parent is not None or not self._by_plain_fd(n, futimens, atime, mtime):
                utimensat(dir_fd, path, atime, mtime, follow)
        except PermissionError as exc:
            client_time = isinstance(atime, int) or isinstance(mtime, int)
            if exc.errno != errno.EPERM or client_time or identity.current() is None:
                raise
            if not os.access(path, os.W_OK, dir_fd=None if dir_fd == AT_FDCWD else dir_fd,
                             effective_ids=True, follow_symlinks=follow):
                raise NfsError(nfsstat3.NFS3ERR_ACCES, "no write permission to set times") from None
            with identity.as_server():
                utimensat(dir_fd, path, atime, mtime, follow)

    def read(self, n: Node, offset: int, count: int, cached: bool = False) -> bytes | memoryview:
        if cached:  # the event loop: the page cache or WouldBlock (nfsd/fs/cachedread.py)
            return read_cached(n.io_fd(write=False), offset, count)
        return os.pread(n.io_fd(write=False), count, offset)

    def write(self, n: Node, offset: int, data: memoryview, sync: int) -> int:
        """Write all of ``data``; ``sync`` 0 = buffered, 1 = data durable, 2 = file durable
        (buffered on an ``async`` export, as knfsd: ``nfsd.fs.dirsync.durability``)."""
        fd = n.io_fd(write=True)
        done = 0
        total = len(data)
        while done < total:
            done += os.pwrite(fd, data[done:], offset + done)
        if durability.relaxed:
            pass
        elif not sync:
            n._io_dirty = True  # after the data: ``commit`` clears it before its fsync
        elif sync == 1:
            os.fdatasync(fd)
        elif sync == 2:
            os.fsync(fd)
        return done

    def commit(self, n: Node) -> None:
        if stat.S_ISREG(n.mode) and not durability.relaxed:  # async export: no fsync (knfsd)
            n._io_dirty = False
            try:
                os.fsync(n.io_fd(write=False))
            except OSError:
                n._io_dirty = True
                raise

    def open_for_writing(self, n: Node) -> None:
        if stat.S_ISREG(n.mode):
            n.io_fd(write=True)

    def put_verifier(self, n: Node, verf: bytes) -> None:
        # on an async export not flushed, as knfsd's (it keeps the verifier in the inode)
        self.store.put_verifier(self.export_id, n.ino, n.gen, verf, durable=not durability.relaxed)

    def verifier(self, n: Node) -> bytes | None:
        return self.store.get_verifier(self.export_id, n.ino, n.gen)

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(self.root_path)

    def scandir(self, d: Node) -> Iterator[tuple[bytes, int]]:
        """(name, inode) of each entry, without ``.`` and ``..``."""
        for name, ino, _ in self.scandir_typed(d):
            yield name, ino

    def scandir_typed(self, d: Node) -> Iterator[tuple[bytes, int, bool]]:
        """(name, inode, is a directory) of each entry, without following symlinks."""
        if not d.is_dir:
            raise NfsError(nfsstat3.NFS3ERR_NOTDIR)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=d.fd)
        try:
            with os.scandir(fd) as it:
                for e in it:
                    yield os.fsencode(e.name), e.inode(), e.is_dir(follow_symlinks=False)
        finally:
            os.close(fd)

    def cookie_verifier(self, d: Node) -> bytes:
        return cookie_verifier(d.fh)

    def listing_key(self, d: Node) -> None:
        """Real directories are known by their mtime and ctime only (see ListingCache)."""
        return None

    def lstat_at(self, d: Node, name: bytes) -> os.stat_result:
        return os.stat(name, dir_fd=d.fd, follow_symlinks=False)

    def entry(self, d: Node, name: bytes) -> tuple[os.stat_result, bytes]:
        """Attributes and handle of a directory entry, without keeping it open (READDIRPLUS)."""
        st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        return st, self.handle_for_entry(d, name, st)

    def fsync_dir(self, d: Node) -> None:
        """Make a directory's entries durable before the reply, as NFSv3 requires of CREATE,
        MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME and LINK (RFC 1813, 'stable storage';
        knfsd's commit_metadata on a sync export): the client never resends a change it was
        told is done, so a power loss must not undo it.  A new object's own inode is made
        durable too (``fsync_new``).  Concurrent changes in one directory share fsyncs
        (``nfsd.fs.dirsync``); in a burst served by the event loop the fsync is deferred to
        the burst's end and its replies wait for it (``DirSync.end_burst``)."""
        if durability.relaxed:
            return  # an async export: ``DirSync.sync`` would return at once (no closures made)
        key = (self.fsid, d.ino)
        if self._dirsync.joined(key):
            return  # the burst's fsync of it, deferred already, covers this change too
        self._fsync_opened(key, lambda: self._dir_fd(d))

    def _fsync_opened(self, key: tuple[int, int], open_fd: Callable[[], int],
                      unopenable: Callable[[], None] | None = None) -> None:
        """Through ``DirSync`` (``key``: the inode), an fsync of the descriptor ``open_fd()``
        opens, closed after (DirSync's AIO jobs call ``open_fd`` themselves); ``unopenable()``
        instead if it cannot be opened."""
        def fsync() -> None:
            try:
                fd = open_fd()
            except OSError:
                if unopenable is None:
                    raise
                return unopenable()
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync.open_fd = open_fd  # type: ignore[attr-defined]  # for DirSync's AIO jobs
        self._dirsync.sync(key, fsync)

    @staticmethod
    def _dir_fd(d: Node) -> int:
        """A read-only descriptor of directory ``d`` to fsync (or syncfs) it by; opened as the
        server: a caller may write and search a directory it may not read (a 0733 drop box),
        and the change is made already."""
        with identity.as_server():
            return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=d.fd)

    @staticmethod
    def _open_readonly(n: Node) -> int:
        """A new ordinary read-only descriptor of ``n`` (a regular file or directory), through
        the O_PATH one it is held by, opened as the server (the caller's right to the change
        was checked already): ``_by_plain_fd`` keeps it, ``fsync_new`` fsyncs and closes it."""
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | (os.O_DIRECTORY if n.is_dir else 0)
        with identity.as_server():
            return os.open(proc_path(n.fd), flags)

    def fsync_new(self, d: Node, n: Node) -> None:
        """Make the inode of an object just made in ``d`` (CREATE, MKDIR, SYMLINK, MKNOD) or
        just linked there (LINK: its link count changed) durable before the reply, as knfsd's
        commit_metadata does of the child as well as the parent.  On ext4 without a journal
        the directory's fsync writes the directory's blocks and inode only: after a power loss
        the acknowledged entry would point at an inode never written (fsck drops the file).
        Not where the directory's fsync is known to commit the new inode with the entry (ext4
        with a journal, XFS: ``nfsd.fs.journaled``): there this fsync would find nothing to
        commit and only flush the device's cache again.

        A regular file or directory is fsynced by a read-only descriptor (its own when the
        server made it); a symbolic link, device, FIFO or socket cannot be opened for an fsync
        (``nfsd.fs.syncfs``), nor a file the server may not read: its file system is synced.
        Keyed by its inode in ``DirSync``, so a burst's new objects are fsynced together after
        it (through AIO when each says how to open it, ``open_fd``), as its directories are.
        Asked for before ``fsync_dir``, so a lone call's fsyncs run in that order: on a
        journaled file system not recognised the first fsync commits both and the directory's
        finds nothing; the other way round the file's, its transaction committed already,
        still flushes the device's cache (journaled loop ext4, us per create: dir only 344,
        dir then file 459, file then dir 349; scripts/benchmarks/bench_metadata_sync.py)."""
        if durability.relaxed:
            return
        st = n._fresh  # CREATE's and MKDIR's fstat, not given out yet
        if dir_fsync_covers_new_inodes(st.st_dev if st is not None else os.fstat(n.fd).st_dev):
            return  # a journal commits it with the entry (``nfsd.fs.journaled``)

        def whole_fs() -> None:
            fd = self._dir_fd(d)  # the object is on its directory's file system
            try:
                syncfs(fd)
            finally:
                os.close(fd)

        if not (stat.S_ISREG(n.mode) or stat.S_ISDIR(n.mode)):
            self._dirsync.sync((self.fsid, n.ino), whole_fs)
            return

        def open_fd() -> int:
            if n.plain:  # the read-only descriptor the server made it with
                return os.dup(n.fd)
            if n._io_fd >= 0:
                return os.dup(n._io_fd)
            return self._open_readonly(n)

        self._fsync_opened((self.fsid, n.ino), open_fd, whole_fs)  # whole_fs: not readable even by the server

    def flush(self) -> None:
        """fsync every file opened for writing, so a clean shutdown leaves nothing in
        flight even for clients that never sent COMMIT."""
        with self._lock:
            nodes = list(self._nodes.values())
        for n in nodes:
            if n._io_writable and n._io_fd >= 0:
                try:
                    os.fsync(n._io_fd)
                except OSError:
                    pass

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._nodes.clear()
        self._late.release()  # removed files' nodes a stopped loop did not turn for
        self._searches.close()
        self.root.close()

