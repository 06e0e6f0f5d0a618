"""Reads served on the event loop from the page cache alone.

A 1 MiB READ in the thread pool cost the event loop's process a round trip per call (a
futex to wake a pool thread, the GIL handed over and back, an eventfd and a second epoll
wake-up to bring the result back: about 14 futex calls per READ under ``strace -c``)
for a ``pread`` that, for data the page cache holds, only copies.  ``preadv2`` with
``RWF_NOWAIT`` copies what is cached and never waits for the disk: EAGAIN when the first
page is missing (the kernel starts its readahead meanwhile), a short count when a later
one is.  Either way the call goes to the pool (``WouldBlock``), as every large READ did
before.  The data lands in one scratch buffer reused by every inline READ of this process
(only the event loop's thread reads here, and the reply is encoded from it before the
next call runs), so no 1 MiB ``bytes`` is allocated, faulted in and freed per call."""
from __future__ import annotations

import errno
import os

from ..rpc.call import WouldBlock

_scratch = bytearray()
_view = memoryview(_scratch)

#: A transfer this small is served inline even where nothing tells whether it would wait
#: (a thread round trip costs more than the copy): a READ on a file system that takes no
#: ``RWF_NOWAIT`` (EOPNOTSUPP: tmpfs here, FUSE, NFS; without this every READ of a tmpfs
#: export took a thread round trip), and the WRITEs nfsd/nfs3/procedures.py keeps inline.
#: A larger READ there goes to the pool.
SMALL_IO = 64 << 10


def read_cached(fd: int, offset: int, count: int) -> bytes | memoryview:
    """Up to ``count`` bytes of ``fd`` at ``offset`` (fewer at the end of the file), a view
    of the scratch buffer valid until the next call; ``WouldBlock`` if any of them is not
    in the page cache, or the file system cannot tell (no ``RWF_NOWAIT``) and the read is
    larger than ``SMALL_IO`` (a smaller one is read as before, ``bytes``)."""
    global _scratch, _view
    if count > len(_scratch):
        _scratch = bytearray(count)
        _view = memoryview(_scratch)
    try:
        got = os.preadv(fd, (_view[:count],), offset, os.RWF_NOWAIT)
    except BlockingIOError:
        raise WouldBlock() from None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            if count <= SMALL_IO:
                return os.pread(fd, count, offset)
            raise WouldBlock() from None
        raise
    if got < count and offset + got < os.fstat(fd).st_size:
        raise WouldBlock()  # cached only in part: the pool reads it all
    return _view[:got]
