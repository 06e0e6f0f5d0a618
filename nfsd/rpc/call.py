"""What every RPC handler receives beside its arguments, whatever the program.

Kept apart from any one program so that the generic core (nfsd/rpc/dispatch.py) and every
service (NFS, MOUNT, NLM, NSM, the portmapper) share it without leaning on each other.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import NamedTuple

from protocol.rpc import Credentials

#: The most data one reply may carry when the transport sets no lower bound (TCP): NFS
#: advertises it as rtmax and wtmax (FSINFO).
MAX_TRANSFER = 1 << 20


class CallContext(NamedTuple):
    cred: Credentials
    client: tuple[str, int]
    #: the most data one READ or READDIR reply may carry on the call's transport (UDP:
    #: 32 KiB, so the reply fits a datagram); FSINFO advertises it as rtmax and wtmax
    max_transfer: int = MAX_TRANSFER


class CallFailed(Exception):
    """A handler's failure with a status of its program: the dispatcher answers it with the
    procedure's failure result for that status (``Procedure.failure``)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or str(status))
        self.status = status


class CallPending(CallFailed):
    """A handler that cannot answer yet, raised before the call changed anything: the
    dispatcher holds the call (nfsd/rpc/held.py) until ``ready`` is done, then runs it
    again; ``ready``'s result False, or a call it may not hold (too many held, too long,
    UDP), is answered as the failure ``status`` (say, "try again later").  ``ready`` is a
    concurrent future: it may be made and settled in a thread of the pool.  Whoever catches
    it as a failure answers that failure, which is what the call got before holding.
    ``ends``: what it waits for is sure to end by itself within a bounded time (a pass of
    the start-up index), so the call may be held longer (nfsd/rpc/held.py, LONG_HOLD_SECONDS)."""

    def __init__(self, status: int, ready: "Future[bool]", message: str = "", ends: bool = False) -> None:
        super().__init__(status, message)
        self.ready = ready
        self.ends = ends


class WouldBlock(Exception):
    """A handler served inline on the event loop that would have to wait for the disk (a
    READ whose data is not all in the page cache: ``RWF_NOWAIT``), raised before the call
    changed anything: the dispatcher runs the call again in the thread pool, where it may
    wait.  Only raised where ``Burst.thread`` is the caller's own thread."""
