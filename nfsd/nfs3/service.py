"""The 22 NFSv3 procedures (RFC 1813) over a ``Backend`` (nfsd/fs/backend.py).

Each handler takes the call context and the decoded arguments and returns the result value
``(nfsstat3, resok | resfail)``; it never builds bytes.  Failures carry full weak cache
consistency data (pre-op and post-op attributes) wherever the objects involved are known.
"""
from __future__ import annotations

import errno
import os
import stat
import threading
from threading import get_ident
from typing import Any, Callable, Mapping

from protocol import nfs3
from protocol.nfs3 import NFS3_OK, nfsstat3
from protocol.rpc import Credentials

from .attrs import fattr, wcc, wcc_before
from ..rpc.burst import Burst
from ..rpc.call import MAX_TRANSFER, CallContext
from .dirlist import DOT_COOKIE, DOTDOT_COOKIE, FIRST_NAME_COOKIE, EntryCache, ListingCache
from .errors import NfsError, NfsPending, status_of
from ..fs.handles import handle_kind
from ..fs import identity
from ..fs.identity import ACTING as _ACTING_AS_CALLER
from ..fs.backend import SERVER_TIME, Backend, ObjectNode as Node, StatResult, TimeSet
from ..fs.localfs import Node as RealNode
from ..fs.shared_verifier import WriteVerifier
from ..state.store import Store

RTMAX = WTMAX = MAX_TRANSFER
_fh = nfs3.nfs_fh3.cls
# Results of the busiest modifying calls, built with tuple.__new__ (one C call; the classes'
# own __new__ is a Python function).
_new = tuple.__new__


def _never() -> bool:
    return False


_SETATTR_OK = nfs3.SETATTR3resok.cls
_GETATTR_OK = nfs3.GETATTR3resok.cls
_ACCESS_OK = nfs3.ACCESS3resok.cls
_LOOKUP_OK = nfs3.LOOKUP3resok.cls
_wcc_data = nfs3.wcc_data.cls
_WRITE_OK = nfs3.WRITE3resok.cls
_MAX_FILE = (1 << 63) - 1
#: errors of a WRITE or COMMIT that say nothing of the data already written, so the write
#: verifier stays: knfsd's (``commit_reset_write_verifier``: EAGAIN, ESTALE; EINVAL, a
#: COMMIT it cannot do) and the refusals it makes before writing (permission, a read-only
#: file system, a file being executed, a directory)
_VERIFIER_KEPT = frozenset((errno.EAGAIN, errno.ESTALE, errno.EINVAL, errno.EACCES, errno.EPERM,
                            errno.EROFS, errno.ETXTBSY, errno.EISDIR))
_MAX_MAJOR, _MAX_MINOR = 1 << 12, 1 << 20  # the kernel's dev_t: 12 bits of major, 20 of minor
# Encoded sizes of a directory entry: list flag, fileid, name length, cookie; READDIRPLUS adds
# post_op_attr (flag + fattr3) and post_op_fh3 (flag + length + 16-byte handle).
_ENTRY_BYTES = 4 + 8 + 4 + 8
_PLUS_BYTES = 4 + 84 + 4 + 4 + 16
# RPC reply header, status, directory attributes, verifier and the closing flags.
_REPLY_OVERHEAD = 24 + 4 + 88 + 8 + 8
# New objects are chowned to the caller by hand only by a root server that cannot act as its
# callers; acting as them (nfsd/fs/identity.py), the kernel makes new objects theirs, applying
# the set-group-ID directory rule too.
_IS_ROOT = os.geteuid() == 0 and not _ACTING_AS_CALLER
# The mode of a file created without one (EXCLUSIVE, or a sattr3 without a mode): the
# owner's only, as from Ganesha, until the client's SETATTR says otherwise (knfsd uses 0).
NEW_FILE_MODE = 0o600
# plain ints: an attribute of an XDR enum is a __getattr__ and an IntEnum look-up per call
GUARDED, EXCLUSIVE = int(nfs3.createmode3.GUARDED), int(nfs3.createmode3.EXCLUSIVE)


def access_bits(st: StatResult, cred: Credentials, wanted: int) -> int:
    """ACCESS3 rights from the mode bits for an AUTH_SYS identity (AUTH_NONE = nobody)."""
    uid = cred.uid if cred.uid is not None else 65534
    gid = cred.gid if cred.gid is not None else 65534
    mode = st.st_mode
    is_dir = stat.S_ISDIR(mode)
    if uid == 0:
        perm = 0o7
        if not is_dir and not mode & 0o111:
            perm &= ~0o1
    elif uid == st.st_uid:
        perm = (mode >> 6) & 7
    elif gid == st.st_gid or st.st_gid in cred.gids:
        perm = (mode >> 3) & 7
    else:
        perm = mode & 7
    granted = 0
    if perm & 4:
        granted |= nfs3.ACCESS3_READ
    if perm & 2:
        granted |= nfs3.ACCESS3_MODIFY | nfs3.ACCESS3_EXTEND
        if is_dir:
            granted |= nfs3.ACCESS3_DELETE
    if perm & 1:
        granted |= nfs3.ACCESS3_LOOKUP if is_dir else nfs3.ACCESS3_EXECUTE
    return granted & wanted


