"""The lock table: who holds which byte ranges and share reservations of which file, who
waits, and the grace period after a restart.

All methods run on the event loop thread (the NLM handlers are quick and never block), so
the table needs no mutex.  A lock is granted only when neither the table (other NLM owners)
nor the kernel (local processes, through the owner's OFD descriptor, see ``ofd``) objects.
The table alone says who holds what, which TEST reports and the kernel cannot (an OFD
lock's holder has no pid).

Blocked requests queue per file in arrival order.  They are retried when a range is freed
and, for conflicts with local processes (which tell us nothing), on every ``tick``.  A
granted waiter is handed to ``on_grant`` (the service calls the client back); a waiter
that the client stops renewing (Linux re-sends a blocked LOCK every 30 s) expires.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..nfs3.errors import NfsError
from . import ofd
from .ranges import END, Span, apply_lock, conflicts, covers, cut, overlaps

log = logging.getLogger("pysfsd.nlm")

MAX_LOCKS_PER_HOST = 4096     # spans plus share reservations; beyond: NLM4_DENIED_NOLOCKS
MAX_WAITERS = 1024
MAX_WAITERS_PER_HOST = 64
WAITER_TTL = 120.0            # a blocked request not re-sent for this long is dropped


class Host(NamedTuple):
    """A client as NLM names it: the caller_name it sends, and the address it calls from."""

    name: str
    addr: str


class Owner(NamedTuple):
    host: Host
    svid: int
    oh: bytes


class Waiter(NamedTuple):
    owner: Owner
    start: int
    end: int
    exclusive: bool
    args: Any          # the LOCK arguments, echoed in the GRANTED callback


@dataclass
class Share:
    owner: Owner
    mode: int      # what it denies others: 1 read, 2 write, 3 both
    access: int    # what it does itself: 1 read, 2 write, 3 both


@dataclass
class FileLocks:
    key: Any
    opener: Callable[[], int] | None   # opens a descriptor on the real file (None: none)
    spans: dict[Owner, list[Span]] = field(default_factory=dict)
    fds: dict[Owner, int] = field(default_factory=dict)
    shares: list[Share] = field(default_factory=list)
    waiters: dict[Waiter, float] = field(default_factory=dict)   # -> last renewed

    def idle(self) -> bool:
        return not (self.spans or self.shares or self.waiters)


class Status:
    """The outcomes, named as nlm4_stats names them (the service maps them 1:1)."""

    GRANTED, DENIED, NOLOCKS, BLOCKED, GRACE, STALE = 0, 1, 2, 3, 4, 7


class LockManager:
    def __init__(self, on_grant: Callable[[Waiter, FileLocks], None] | None = None,
                 on_hosts: Callable[[Host, bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.files: dict[Any, FileLocks] = {}
        self.on_grant = on_grant or (lambda w, f: None)
        #: (host, True) when a host first holds something, (host, False) when it holds nothing
        self.on_hosts = on_hosts or (lambda h, held: None)
        self.clock = clock
        self.grace_until = 0.0
        self.held: dict[Host, int] = {}     # spans and shares per host
        self.waiting: dict[Host, int] = {}

    # -- grace -------------------------------------------------------------------------------
    def start_grace(self, seconds: float) -> None:
        self.grace_until = self.clock() + seconds

    def in_grace(self) -> bool:
        return self.clock() < self.grace_until

    # -- queries -----------------------------------------------------------------------------
    def file(self, key: Any, opener: Callable[[], int] | None) -> FileLocks:
        f = self.files.get(key)
        if f is None:
            f = self.files[key] = FileLocks(key, opener)
        return f

    def test(self, f: FileLocks, owner: Owner, start: int, end: int,
             exclusive: bool) -> tuple[Owner | None, Span] | None:
        """The conflicting holder (None for a local process) and its span, or None."""
        found = self._conflict(f, owner, start, end, exclusive)
        if found is not None:
            return found
        fd = self._fd(f, owner, create=False)
        probe = fd if fd is not None else self._probe_fd(f)
        if probe is None:
            return None
        try:
            local = ofd.local_holder(probe, start, end, exclusive)
        finally:
            if fd is None:
                os.close(probe)
        if local is None:
            return None
        return None, Span(local[2], local[3], local[0])

    def _conflict(self, f: FileLocks, owner: Owner, start: int, end: int,
                  exclusive: bool) -> tuple[Owner, Span] | None:
        for other, spans in f.spans.items():
            if other == owner:
                continue
            for s in spans:
                if conflicts(s, start, end, exclusive):
                    return other, s
        return None

    # -- locking -----------------------------------------------------------------------------
    def lock(self, f: FileLocks, owner: Owner, start: int, end: int, exclusive: bool,
             block: bool = False, args: Any = None) -> int:
        mine = f.spans.get(owner, [])
        if covers(mine, start, end, exclusive):
            self._drop_waiter(f, Waiter(owner, start, end, exclusive, args))
            return Status.GRANTED  # a retransmission, or the poll of a waiter already granted
        if self._conflict(f, owner, start, end, exclusive) is None:
            status = self._take(f, owner, start, end, exclusive)
            if status != Status.DENIED:
                return status
        if not block:
            self._forget_if_idle(f)
            return Status.DENIED
        return self._wait(f, Waiter(owner, start, end, exclusive, args))

    def _take(self, f: FileLocks, owner: Owner, start: int, end: int, exclusive: bool) -> int:
        """Set the lock on the real file, then in the table (GRANTED, DENIED or NOLOCKS)."""
        old = f.spans.get(owner, [])
        new = apply_lock(old, start, end, exclusive)
        if self.held.get(owner.host, 0) + len(new) - len(old) > MAX_LOCKS_PER_HOST:
            return Status.NOLOCKS
        fd = self._fd(f, owner, create=True)
        if fd is not None and not ofd.try_lock(fd, start, end, exclusive):
            if not old:
                self._close_fd(f, owner)
            return Status.DENIED
        self._set(f, owner, new, len(old))
        return Status.GRANTED

    def _wait(self, f: FileLocks, w: Waiter) -> int:
        for queued in f.waiters:
            if queued[:4] == w[:4]:
                f.waiters[queued] = self.clock()   # renewed by the client's poll
                return Status.BLOCKED
        host = w.owner.host
        if (sum(self.waiting.values()) >= MAX_WAITERS
                or self.waiting.get(host, 0) >= MAX_WAITERS_PER_HOST):
            self._forget_if_idle(f)
            return Status.NOLOCKS
        f.waiters[w] = self.clock()
        self.files.setdefault(f.key, f)
        self._count(self.waiting, host, 1)
        return Status.BLOCKED

    def cancel(self, f: FileLocks, owner: Owner, start: int, end: int, exclusive: bool) -> int:
        for w in list(f.waiters):
            if w.owner == owner and w.start == start and w.end == end and w.exclusive == exclusive:
                self._drop_waiter(f, w)
        self._forget_if_idle(f)
        return Status.GRANTED

    def unlock(self, f: FileLocks, owner: Owner, start: int, end: int) -> int:
        old = f.spans.get(owner)
        if old:
            new = cut(old, start, end)
            fd = f.fds.get(owner)
            if fd is not None:
                ofd.try_lock(fd, start, end, None)
            self._set(f, owner, new, len(old))
            self.wake(f)
        self._forget_if_idle(f)
        return Status.GRANTED

    def release(self, f: FileLocks, owner: Owner) -> None:
        """Everything ``owner`` holds or awaits on ``f`` (a revoked grant, a dead host)."""
        for w in [w for w in f.waiters if w.owner == owner]:
            self._drop_waiter(f, w)
        if owner in f.spans:
            self._set(f, owner, [], len(f.spans[owner]))
        for s in [s for s in f.shares if s.owner == owner]:
            f.shares.remove(s)
            self._count(self.held, owner.host, -1)
        self.wake(f)
        self._forget_if_idle(f)

    def free_host(self, match: Callable[[Host], bool]) -> int:
        """Drop every lock, share and waiter of the hosts ``match`` accepts (the host
        rebooted: FREE_ALL, or its SM_NOTIFY).  Returns how many owners lost something."""
        n = 0
        for f in list(self.files.values()):
            owners = {o for o in f.spans} | {w.owner for w in f.waiters} | {s.owner for s in f.shares}
            for o in owners:
                if match(o.host):
                    self.release(f, o)
                    n += 1
        return n

    def wake(self, f: FileLocks) -> None:
        """Grant the waiters that can now have their locks, oldest first."""
        for w in list(f.waiters):
            if self._conflict(f, w.owner, w.start, w.end, w.exclusive) is not None:
                continue
            if self._take(f, w.owner, w.start, w.end, w.exclusive) == Status.GRANTED:
                self._drop_waiter(f, w)
                self.on_grant(w, f)

    def tick(self) -> None:
        """Expire waiters nobody renews; retry those a local process may have let go."""
        now = self.clock()
        for f in list(self.files.values()):
            for w, seen in list(f.waiters.items()):
                if now - seen > WAITER_TTL:
                    self._drop_waiter(f, w)
            if f.waiters:
                self.wake(f)
            self._forget_if_idle(f)

    # -- share reservations (DOS open modes) ----------------------------------------------------
    def share(self, f: FileLocks, owner: Owner, mode: int, access: int) -> int:
        for s in f.shares:
            if s.owner != owner and (s.mode & access or mode & s.access):
                return Status.DENIED
        for s in f.shares:
            if s.owner == owner:
                s.mode, s.access = mode, access
                return Status.GRANTED
        if self.held.get(owner.host, 0) >= MAX_LOCKS_PER_HOST:
            return Status.NOLOCKS
        f.shares.append(Share(owner, mode, access))
        self.files.setdefault(f.key, f)
        self._count(self.held, owner.host, 1)
        return Status.GRANTED

    def unshare(self, f: FileLocks, owner: Owner) -> int:
        for s in [s for s in f.shares if s.owner == owner]:
            f.shares.remove(s)
            self._count(self.held, owner.host, -1)
        self._forget_if_idle(f)
        return Status.GRANTED

    # -- bookkeeping ---------------------------------------------------------------------------
    def _set(self, f: FileLocks, owner: Owner, new: list[Span], old_len: int) -> None:
        if new:
            f.spans[owner] = new
            self.files.setdefault(f.key, f)   # in case a caller kept it while it was idle
        else:
            f.spans.pop(owner, None)
            self._close_fd(f, owner)
        self._count(self.held, owner.host, len(new) - old_len)

    def _count(self, table: dict[Host, int], host: Host, delta: int) -> None:
        if not delta:
            return
        before = self.held.get(host, 0) + self.waiting.get(host, 0)
        n = table.get(host, 0) + delta
        if n > 0:
            table[host] = n
        else:
            table.pop(host, None)
        after = self.held.get(host, 0) + self.waiting.get(host, 0)
        if before == 0 and after > 0:
            self.on_hosts(host, True)
        elif before > 0 and after == 0:
            self.on_hosts(host, False)

    def _drop_waiter(self, f: FileLocks, w: Waiter) -> None:
        for queued in list(f.waiters):
            if queued[:4] == w[:4]:
                del f.waiters[queued]
                self._count(self.waiting, queued.owner.host, -1)

    def _fd(self, f: FileLocks, owner: Owner, create: bool) -> int | None:
        fd = f.fds.get(owner)
        if fd is None and create and f.opener is not None:
            try:
                fd = f.fds[owner] = f.opener()
            except (OSError, NfsError) as exc:
                log.warning("cannot open %r to mirror NLM locks on it: %s", f.key, exc)
                f.opener = None
        return fd

    def _probe_fd(self, f: FileLocks) -> int | None:
        if f.opener is None:
            return None
        try:
            return f.opener()
        except (OSError, NfsError):
            return None

    def _close_fd(self, f: FileLocks, owner: Owner) -> None:
        fd = f.fds.pop(owner, None)
        if fd is not None:
            os.close(fd)   # releases whatever OFD lock is left on it

    def _forget_if_idle(self, f: FileLocks) -> None:
        if f.idle() and self.files.get(f.key) is f:
            for owner in list(f.fds):
                self._close_fd(f, owner)
            del self.files[f.key]

    def counts(self) -> tuple[int, int, int]:
        """(files, locked spans and shares, waiters): for tests and the trace."""
        return len(self.files), sum(self.held.values()), sum(self.waiting.values())


__all__ = ["END", "FileLocks", "Host", "LockManager", "Owner", "Status", "Waiter", "overlaps"]
