"""One row per NFSv3 procedure: everything the server knows about it, in one place.

As the kernel's ``nfsd_procedures3[]``: the procedure (number, name, XDR types and whether
replays need the duplicate-request cache: protocol/nfs3.py, shared with clients), its handler
(nfsd/nfs3/service.py), the handles in its arguments and how the export guard treats it
(nfsd/exports/guard.py), and when it runs in the thread pool rather than inline (nfsd/app.py).
"""
from __future__ import annotations

import enum
import functools
import operator
from dataclasses import dataclass
from typing import Any, Callable

from protocol.nfs3 import NFS3, stable_how
from protocol.program import Procedure

from ..fs.cachedread import SMALL_IO
from ..fs.handles import handle_kind
from ..fs.writeback import aligned, copies_only, page_cache
from ..rpc.call import CallContext
from .errors import NfsError
from .service import EXCLUSIVE, Nfs3Service


class Guard(enum.Enum):
    """How the export guard (nfsd/exports/guard.py, ``GuardedNfs3``) treats a procedure."""

    NONE = "none"          # no handle: nothing to check (NULL)
    PLAIN = "plain"        # as the server, after the export check
    ACCESS = "access"      # as the server; modify bits cleared on a read-only export
    READ = "read"          # read permission checked by the server, data read as the server
    AS_CALLER = "as caller"  # acts as the caller: the kernel decides
    LISTING = "listing"    # directory read permission checked, then as the caller
    SETATTR = "setattr"    # modifies; a new size needs write permission (owner override)
    WRITE = "write"        # modifies; write permission (owner override)
    CHANGE = "change"      # modifies the namespace, as the caller

    @property
    def modifying(self) -> bool:
        """A read-only export answers NFS3ERR_ROFS."""
        return self in (Guard.SETATTR, Guard.WRITE, Guard.CHANGE)


Handler = Callable[[Nfs3Service, CallContext, Any], Any]
Offload = Callable[[Nfs3Service, Any], bool]


@dataclass(frozen=True)
class Nfs3Procedure:
    proc: Procedure
    handler: Handler
    #: the handles in the arguments, in the order of the resfail's attribute fields
    handles: tuple[Callable[[Any], bytes], ...]
    guard: Guard
    #: when a call may block on the disk and runs in the thread pool (None: always inline)
    offload: Offload | None = None


def _row(number: int, handler: Handler, handles: tuple[str, ...], guard: Guard,
         offload: Offload | None = None) -> Nfs3Procedure:
    proc = NFS3.procedures[number]
    assert handler.__name__ == proc.name, (number, handler.__name__)  # a misplaced row
    return Nfs3Procedure(proc, handler, tuple(operator.attrgetter(h) for h in handles), guard, offload)


# Reads and unstable writes of the page cache are cheaper inline than a thread round trip;
# calls that may block on the disk (fsync, large writes, big directories, a READ of data
# not cached: WouldBlock) run in threads; ``SMALL_IO``: what is small enough to stay inline
# whatever the disk (nfsd/fs/cachedread.py).
S = Nfs3Service


def _always(service: Nfs3Service, args: Any) -> bool:
    return True


def _inline_write(service: Nfs3Service, a: Any) -> bool:
    """An UNSTABLE write only fills the page cache: inline, unless it may sleep there
    (dirty pages near the kernel's throttling point, a large write with partial pages that
    may have to be read first, an export whose writes do more than copy: FUSE, a network
    file system; nfsd/fs/writeback.py).  FILE_SYNC and DATA_SYNC fsync: in a thread, except
    a small one that is a lone client's only call (``Nfs3Service.lone_call``: as a lone
    client's directory fsyncs, nfsd/fs/dirsync.py, it waits for this reply anyway, and a
    thread round trip costs more than it saves)."""
    if not page_cache.roomy():
        return False
    if a.stable != stable_how.UNSTABLE:
        if len(a.data) > SMALL_IO or not service.lone_call():
            return False
    elif len(a.data) > SMALL_IO and not aligned(a.offset, len(a.data)):
        return False
    try:
        fs = service.exports.get(handle_kind(a.file.data)[1])
    except NfsError:
        return False  # the handler answers BADHANDLE
    if fs is None:
        return False
    local = _copies_only.get(fs.root_path)
    if local is None:
        local = _copies_only[fs.root_path] = copies_only(fs.root_path)
    return local


_copies_only: dict[str, bool] = {}  # per export root (nfsd/fs/writeback.py: copies_only)


NFS3_PROCEDURES: tuple[Nfs3Procedure, ...] = (
    _row(0, S.NULL, (), Guard.NONE),
    _row(1, S.GETATTR, ("object.data",), Guard.PLAIN),
    _row(2, S.SETATTR, ("object.data",), Guard.SETATTR),
    _row(3, S.LOOKUP, ("what.dir.data",), Guard.AS_CALLER),
    _row(4, S.ACCESS, ("object.data",), Guard.ACCESS),
    _row(5, S.READLINK, ("symlink.data",), Guard.AS_CALLER),
    # READ: inline from the page cache, else in a thread (``WouldBlock``, nfsd/fs/cachedread.py)
    _row(6, S.READ, ("file.data",), Guard.READ),
    _row(7, S.WRITE, ("file.data",), Guard.WRITE, lambda s, a: not _inline_write(s, a)),
    # Changes of a directory are made inline; the directories a burst changed are fsynced
    # after it, in a thread, and its replies wait for that (nfsd/fs/dirsync.py).  EXCLUSIVE:
    # the verifier is synced to LMDB before the reply, in a thread.
    _row(8, S.CREATE, ("where.dir.data",), Guard.CHANGE, lambda s, a: a.how[0] == EXCLUSIVE),
    _row(9, S.MKDIR, ("where.dir.data",), Guard.CHANGE),
    _row(10, S.SYMLINK, ("where.dir.data",), Guard.CHANGE),
    _row(11, S.MKNOD, ("where.dir.data",), Guard.CHANGE),
    _row(12, S.REMOVE, ("object.dir.data",), Guard.CHANGE),
    _row(13, S.RMDIR, ("object.dir.data",), Guard.CHANGE),
    _row(14, S.RENAME, ("from_.dir.data", "to.dir.data"), Guard.CHANGE),
    _row(15, S.LINK, ("file.data", "link.dir.data"), Guard.CHANGE),
    # Listing is CPU-bound Python once the directory is read and sorted (threads only add GIL
    # contention); a first page, or one that has to read the directory again (0.5 s for
    # 100k entries), runs in a thread so that it stalls no one.
    _row(16, S.READDIR, ("dir.data",), Guard.LISTING, lambda s, a: s.offload_listing(a.dir.data, a.cookie, False)),
    _row(17, S.READDIRPLUS, ("dir.data",), Guard.LISTING,
         lambda s, a: s.offload_listing(a.dir.data, a.cookie, True)),
    _row(18, S.FSSTAT, ("fsroot.data",), Guard.PLAIN),
    _row(19, S.FSINFO, ("fsroot.data",), Guard.PLAIN),
    _row(20, S.PATHCONF, ("object.data",), Guard.PLAIN),
    _row(21, S.COMMIT, ("file.data",), Guard.PLAIN, _always),
)
del S
assert [r.proc.number for r in NFS3_PROCEDURES] == sorted(NFS3.procedures), "one row per procedure"


def offloads(service: Nfs3Service) -> dict[int, Callable[[Any], bool]]:
    """The dispatcher's offload predicates, by procedure number, bound to ``service``."""
    return {r.proc.number: functools.partial(r.offload, service) for r in NFS3_PROCEDURES if r.offload is not None}
