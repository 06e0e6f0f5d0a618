"""Closing the I/O descriptors of files left idle, as knfsd's file cache does (its laundrette).

A node keeps the read (or read-write) descriptor READ and WRITE use (``Node.io_fd``) for as
long as it is cached.  Held open for writing, a file cannot be executed on the server host
(ETXTBSY: a program built through the mount, then run there), and after an untar the server
held thousands of files open.  knfsd closes an NFSv3 file about two seconds after its last
use; so do we: ``LocalFS.detach_idle`` takes the descriptors of every node not used since its last
look (a second chance, as knfsd's REFERENCED flag: closed 1-2 periods after the last use) and
``close_detached`` closes them.

Two rules make that safe:

* A descriptor is taken only from a node no call holds (``sys.getrefcount``: only the node
  cache refers to it), looked at under the cache's lock, which every way to a cached node
  takes.  A call that took the descriptor unlocked (``Node.io_fd``'s fast path, ``fsync_new``)
  holds its node for as long as it uses the number, so no call can be in a pread or fsync on
  a number being closed, nor use it after the next open reused it.  A node some call, query
  link or lock holds keeps its descriptors until the next look.
* Nothing acknowledged is lost.  Data an UNSTABLE WRITE left and no COMMIT made durable
  (``Node._io_dirty``, set on a sync export only) is fdatasync-ed before the close: a
  COMMIT's fsync through a descriptor opened later is not told of a write-back error this one already
  reported (errseq).  On an error the write verifier changes (``on_error``), as knfsd's
  ``nfsd_reset_write_verifier``, so clients resend what they wrote unstably.  The node's I/O
  lock is held from the detach until then, so a COMMIT of that file waits, and answers with
  the new verifier.  On an async export a COMMIT makes nothing durable, so neither does this.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:
    from .localfs import Node

#: Seconds between two looks (knfsd's laundrette runs every 2 s): a descriptor is closed
#: between one and two periods after its last use (``--idle-fd-seconds``).
IDLE_FD_SECONDS = 2.0


class IdleIo(NamedTuple):
    """The descriptors ``LocalFS.detach_idle`` took from one node, to close."""

    node: Node
    fd: int
    retired: int             # a read-only descriptor the read-write one replaced, or -1
    dirty: bool              # UNSTABLE data no COMMIT made durable: fdatasync before the close
    unlock: Callable[[], None]  # lets the node's I/O lock go (held since the detach)


def needs_sync(taken: list[IdleIo]) -> bool:
    """Whether ``close_detached`` will fdatasync (then it belongs in a thread)."""
    return any(t.dirty for t in taken)


def close_detached(taken: list[IdleIo], on_error: Callable[[], None]) -> None:
    """Close what ``LocalFS.detach_idle`` took, after an fdatasync of data no COMMIT made durable
    (``on_error()`` if it fails), and let the nodes' I/O locks go."""
    for _, fd, retired, dirty, unlock in taken:
        try:
            if dirty:
                try:
                    os.fdatasync(fd)
                except OSError:
                    on_error()
            for f in (fd, retired):
                if f >= 0:
                    try:
                        os.close(f)
                    except OSError:
                        pass  # (as ``Node.close``: the number is released all the same)
        finally:
            unlock()
