"""NFS status codes for failures, and the exact errno -> nfsstat3 mapping."""
from __future__ import annotations

import errno
from concurrent.futures import Future

from protocol.nfs3 import nfsstat3

from ..rpc.call import CallFailed, CallPending


class NfsError(CallFailed):
    """A failure that becomes an nfsstat3 in the reply (the procedure's resfail arm)."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(status, f"{nfsstat3.values(status).name}{': ' + detail if detail else ''}")


class NfsPending(NfsError, CallPending):
    """NFS3ERR_JUKEBOX that the dispatcher may instead hold until ``ready`` (a search of the
    export met the inode or ended: ``CallPending``, ``ends`` as there); caught as an NfsError,
    it is JUKEBOX."""

    def __init__(self, ready: "Future[bool]", detail: str = "", ends: bool = False) -> None:
        NfsError.__init__(self, nfsstat3.NFS3ERR_JUKEBOX, detail)
        self.ready = ready
        self.ends = ends


_ERRNO_TO_NFS = {
    errno.EPERM: nfsstat3.NFS3ERR_PERM,
    errno.ENOENT: nfsstat3.NFS3ERR_NOENT,
    errno.EIO: nfsstat3.NFS3ERR_IO,
    errno.ENXIO: nfsstat3.NFS3ERR_NXIO,
    errno.EACCES: nfsstat3.NFS3ERR_ACCES,
    errno.EEXIST: nfsstat3.NFS3ERR_EXIST,
    errno.EXDEV: nfsstat3.NFS3ERR_XDEV,
    errno.ENODEV: nfsstat3.NFS3ERR_NODEV,
    errno.ENOTDIR: nfsstat3.NFS3ERR_NOTDIR,
    errno.EISDIR: nfsstat3.NFS3ERR_ISDIR,
    errno.EINVAL: nfsstat3.NFS3ERR_INVAL,
    errno.EFBIG: nfsstat3.NFS3ERR_FBIG,
    errno.ENOSPC: nfsstat3.NFS3ERR_NOSPC,
    errno.EROFS: nfsstat3.NFS3ERR_ROFS,
    errno.EMLINK: nfsstat3.NFS3ERR_MLINK,
    errno.ENAMETOOLONG: nfsstat3.NFS3ERR_NAMETOOLONG,
    errno.ENOTEMPTY: nfsstat3.NFS3ERR_NOTEMPTY,
    errno.EDQUOT: nfsstat3.NFS3ERR_DQUOT,
    errno.ESTALE: nfsstat3.NFS3ERR_STALE,
    errno.EREMOTE: nfsstat3.NFS3ERR_REMOTE,
    errno.EOPNOTSUPP: nfsstat3.NFS3ERR_NOTSUPP,
    errno.EBADF: nfsstat3.NFS3ERR_STALE,
    # ELOOP comes from O_NOFOLLOW meeting a symlink where a file was expected.
    errno.ELOOP: nfsstat3.NFS3ERR_INVAL,
    errno.ETXTBSY: nfsstat3.NFS3ERR_ACCES,
    errno.EAGAIN: nfsstat3.NFS3ERR_JUKEBOX,
    errno.EBUSY: nfsstat3.NFS3ERR_JUKEBOX,
    errno.EOVERFLOW: nfsstat3.NFS3ERR_FBIG,
}


# Bound once: ``nfsstat3.X`` goes through the XDR enum's ``__getattr__`` (about 0.7 us), and a
# ``.get`` default is evaluated on every call, found or not (a LOOKUP that finds nothing).
_IO = nfsstat3.NFS3ERR_IO
_SERVERFAULT = nfsstat3.NFS3ERR_SERVERFAULT


def status_of(exc: BaseException) -> int:
    """The nfsstat3 for an exception raised while serving a call."""
    if isinstance(exc, NfsError):
        return exc.status
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNO_TO_NFS.get(exc.errno, _IO)
    return _SERVERFAULT
