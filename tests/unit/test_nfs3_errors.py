"""status_of: the nfsstat3 of each failure a handler may meet (the reply's resfail status)."""
from __future__ import annotations

import errno

from nfsd.nfs3.errors import NfsError, status_of
from protocol.nfs3 import nfsstat3


def test_mapped_errno_gives_its_status() -> None:
    assert status_of(FileNotFoundError(errno.ENOENT, "x")) is nfsstat3.NFS3ERR_NOENT
    assert status_of(OSError(errno.EEXIST, "x")) is nfsstat3.NFS3ERR_EXIST


def test_unmapped_errno_is_io_and_other_exceptions_serverfault() -> None:
    # the statuses are the enum's members (their names are logged), as the mapped ones
    assert status_of(OSError(errno.ENOTTY, "x")) is nfsstat3.NFS3ERR_IO
    assert status_of(OSError("no errno")) is nfsstat3.NFS3ERR_SERVERFAULT
    assert status_of(ValueError("x")) is nfsstat3.NFS3ERR_SERVERFAULT


def test_nfs_error_keeps_its_status() -> None:
    assert status_of(NfsError(nfsstat3.NFS3ERR_STALE, "gone")) == nfsstat3.NFS3ERR_STALE