def _time_set(how_time: tuple[int, Any]) -> TimeSet:
    """A set_atime / set_mtime union as ``set_times`` takes it."""
    how, t = how_time
    if how == nfs3.time_how.SET_TO_SERVER_TIME:
        return SERVER_TIME
    if how == nfs3.time_how.SET_TO_CLIENT_TIME:
        return t.seconds * 1_000_000_000 + t.nseconds
    return None


def _read_umask() -> int:
    """This process's umask, read without changing it (os.umask would, for a moment, for
    every thread)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: never skip the chmod


_UMASK = _read_umask()


def umask_keeps(mode: int) -> bool:
    """Whether a file created with ``mode`` by this process gets exactly that mode: the
    umask takes none of its bits (set-id bits aside, which only a chmod may set)."""
    return not mode & (_UMASK | 0o7000)



class _CallHandles(threading.local):
    """Per thread: what the export guard resolved for the call it serves.  A class default,
    not ``getattr(local, name, None)``: a name a thread never set costs an AttributeError
    raised and caught inside getattr (0.35 us against 0.05), and most calls never set it."""

    resolved: "list[tuple[bytes, Backend, Node]] | None" = None


class Nfs3Service:
    """Handlers named after the procedures, as the dispatcher looks them up."""

    def __init__(self, exports: Mapping[int, Backend], store: Store, write_verifier: bytes | WriteVerifier,
                 entries: EntryCache | None = None) -> None:
        self.exports = exports
        self.store = store
        # shared by every worker (nfsd/fs/shared_verifier.py); bytes: this service's own
        self.verifier = (write_verifier if isinstance(write_verifier, WriteVerifier)
                         else WriteVerifier(write_verifier))
        self.listings = ListingCache()
        # Encoded READDIRPLUS entries; used for an export once app.py has its directories
        # watched (EntryCache.enable).
        self.entries = entries if entries is not None else EntryCache()
        self._create_lock = threading.Lock()
        #: whether the call being decided is a lone client's only one (app.py: the
        #: transport's ``ConnectionActivity.lone_call``): its small stable WRITE runs inline
        self.lone_call: Callable[[], bool] = _never
        #: the dispatcher's burst (app.py): a READ served in it reads the page cache only
        self.burst = Burst()
        # the handles the export guard resolved for the call this thread serves (``resolved``)
        self._call = _CallHandles()
        self._by_prefix: dict[bytes, Backend] = {}  # see _export_of

    # -- helpers ------------------------------------------------------------------------
    def resolve(self, fh: bytes) -> tuple[Backend, Node]:
        """The backend and node of a handle; a handle the guard already resolved for this
        call (as the server, before acting as the caller) is not resolved again."""
        done = self._call.resolved
        if done is not None:
            for known, known_fs, n in done:
                if known is fh:
                    return known_fs, n
        fs = self._by_prefix.get(fh[:4])
        if fs is None:
            fs = self._export_of(fh)
        return fs, fs.node(fh)

    def _export_of(self, fh: bytes) -> Backend:
        """The backend of a handle's export, remembered by the handle's first four bytes
        (version, kind, export id: what ``handle_kind`` checks and reads), so the next
        handle of that export is not parsed again.  Few entries: kinds times exports."""
        _kind, export_id = handle_kind(fh)
        fs = self.exports.get(export_id)
        if fs is None:
            raise NfsError(nfsstat3.NFS3ERR_STALE, f"no export {export_id}")
        if len(self._by_prefix) >= 1024:
            self._by_prefix.clear()
        self._by_prefix[fh[:4]] = fs
        return fs

    def reset_write_verifier(self) -> None:
        """A write-back error lost data an UNSTABLE WRITE was acknowledged for: a new write
        verifier (the boot's prefix kept), for every worker, makes clients resend what they
        have not seen committed, as knfsd's ``nfsd_reset_write_verifier`` (nfsd/fs/idlefd.py,
        ``_write_failed``)."""
        self.verifier.reset()

    def _write_failed(self, exc: BaseException) -> None:
        """A WRITE or COMMIT failed: as knfsd (``nfsd_vfs_write``, ``nfsd_commit``), unless
        the error says nothing of the data (``_VERIFIER_KEPT``) the verifier changes, before
        this call's reply and so before any later reply of any worker carries it: a failed
        fsync or fdatasync may have lost earlier UNSTABLE data of the file for good."""
        if isinstance(exc, OSError) and exc.errno not in _VERIFIER_KEPT:
            self.reset_write_verifier()

    def resolved(self, found: list[tuple[bytes, Backend, Node]] | None) -> None:
        """What ``resolve`` answers without resolving for the rest of this thread's call (the
        export guard's resolution of the call's handles); None when the call ends.  Matched
        by identity: the handle bytes the guard resolved are the very objects the handler
        is given, so nothing can match across calls."""
        self._call.resolved = found

    @staticmethod
    def _attr(fs: Backend, n: Node) -> Any:
        """post_op_attr: attributes, or None if they cannot be had."""
        try:
            return fattr(fs.stat(n), fs.fsid)
        except (OSError, NfsError):
            return None

    @staticmethod
    def _pre(fs: Backend, n: Node) -> Any:
        try:
            return wcc_before(fs.stat(n))
        except (OSError, NfsError):
            return None

    def _wcc(self, fs: Backend, n: Node, pre: Any) -> Any:
        return wcc(pre, self._attr(fs, n))

    def _changed(self, d: Node, *names: bytes, export_id: int | None = None) -> None:
        """The server changed directory ``d`` (entries ``names``): its listing, those
        entries' cached attributes and its own entry in its parent are out of date.
        ``export_id``: its export's, when known (else read from its handle)."""
        self.listings.invalidate(d.fh)
        if export_id is None:
            export_id = handle_kind(d.fh)[1]
        entries = self.entries
        # (each entry's ``changed`` forgets the directory's own entry in its parent too: no
        # separate call for the directory, callers always name an entry)
        for name in names:
            entries.changed(export_id, d.ino, name)
        self._touched(d, export_id)  # its own entry in its parent (mtime, nlink), listed there or not

    def _touched(self, n: Node, export_id: int | None = None) -> None:
        """The server changed object ``n``'s attributes: its entry in the directory it was
        found in is out of date (other hard links: the watcher, or the cache's age).
        ``export_id``: its export's, when known (else read from its handle)."""
        if isinstance(n, RealNode):  # virtual objects are in no entry cache
            self.entries.changed(handle_kind(n.fh)[1] if export_id is None else export_id, n.parent, n.name)

    def _apply_sattr(self, fs: Backend, n: Node, sa: Any, ctx: CallContext | None = None,
                     mode: bool = True) -> bool:
        """Apply a sattr3 (size, owner, mode, times), in the order knfsd uses; ``mode``
        False: not its mode (a new object that has it already).  Whether anything was set."""
        applied = False
        if sa.size is not None:
            if sa.size > _MAX_FILE:
                raise NfsError(nfsstat3.NFS3ERR_FBIG)
            fs.truncate(n, sa.size)
            applied = True
        uid = sa.uid
        gid = sa.gid
        if uid is None and gid is None and ctx is not None and _IS_ROOT and ctx.cred.uid is not None:
            uid, gid = ctx.cred.uid, ctx.cred.gid  # new objects belong to the caller
        if uid is not None or gid is not None:
            fs.set_owner(n, -1 if uid is None else uid, -1 if gid is None else gid)
            applied = True
        if mode and sa.mode is not None:
            fs.set_mode(n, sa.mode)
            applied = True
        if sa.atime[0] or sa.mtime[0]:
            # Each timestamp as asked, the other left alone (not rewritten from a read).
            fs.set_times(n, _time_set(sa.atime), _time_set(sa.mtime))
            applied = True
        return applied

    def _new_attr(self, fs: Backend, n: Node, changed: bool) -> Any:
        """post_op_attr of an object this call just made: the ``fstat`` taken as it was made
        when nothing was set on it since (``changed`` False), else a fresh ``stat``."""
        st = n.created_stat() if type(n) is RealNode else None
        if st is None or changed:
            return self._attr(fs, n)
        return fattr(st, fs.fsid)

    def _created(self, fs: Backend, d: Node, pre: Any, make: Callable[[], Node],
                 sattr: Any, ctx: CallContext, ok: Any, fail: Any, name: bytes) -> tuple[int, Any]:
        """Shared body of CREATE/MKDIR/SYMLINK/MKNOD: make, set attributes but the mode
        (``make`` gave the object its mode), answer."""
        try:
            n = make()
            changed = sattr is not None and self._apply_sattr(fs, n, sattr, ctx, mode=False)
        except NfsPending:
            raise  # held (tagging while the index is built, nfsd/fs/tag_dirs.py): nothing changed
        except (OSError, NfsError) as exc:
            return status_of(exc), fail(self._wcc(fs, d, pre))
        finally:
            self._changed(d, name)
        return NFS3_OK, ok(_fh(n.fh), self._new_attr(fs, n, changed), self._wcc(fs, d, pre))

    # -- procedures ---------------------------------------------------------------------
    def NULL(self, ctx: CallContext, a: None) -> None:
        return None

    def GETATTR(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.object.data)
        return NFS3_OK, _new(_GETATTR_OK, (fattr(fs.stat(n), fs.fsid),))

    def SETATTR(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.object.data)
        st = fs.stat(n)
        pre = wcc_before(st)
        if a.guard is not None and a.guard != pre.ctime:  # both nfstime3: (seconds, nseconds)
            return nfsstat3.NFS3ERR_NOT_SYNC, nfs3.SETATTR3resfail.cls(wcc(pre, fattr(st, fs.fsid)))
        sa = a.new_attributes
        try:
            if (sa.mode is not None and sa.size is None and sa.uid is None and sa.gid is None
                    and not sa.atime[0] and not sa.mtime[0]):
                fs.set_mode(n, sa.mode)  # a chmod, the most common SETATTR
            else:
                self._apply_sattr(fs, n, sa)
        except (OSError, NfsError) as exc:
            return status_of(exc), nfs3.SETATTR3resfail.cls(self._wcc(fs, n, pre))
        finally:
            self._touched(n, fs.export_id)
        try:  # (``_attr`` written out)
            post = fattr(fs.stat(n), fs.fsid)
        except (OSError, NfsError):
            post = None
        return NFS3_OK, _new(_SETATTR_OK, (_new(_wcc_data, (pre, post)),))

    def LOOKUP(self, ctx: CallContext, a: Any) -> Any:
        # (the result built with tuple.__new__ and the directory's attributes read here, not
        # through ``_attr``: three Python functions fewer on the VM's most frequent call,
        # which comes alone and finds the caches cold: design.rst, "cold calls")
        what = a.what
        fs, d = self.resolve(what.dir.data)
        try:
            n, st = fs.lookup_attrs(d, what.name)
            attrs = fattr(fs.stat(n) if st is None else st, fs.fsid)
        except NfsPending:
            raise  # held (a query directory while the index is built): nothing was changed
        except (OSError, NfsError) as exc:
            return status_of(exc), nfs3.LOOKUP3resfail.cls(self._attr(fs, d))
        try:
            dir_attrs = fattr(fs.stat(d), fs.fsid)
        except (OSError, NfsError):
            dir_attrs = None
        return NFS3_OK, _new(_LOOKUP_OK, (_new(_fh, (n.fh,)), attrs, dir_attrs))

    def ACCESS(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.object.data)
        st = fs.stat(n)
        return NFS3_OK, _new(_ACCESS_OK, (fattr(st, fs.fsid), access_bits(st, ctx.cred, a.access)))

    def READLINK(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.symlink.data)
        try:
            target = fs.readlink(n)
        except (OSError, NfsError) as exc:
            return status_of(exc), nfs3.READLINK3resfail.cls(self._attr(fs, n))
        return NFS3_OK, nfs3.READLINK3resok.cls(self._attr(fs, n), target)

    def READ(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.file.data)
        # Offsets are 64-bit unsigned on the wire, file offsets signed: as knfsd, a read past
        # the largest offset reads nothing (and is at EOF).
        offset = min(a.offset, _MAX_FILE)
        try:
            # Inline (the event loop serving a burst) only what the page cache holds: else
            # WouldBlock, and the dispatcher runs the call again in the pool.
            data = fs.read(n, offset, min(a.count, ctx.max_transfer, _MAX_FILE - offset),
                           self.burst.thread == get_ident())
            st = fs.stat(n)
        except (OSError, NfsError) as exc:
            return status_of(exc), nfs3.READ3resfail.cls(self._attr(fs, n))
        eof = a.offset + len(data) >= st.st_size
        return NFS3_OK, nfs3.READ3resok.cls(fattr(st, fs.fsid), len(data), eof, data)

    def WRITE(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.file.data)
        pre = self._pre(fs, n)
        data = a.data[:a.count] if a.count < len(a.data) else a.data
        if a.offset + len(data) > _MAX_FILE:  # as knfsd: past the largest file offset
            return nfsstat3.NFS3ERR_FBIG, nfs3.WRITE3resfail.cls(self._wcc(fs, n, pre))
        try:
            count = fs.write(n, a.offset, data, a.stable)
        except (OSError, NfsError) as exc:
            self._write_failed(exc)
            return status_of(exc), nfs3.WRITE3resfail.cls(self._wcc(fs, n, pre))
        finally:
            self._touched(n, fs.export_id)
        return NFS3_OK, _new(_WRITE_OK, (self._wcc(fs, n, pre), count, a.stable, self.verifier.current()))

    def CREATE(self, ctx: CallContext, a: Any) -> Any:
        fs, d = self.resolve(a.where.dir.data)
        name = a.where.name
        mode, how = a.how
        pre = self._pre(fs, d)
        if mode == EXCLUSIVE:
            return self._create_exclusive(ctx, fs, d, name, how, pre)
        sattr = how
        perm = sattr.mode if sattr.mode is not None else NEW_FILE_MODE
        changed = True
        try:
            try:
                n = fs.create_file(d, name, perm, exclusive=True)
            except FileExistsError:
                if mode == GUARDED:
                    raise
                n = self._existing_file(fs, d, name, sattr)
            else:
                # a mode the umask kept: the new file has it already, no chmod (nor its event)
                changed = self._apply_sattr(fs, n, sattr, ctx, sattr.mode is None or not umask_keeps(sattr.mode))
        except (OSError, NfsError) as exc:
            return status_of(exc), nfs3.CREATE3resfail.cls(self._wcc(fs, d, pre))
        finally:
            self._changed(d, name, export_id=fs.export_id)  # (the export ``resolve`` found: no parse)
        return NFS3_OK, nfs3.CREATE3resok.cls(_fh(n.fh), self._new_attr(fs, n, changed), self._wcc(fs, d, pre))

    def _existing_file(self, fs: Backend, d: Node, name: bytes, sattr: Any) -> Node:
        """CREATE UNCHECKED of a name that exists, as knfsd (do_nfsd_create): a regular file
        is kept with only the size applied (two clients racing ``open(O_CREAT|O_TRUNC)``);
        the mode, owner and times sent were meant for a new file.  A directory is ISDIR (as
        from Ganesha and a local open(2)), anything else EXIST."""
        n = fs.lookup(d, name)
        kind = stat.S_IFMT(fs.stat(n).st_mode)
        if kind != stat.S_IFREG:  # a directory: what open(O_CREAT) of one answers
            raise NfsError(nfsstat3.NFS3ERR_ISDIR if kind == stat.S_IFDIR else nfsstat3.NFS3ERR_EXIST)
        if sattr.size is not None:
            self._apply_sattr(fs, n, nfs3.sattr3.cls(None, None, None, sattr.size, (0, None), (0, None)))
        return n

    def _create_exclusive(self, ctx: CallContext, fs: Backend, d: Node, name: bytes,
                          verf: bytes, pre: Any) -> Any:
        """EXCLUSIVE: the verifier is stored durably with the new file, so a retransmitted
        create succeeds and a different client's attempt gets EXIST."""
        fail = nfs3.CREATE3resfail.cls
        try:
            with self._create_lock:
                try:
                    n = fs.create_file(d, name, NEW_FILE_MODE, exclusive=True)
                    try:
                        fs.put_verifier(n, verf)
                    except OSError:  # StoreFull, or (a cluster) PostgreSQL away: JUKEBOX
                        # a retransmission must not find the file without its verifier
                        fs.remove(d, name, False)
                        raise
                    if _IS_ROOT and ctx.cred.uid is not None:
                        fs.set_owner(n, ctx.cred.uid, ctx.cred.gid or 0)
                    self._changed(d, name)
                except FileExistsError:
                    n = fs.lookup(d, name)
                    if fs.verifier(n) != verf:
                        raise
        except (OSError, NfsError) as exc:
            return status_of(exc), fail(self._wcc(fs, d, pre))
        # (stat again: its verifier may be kept in its times; the creation's fstat forgotten)
        return NFS3_OK, nfs3.CREATE3resok.cls(_fh(n.fh), self._new_attr(fs, n, True), self._wcc(fs, d, pre))

    def MKDIR(self, ctx: CallContext, a: Any) -> Any:
        fs, d = self.resolve(a.where.dir.data)
        sattr = a.attributes
        perm = sattr.mode if sattr.mode is not None else 0o755
        return self._created(fs, d, self._pre(fs, d), lambda: fs.mkdir(d, a.where.name, perm),
                             sattr, ctx, nfs3.MKDIR3resok.cls, nfs3.MKDIR3resfail.cls,
                             a.where.name)

    def SYMLINK(self, ctx: CallContext, a: Any) -> Any:
        fs, d = self.resolve(a.where.dir.data)
        sattr = a.symlink.symlink_attributes._replace(size=None)
        return self._created(fs, d, self._pre(fs, d),
                             lambda: fs.symlink(d, a.where.name, a.symlink.symlink_data),
                             sattr, ctx, nfs3.SYMLINK3resok.cls, nfs3.SYMLINK3resfail.cls, a.where.name)

    def MKNOD(self, ctx: CallContext, a: Any) -> Any:
        fs, d = self.resolve(a.where.dir.data)
        pre = self._pre(fs, d)
        ftype, what = a.what
        kinds = {nfs3.ftype3.NF3CHR: stat.S_IFCHR, nfs3.ftype3.NF3BLK: stat.S_IFBLK,
                 nfs3.ftype3.NF3SOCK: stat.S_IFSOCK, nfs3.ftype3.NF3FIFO: stat.S_IFIFO}
        if ftype not in kinds:
            return nfsstat3.NFS3ERR_BADTYPE, nfs3.MKNOD3resfail.cls(self._wcc(fs, d, pre))
        if ftype in (nfs3.ftype3.NF3CHR, nfs3.ftype3.NF3BLK):
            major, minor = what.spec.specdata1, what.spec.specdata2
            if major >= _MAX_MAJOR or minor >= _MAX_MINOR:  # as knfsd: what the kernel's dev_t holds
                return nfsstat3.NFS3ERR_INVAL, nfs3.MKNOD3resfail.cls(self._wcc(fs, d, pre))
            sattr, device = what.dev_attributes, os.makedev(major, minor)
        else:
            sattr, device = what, 0
        perm = sattr.mode if sattr.mode is not None else 0o644
        return self._created(fs, d, pre, lambda: fs.mknod(d, a.where.name, kinds[ftype] | (perm & 0o7777), device),
                             sattr, ctx, nfs3.MKNOD3resok.cls, nfs3.MKNOD3resfail.cls,
                             a.where.name)

    def _remove(self, a: Any, directory: bool, ok: Any, fail: Any) -> Any:
        # (the directory's pre- and post-op reads written out, not through ``_pre`` and
        # ``_wcc``/``_attr``: the VM's remove_3000 sends these alone, cold, as LOOKUP)
        where = a.object
        name = where.name
        fs, d = self.resolve(where.dir.data)
        try:
            pre = wcc_before(fs.stat(d))
        except (OSError, NfsError):
            pre = None
        try:
            if name == b"." or name == b"..":
                raise NfsError(nfsstat3.NFS3ERR_INVAL if directory else nfsstat3.NFS3ERR_ISDIR)
            fs.remove(d, name, directory)
        except NfsPending:
            raise  # held, as in ``_created``
        except (OSError, NfsError) as exc:
            return status_of(exc), fail(self._wcc(fs, d, pre))
        finally:
            self._changed(d, name, export_id=fs.export_id)
        try:
            after = fattr(fs.stat(d), fs.fsid)
        except (OSError, NfsError):
            after = None
        return NFS3_OK, _new(ok, (_new(_wcc_data, (pre, after)),))

    def REMOVE(self, ctx: CallContext, a: Any) -> Any:
        return self._remove(a, False, nfs3.REMOVE3resok.cls, nfs3.REMOVE3resfail.cls)

    def RMDIR(self, ctx: CallContext, a: Any) -> Any:
        return self._remove(a, True, nfs3.RMDIR3resok.cls, nfs3.RMDIR3resfail.cls)

    def RENAME(self, ctx: CallContext, a: Any) -> Any:
        from_fh, to_fh = a.from_.dir.data, a.to.dir.data
        fs, src = self.resolve(from_fh)
        # (within one directory, the common case: its handle is resolved once)
        fs2, dst = (fs, src) if to_fh == from_fh else self.resolve(to_fh)
        same = dst is src  # a rename within one directory (the node cache shares nodes)
        spre = self._pre(fs, src)
        dpre = spre if same else self._pre(fs2, dst)
        try:
            if fs is not fs2:
                raise NfsError(nfsstat3.NFS3ERR_XDEV)
            if a.from_.name in (b".", b"..") or a.to.name in (b".", b".."):
                raise NfsError(nfsstat3.NFS3ERR_INVAL)
            fs.rename(src, a.from_.name, dst, a.to.name)
        except NfsPending:
            raise  # held, as in ``_created``
        except (OSError, NfsError) as exc:
            return status_of(exc), nfs3.RENAME3resfail.cls(*self._rename_wcc(fs, src, spre, fs2, dst, dpre))
        finally:
            if same:
                self._changed(src, a.from_.name, a.to.name, export_id=fs.export_id)
            else:
                self._changed(src, a.from_.name, export_id=fs.export_id)
                self._changed(dst, a.to.name, export_id=fs2.export_id)
        return NFS3_OK, nfs3.RENAME3resok.cls(*self._rename_wcc(fs, src, spre, fs2, dst, dpre))

    def _rename_wcc(self, fs: Backend, src: Node, spre: Any, fs2: Backend, dst: Node, dpre: Any) -> tuple[Any, Any]:
        """fromdir_wcc and todir_wcc: one directory's read once when both are the same."""
        from_wcc = self._wcc(fs, src, spre)
        return from_wcc, from_wcc if dst is src else self._wcc(fs2, dst, dpre)

    def LINK(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.file.data)
        fs2, d = self.resolve(a.link.dir.data)
        pre = self._pre(fs2, d)
        try:
            if fs is not fs2:
                raise NfsError(nfsstat3.NFS3ERR_XDEV)
            fs.link(n, d, a.link.name)
        except NfsPending:
            raise  # held, as in ``_created``
        except (OSError, NfsError) as exc:
            return status_of(exc), nfs3.LINK3resfail.cls(self._attr(fs, n), self._wcc(fs2, d, pre))
        finally:
            self._changed(d, a.link.name)
            self._touched(n)
        return NFS3_OK, nfs3.LINK3resok.cls(self._attr(fs, n), self._wcc(fs2, d, pre))

    def listing_ready(self, fh: bytes, cookie: int) -> bool:
        """Whether the READDIR or READDIRPLUS page of this directory after ``cookie`` comes
        from the cached listing, cheap enough to serve inline.  A first page of a real
        directory changed since it was listed reads and sorts it again (half a second for
        100k entries): the dispatcher runs that in a thread, so that other clients are served
        meanwhile.  Query directories, and handles that will fail, answer True: nothing
        changes for them."""
        try:
            fs, d = self.resolve(fh)
            if d.virtual:
                return True
            st = fs.stat(d)
        except (OSError, NfsError):
            return True
        return self.listings.is_fresh(d.fh, st.st_mtime_ns, st.st_ctime_ns, resume=cookie >= FIRST_NAME_COOKIE)

    def offload_listing(self, fh: bytes, cookie: int, plus: bool) -> bool:
        """Whether a READDIR or READDIRPLUS call should run in the thread pool: a first page
        (it may read the directory, or fault a query directory) unless it is a READDIRPLUS
        whose listing and encoded entries are all cached; a later page when its listing
        must be read again (``listing_ready``)."""
        if not self.listing_ready(fh, cookie):
            return True
        if cookie != 0 or not plus:
            return cookie == 0
        try:
            fs, d = self.resolve(fh)
        except (OSError, NfsError):
            return True
        return d.virtual or not self.entries.complete(fs.export_id, d.ino, self.listings.peek(d.fh))

    def _listing_page(self, fs: Backend, d: Node, cookie: int, verf: bytes, budget: int,
                      plus: bool, dircount: int) -> tuple[int, Any, bytes, Any, bool]:
        """Entries after ``cookie`` that fit the reply budget (bytes), in cookie order."""
        st = fs.stat(d)
        if not stat.S_ISDIR(st.st_mode):
            return nfsstat3.NFS3ERR_NOTDIR, fattr(st, fs.fsid), fs.cookie_verifier(d), [], False
        exact = fs.listing_key(d)
        listing = self.listings.get(d.fh, st.st_mtime_ns, st.st_ctime_ns, lambda: fs.scandir(d), exact,
                                    resume=cookie >= FIRST_NAME_COOKIE)
        # Attributes and verifier after the listing: for a query directory the listing may
        # have been its directory fault, which is what sets them.
        dattr = fattr(fs.stat(d), fs.fsid)
        my_verf = fs.cookie_verifier(d)
        if cookie and verf != my_verf and verf != b"\0" * 8:
            return nfsstat3.NFS3ERR_BAD_COOKIE, dattr, my_verf, [], False
        entries: list = []
        used = 0
        dir_used = 0
        specials: list[tuple[int, bytes, Node | None]] = []
        if cookie < DOT_COOKIE:
            specials.append((DOT_COOKIE, b".", d))
        if cookie < DOTDOT_COOKIE:
            specials.append((DOTDOT_COOKIE, b"..", None))
        eof = True
        entry_type = nfs3.entryplus3.cls if plus else nfs3.entry3.cls
        for ck, name, node in specials:
            size = _ENTRY_BYTES + ((len(name) + 3) & ~3) + (_PLUS_BYTES if plus else 0)
            if used + size > budget:  # "." and ".." count against maxcount like any entry
                eof = False
                break
            node = node or fs.parent_of(d)
            used += size
            dir_used += 24 + len(name)
            if plus:
                entries.append(entry_type(node.ino, name, ck, self._attr(fs, node), _fh(node.fh)))
            else:
                entries.append(entry_type(node.ino, name, ck))
        names, inos, cookies = listing.names, listing.inos, listing.cookies
        i = listing.start_index(cookie) if eof else len(names)
        if plus and exact is None and isinstance(d, RealNode) and self._cacheable(fs, d):
            page = self._encoded_page(fs, d, listing, i, budget - used, dircount - dir_used)
            if page is not None:
                items, more = page
                eof = eof and not more
                if not entries and not items and not eof:
                    return nfsstat3.NFS3ERR_TOOSMALL, dattr, my_verf, [], False
                head = [nfs3.entryplus3_list.encode_item(e) for e in entries]
                return NFS3_OK, dattr, my_verf, nfs3.entryplus3_list.encoded(head + items), eof
        encoded_page = getattr(listing, "encoded_page", None) if plus else None
        page = encoded_page(i, budget - used, dircount - dir_used) if encoded_page is not None else None
        if page is not None:  # a query directory's result links (nfsd/query/result_set.py)
            items, i = page
            eof = eof and i >= len(names)
            if not entries and not items and not eof:
                return nfsstat3.NFS3ERR_TOOSMALL, dattr, my_verf, [], False
            head = [nfs3.entryplus3_list.encode_item(e) for e in entries]
            return NFS3_OK, dattr, my_verf, nfs3.entryplus3_list.encoded(head + [items]), eof
        while i < len(names):
            name = names[i]
            size = _ENTRY_BYTES + ((len(name) + 3) & ~3) + (_PLUS_BYTES if plus else 0)
            if used + size > budget or (plus and dir_used + 24 + len(name) > dircount):
                eof = False
                break
            if plus:
                try:
                    est, efh = fs.entry(d, name)
                except (FileNotFoundError, NfsError):
                    i += 1
                    continue  # gone since the listing was taken
                entries.append(entry_type(est.st_ino, name, cookies[i], fattr(est, fs.fsid), _fh(efh)))
            else:
                entries.append(entry_type(inos[i], name, cookies[i]))
            used += size
            dir_used += 24 + len(name)
            i += 1
        if not entries and not eof:
            return nfsstat3.NFS3ERR_TOOSMALL, dattr, my_verf, [], False
        return NFS3_OK, dattr, my_verf, entries, eof

    def _cacheable(self, fs: Backend, d: RealNode) -> bool:
        """Whether this READDIRPLUS may use the encoded entries of real directory ``d``: the
        export is watched, and the caller (the identity this thread acts as) may search the
        directory, as stat()ing its entries needs (the read permission that listing needs
        was checked before, nfsd/exports/guard.py).  The kernel decides, ACLs included."""
        if not self.entries.enabled(fs.export_id):
            return False
        who = identity.current()
        if who is None or who.uid == 0:
            return True
        try:
            return os.access(".", os.X_OK, dir_fd=d.fd, effective_ids=True, follow_symlinks=False)
        except (OSError, NotImplementedError, AttributeError):
            return False

    def _encoded_page(self, fs: Backend, d: RealNode, listing: Any, start: int, budget: int,
                      dircount: int) -> tuple[list[bytes], bool] | None:
        """The encoded entries from index ``start`` that fit ``budget`` reply bytes and
        ``dircount`` name bytes, and whether more follow; entries not cached (or changed
        since) are read and encoded now and kept.  None: an entry would not encode to the
        size reckoned with, so the page is built the ordinary way."""
        enc = self.entries.get(fs.export_id, d.ino, d.fh, None if d.fh == fs.root.fh else (d.parent, d.name),
                               listing, _real_item_size)
        names = listing.names
        end = enc.page_end(start, budget, dircount) if start < len(names) else start
        if end == start:
            return [], start < len(names)
        if enc.missing:
            items = enc.items
            version = enc.version
            got: list[bytes] = []
            cookies, fsid = listing.cookies, fs.fsid
            encode_item, entry_type = nfs3.entryplus3_list.encode_item, nfs3.entryplus3.cls
            for i in range(start, end):
                item = items[i]
                if item is None:
                    name = names[i]
                    try:
                        est, efh = fs.entry(d, name)
                    except (FileNotFoundError, NfsError):
                        item = b""  # gone since the listing was taken: skipped
                    else:
                        item = encode_item(entry_type(est.st_ino, name, cookies[i], fattr(est, fsid), _fh(efh)))
                        if len(item) != _real_item_size(name):
                            return None
                    self.entries.fill(enc, i, item, version)
                got.append(item)
            if any(items[i] is None for i in range(start, end)):
                return [b"".join(got)], end < len(names)
        return [self.entries.page(enc, start, end)], end < len(names)

    def _readdir(self, a: Any, plus: bool, budget: int, dircount: int) -> Any:
        resok, resfail, dirlist = ((nfs3.READDIRPLUS3resok, nfs3.READDIRPLUS3resfail, nfs3.dirlistplus3) if plus
                                   else (nfs3.READDIR3resok, nfs3.READDIR3resfail, nfs3.dirlist3))
        fs, d = self.resolve(a.dir.data)
        try:
            status, dattr, verf, entries, eof = self._listing_page(
                fs, d, a.cookie, a.cookieverf, budget, plus, dircount)
        except NfsPending:
            raise  # held (a query directory while the index is built): nothing was changed
        except (OSError, NfsError) as exc:
            return status_of(exc), resfail.cls(self._attr(fs, d))
        if status != NFS3_OK:
            return status, resfail.cls(dattr)
        return NFS3_OK, resok.cls(dattr, verf, dirlist.cls(entries, eof))

    def READDIR(self, ctx: CallContext, a: Any) -> Any:
        return self._readdir(a, False, min(a.count, ctx.max_transfer) - _REPLY_OVERHEAD, 1 << 32)

    def READDIRPLUS(self, ctx: CallContext, a: Any) -> Any:
        return self._readdir(a, True, min(a.maxcount, ctx.max_transfer) - _REPLY_OVERHEAD, max(a.dircount, 512))

    def FSSTAT(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.fsroot.data)
        try:
            v = fs.statvfs()
        except OSError as exc:
            return status_of(exc), nfs3.FSSTAT3resfail.cls(self._attr(fs, n))
        return NFS3_OK, nfs3.FSSTAT3resok.cls(
            self._attr(fs, n), v.f_blocks * v.f_frsize, v.f_bfree * v.f_frsize,
            v.f_bavail * v.f_frsize, v.f_files, v.f_ffree, v.f_favail, 0)

    def FSINFO(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.fsroot.data)
        props = nfs3.FSF3_LINK | nfs3.FSF3_SYMLINK | nfs3.FSF3_HOMOGENEOUS | nfs3.FSF3_CANSETTIME
        rt, wt = min(RTMAX, ctx.max_transfer), min(WTMAX, ctx.max_transfer)
        return NFS3_OK, nfs3.FSINFO3resok.cls(
            self._attr(fs, n), rt, rt, 4096, wt, wt, 4096, min(65536, ctx.max_transfer),
            _MAX_FILE, nfs3.nfstime3.cls(0, 1), props)

    def PATHCONF(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.object.data)
        try:
            link_max = os.pathconf(fs.root_path, "PC_LINK_MAX")
        except (OSError, ValueError):
            link_max = 65000
        return NFS3_OK, nfs3.PATHCONF3resok.cls(self._attr(fs, n), min(link_max, 0xFFFFFFFF), 255,
                                                True, True, False, True)

    def COMMIT(self, ctx: CallContext, a: Any) -> Any:
        fs, n = self.resolve(a.file.data)
        pre = self._pre(fs, n)
        try:
            fs.commit(n)
        except (OSError, NfsError) as exc:
            self._write_failed(exc)
            return status_of(exc), nfs3.COMMIT3resfail.cls(self._wcc(fs, n, pre))
        return NFS3_OK, nfs3.COMMIT3resok.cls(self._wcc(fs, n, pre), self.verifier.current())


def _real_item_size(name: bytes) -> int:
    """Encoded size of a READDIRPLUS list item of a real object: list flag, fileid, name,
    cookie, attributes and a real handle (nfsd/fs/handles.py: always 16 bytes)."""
    return _ENTRY_BYTES + ((len(name) + 3) & ~3) + _PLUS_BYTES

