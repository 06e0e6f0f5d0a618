"""NLM v4 and NSM v1 handlers: protocol values in and out, the lock table in between.

Handlers run inline on the event loop (nothing here blocks long: opening a descriptor for
a new lock owner, and the fsync of a client's record when it first holds a lock).  What
has to wait for a client (GRANTED callbacks, ``*_RES`` answers to ``*_MSG`` calls, SM_NOTIFY
after a restart) runs as background tasks through ``callback``.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

from protocol import nlm4, nsm
from protocol.nlm4 import NLM4, NLM_PROGRAM, NLM_V4, nlm4_stats

from ..fs import identity
from ..rpc.call import CallContext
from ..nfs3.errors import NfsError
from ..fs.handles import handle_kind
from . import callback, ofd
from .manager import FileLocks, Host, LockManager, Owner, Status, Waiter
from .monitor import MonitorRecords
from .ranges import TooBig, nlm_length, span

log = logging.getLogger("pysfsd.nlm")

GRANT_TIMEOUT = 2.0   # per try, three tries: a client that never answers loses the grant
NOTIFY_TRIES = 5
NOTIFY_PARALLEL = 32
HOST_IDLE = 60.0      # a client holding nothing this long loses its record (no SM_NOTIFY)
MAX_TASKS = 256       # callbacks in flight; beyond that a grant is revoked at once


class _Stale(Exception):
    pass


class _Refused(Exception):
    pass


def _stat(status: int) -> int:
    """The table's status as the protocol's enum member (traces print its name)."""
    return nlm4_stats.values(status)


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def local_address_towards(addr: str) -> str:
    """Our address as ``addr`` reaches us (what its statd knows us by, most likely)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((addr, 9))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostname()


def _open_checked(fs: Any, fh: bytes, ino: int) -> int:
    """A new descriptor on the file ``fh`` names now, for its OFD locks; never another
    file's (the handle is resolved again and the inode checked)."""
    node = fs.node(fh)
    fd = ofd.open_for_locks(f"/proc/self/fd/{node.fd}")
    if os.fstat(fd).st_ino != ino:
        os.close(fd)
        raise OSError(errno.ESTALE, "the file changed under its handle")
    return fd


class LockService:
    """The lock server: NLM4 procedures (``nlm``), NSM procedures (``nsm``), recovery."""

    def __init__(self, exports: dict[int, Any], records: MonitorRecords | None, policy: Any = None,
                 grace_period: float = 90.0, pmap_port: int = 111, nsm_name: str | None = None) -> None:
        self.exports = exports
        self.policy = policy
        self.records = records
        self.grace_period = grace_period
        self.pmap_port = pmap_port    # where clients' portmappers listen (tests move it)
        self.nsm_name = nsm_name      # our name in SM_NOTIFY (default: our address towards each)
        self.m = LockManager(on_grant=self._granted, on_hosts=self._hosts_changed)
        self.state = records.next_state() if records is not None else 1
        self.tasks: set[asyncio.Task[Any]] = set()
        self.pending: dict[tuple[Any, ...], bool] = {}   # grants awaiting the client's word
        self.to_notify: list[Host] = list(records.hosts()) if records is not None else []
        self.recorded: set[Host] = set(self.to_notify)     # clients with a record on disk
        self.idle_since: dict[Host, float] = {}            # recorded clients holding nothing
        self.ticker: asyncio.Task[None] | None = None
        self.nlm = Nlm4Procedures(self)
        self.nsm = NsmProcedures(self)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Enter the grace period if clients held locks when we stopped, and tell them."""
        if self.to_notify:
            self.m.start_grace(self.grace_period)
            log.info("lock grace period of %gs: %d client(s) may reclaim their locks",
                     self.grace_period, len(self.to_notify))
        loop = asyncio.get_running_loop()
        self.ticker = loop.create_task(self._ticker())
        if self.to_notify:
            self._spawn(self._notify_all(list(self.to_notify)))

    async def stop(self) -> None:
        tasks = [*self.tasks, *([self.ticker] if self.ticker is not None else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # called outside the server (tests driving the dispatcher)
            loop = None
        if loop is None or len(self.tasks) >= MAX_TASKS:
            coro.close()
            return False
        task = loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _ticker(self) -> None:
        grace = self.m.in_grace()
        while True:
            await asyncio.sleep(1.0)
            try:
                self._tick(grace)
            except Exception:
                log.exception("lock table maintenance failed")
            grace = grace and self.m.in_grace()

    def _tick(self, grace: bool) -> None:
        """Once a second: expire and retry waiters; at the end of the grace period, let
        the records of clients that reclaimed nothing go; forget long-idle clients."""
        self.m.tick()
        if grace and not self.m.in_grace():
            log.info("lock grace period over")
            for host in self.to_notify:   # notified, but reclaimed nothing: forget soon
                if host not in self.m.held and host not in self.m.waiting:
                    self.idle_since.setdefault(host, 0.0)
            self.to_notify = []
        self._forget_idle_hosts()

    async def _notify_all(self, hosts: list[Host]) -> None:
        """SM_NOTIFY to every recorded client, NOTIFY_PARALLEL at a time."""
        gate = asyncio.Semaphore(NOTIFY_PARALLEL)

        async def one(host: Host) -> None:
            async with gate:
                await self._notify(host)
        await asyncio.gather(*(one(h) for h in hosts))

    async def _notify(self, host: Host) -> None:
        me = self.nsm_name or local_address_towards(host.addr)
        for attempt in range(NOTIFY_TRIES):
            try:
                port = await callback.getport(host.addr, nsm.SM_PROGRAM, nsm.SM_VERS, self.pmap_port)
                await callback.call(host.addr, port, nsm.SM, 6, nsm.stat_chge(me.encode(), self.state))
                log.info("sent SM_NOTIFY (state %d) to %s at %s", self.state, host.name, host.addr)
                return
            except (callback.CallbackError, OSError) as exc:
                log.info("SM_NOTIFY to %s at %s: %s", host.name, host.addr, exc)
                await asyncio.sleep(min(2.0 ** attempt, 10.0))

    # -- the table's events -----------------------------------------------------------------------
    def _hosts_changed(self, host: Host, held: bool) -> None:
        """Record a client before its first lock; forget it once it held nothing for a
        while (at once would cost two fsyncs per LOCK+UNLOCK of an otherwise idle client)."""
        if held:
            self.idle_since.pop(host, None)
            if host in self.recorded or self.records is None:
                return
            try:
                self.records.add(host)
                self.recorded.add(host)
            except OSError as exc:
                log.warning("cannot record lock client %s: %s", host.name, exc)
        elif host in self.recorded:
            self.idle_since[host] = time.monotonic()

    def _forget_idle_hosts(self) -> None:
        now = time.monotonic()
        for host, since in list(self.idle_since.items()):
            if now - since < HOST_IDLE or host in self.to_notify:
                continue
            del self.idle_since[host]
            self.recorded.discard(host)
            try:
                if self.records is not None:
                    self.records.remove(host)
            except OSError as exc:
                log.warning("cannot remove the record of lock client %s: %s", host.name, exc)

    def _granted(self, w: Waiter, f: FileLocks) -> None:
        key = (f.key, *w[:4])
        self.pending[key] = False
        if not self._spawn(self._grant_callback(w, f.key, key)):
            self.pending.pop(key, None)
            self._revoke(w, f.key)

    async def _grant_callback(self, w: Waiter, fkey: Any, key: tuple[Any, ...]) -> None:
        args = w.args
        ok = False
        try:
            port = await callback.getport(w.owner.host.addr, NLM_PROGRAM, NLM_V4, self.pmap_port)
            res = await callback.call(w.owner.host.addr, port, NLM4, 5,
                                      nlm4.nlm4_testargs(args.cookie, args.exclusive, args.alock),
                                      timeout=GRANT_TIMEOUT)
            ok = res.stat == nlm4_stats.NLM4_GRANTED
        except (callback.CallbackError, OSError) as exc:
            log.info("GRANTED callback to %s: %s", w.owner.host.name, exc)
        confirmed = self.pending.pop(key, False)   # the client polled and got it meanwhile
        if not ok and not confirmed:
            log.info("revoking the lock granted to %s: the client did not take it", w.owner.host.name)
            self._revoke(w, fkey)

    def _revoke(self, w: Waiter, fkey: Any) -> None:
        f = self.m.files.get(fkey)
        if f is not None:
            self.m.unlock(f, w.owner, w.start, w.end)

    # -- helpers for the procedures -----------------------------------------------------------------
    def file(self, fh: bytes, ctx: CallContext, create: bool = True, check: bool = True) -> FileLocks:
        """The lock state of the file ``fh`` names; _Stale for a handle we cannot serve,
        _Refused when the caller may neither read nor write the file (as knfsd, which opens
        it for the caller: locks on the file would keep local processes out too).  UNLOCK and
        CANCEL do not ``check``: they only give up what the caller has."""
        try:
            _, export_id = handle_kind(fh)
            fs = self.exports.get(export_id)
            if fs is None:
                raise _Stale()
            rule = self.policy.allowed(export_id, (ctx.client[0], 1)) if self.policy is not None else None
            if self.policy is not None and rule is None:
                raise _Stale()
            node = fs.node(fh)
            if check and rule is not None and identity.ACTING and getattr(node, "fd", None) is not None:
                _, ident = rule.effective(ctx.cred)
                st = os.stat(node.fd)
                if not (identity.may_read_data(st, ident) or identity.may(st, ident, identity.W, True)):
                    raise _Refused()
        except (NfsError, OSError):
            raise _Stale() from None
        fd = getattr(node, "fd", None)
        key = (export_id, node.ino if fd is not None else fh)
        existing = self.m.files.get(key)
        if existing is not None:
            return existing
        opener: Callable[[], int] | None = None
        # Only regular files and directories: opening a device or a FIFO can have effects.
        if fd is not None and (stat.S_ISREG(node.mode) or stat.S_ISDIR(node.mode)):
            opener = functools.partial(_open_checked, fs, fh, node.ino)
        return self.m.file(key, opener) if create else FileLocks(key, opener)

    @staticmethod
    def owner(lock: Any, client: tuple[str, int]) -> Owner:
        return Owner(Host(_name(lock.caller_name), client[0]), lock.svid, bytes(lock.oh))

    def reply_later(self, client: tuple[str, int], proc: int, res: Any) -> None:
        """The ``*_RES`` call carrying the answer to a ``*_MSG`` call."""
        async def send() -> None:
            try:
                port = await callback.getport(client[0], NLM_PROGRAM, NLM_V4, self.pmap_port)
                await callback.call(client[0], port, NLM4, proc, res, want_reply=False, tries=1)
            except (callback.CallbackError, OSError) as exc:
                log.info("NLM %s to %s: %s", NLM4.procedures[proc].name, client[0], exc)
        self._spawn(send())


class Nlm4Procedures:
    """The NLM4 program, one method per procedure (see protocol/nlm4.py)."""

    def __init__(self, svc: LockService) -> None:
        self.svc = svc
        self.m = svc.m

    def NULL(self, ctx: CallContext, a: None) -> None:
        return None

    def TEST(self, ctx: CallContext, a: Any) -> Any:
        if self.m.in_grace():
            return nlm4.nlm4_testres(a.cookie, (nlm4_stats.NLM4_DENIED_GRACE_PERIOD, None))
        try:
            f = self.svc.file(a.alock.fh, ctx, create=False)
        except _Stale:
            return nlm4.nlm4_testres(a.cookie, (nlm4_stats.NLM4_STALE_FH, None))
        except _Refused:
            return nlm4.nlm4_testres(a.cookie, (nlm4_stats.NLM4_FAILED, None))
        try:
            start, end = span(a.alock.l_offset, a.alock.l_len)
        except TooBig:
            return nlm4.nlm4_testres(a.cookie, (nlm4_stats.NLM4_FBIG, None))
        found = self.m.test(f, self.svc.owner(a.alock, ctx.client), start, end, a.exclusive)
        if found is None:
            return nlm4.nlm4_testres(a.cookie, (nlm4_stats.NLM4_GRANTED, None))
        other, s = found
        svid, oh = (other.svid, other.oh) if other is not None else (0, b"")
        holder = nlm4.nlm4_holder(s.exclusive, svid, oh, s.start, nlm_length(s.start, s.end))
        return nlm4.nlm4_testres(a.cookie, (nlm4_stats.NLM4_DENIED, holder))

    def _lock(self, ctx: CallContext, a: Any, block: bool) -> int:
        if self.m.in_grace() and not a.reclaim:
            return nlm4_stats.NLM4_DENIED_GRACE_PERIOD
        try:
            f = self.svc.file(a.alock.fh, ctx)
        except _Stale:
            return nlm4_stats.NLM4_STALE_FH
        except _Refused:
            return nlm4_stats.NLM4_FAILED
        owner = self.svc.owner(a.alock, ctx.client)
        try:
            start, end = span(a.alock.l_offset, a.alock.l_len)
        except TooBig:
            return nlm4_stats.NLM4_FBIG
        status = self.m.lock(f, owner, start, end, a.exclusive, block, a)
        if status == Status.GRANTED:
            key = (f.key, owner, start, end, a.exclusive)
            if key in self.svc.pending:
                self.svc.pending[key] = True
        return status

    def LOCK(self, ctx: CallContext, a: Any) -> Any:
        return nlm4.nlm4_res(a.cookie, _stat(self._lock(ctx, a, a.block)))

    def NM_LOCK(self, ctx: CallContext, a: Any) -> Any:
        """A lock from a client without a status monitor: never blocking (XNFS)."""
        return nlm4.nlm4_res(a.cookie, _stat(self._lock(ctx, a, False)))

    def CANCEL(self, ctx: CallContext, a: Any) -> Any:
        return self._release(ctx, a, lambda f, owner, start, end: self.m.cancel(f, owner, start, end, a.exclusive))

    def UNLOCK(self, ctx: CallContext, a: Any) -> Any:
        """Allowed in the grace period too: it only gives up what the caller holds."""
        return self._release(ctx, a, self.m.unlock)

    def _release(self, ctx: CallContext, a: Any, give_up: Callable[[Any, Any, int, int], Any]) -> Any:
        """CANCEL and UNLOCK: no permission check (they only give up what the caller asked
        for or holds), then ``give_up(file, owner, start, end)`` on the range."""
        try:
            f = self.svc.file(a.alock.fh, ctx, check=False)
        except _Stale:
            return nlm4.nlm4_res(a.cookie, nlm4_stats.NLM4_STALE_FH)
        except _Refused:
            return nlm4.nlm4_res(a.cookie, nlm4_stats.NLM4_FAILED)
        try:
            start, end = span(a.alock.l_offset, a.alock.l_len)
        except TooBig:
            return nlm4.nlm4_res(a.cookie, nlm4_stats.NLM4_FBIG)
        return nlm4.nlm4_res(a.cookie, _stat(give_up(f, self.svc.owner(a.alock, ctx.client), start, end)))

    def GRANTED(self, ctx: CallContext, a: Any) -> Any:
        """A server-to-client callback: we wait for no lock of anyone's, so none is ours."""
        return nlm4.nlm4_res(a.cookie, nlm4_stats.NLM4_DENIED)

    # asynchronous variants: the same work, the answer sent back as a call
    def TEST_MSG(self, ctx: CallContext, a: Any) -> None:
        self.svc.reply_later(ctx.client, nlm4.MSG_REPLY["TEST_MSG"], self.TEST(ctx, a))

    def LOCK_MSG(self, ctx: CallContext, a: Any) -> None:
        self.svc.reply_later(ctx.client, nlm4.MSG_REPLY["LOCK_MSG"], self.LOCK(ctx, a))

    def CANCEL_MSG(self, ctx: CallContext, a: Any) -> None:
        self.svc.reply_later(ctx.client, nlm4.MSG_REPLY["CANCEL_MSG"], self.CANCEL(ctx, a))

    def UNLOCK_MSG(self, ctx: CallContext, a: Any) -> None:
        self.svc.reply_later(ctx.client, nlm4.MSG_REPLY["UNLOCK_MSG"], self.UNLOCK(ctx, a))

    def GRANTED_MSG(self, ctx: CallContext, a: Any) -> None:
        return None

    def TEST_RES(self, ctx: CallContext, a: Any) -> None:
        return None

    LOCK_RES = CANCEL_RES = UNLOCK_RES = GRANTED_RES = TEST_RES

    def _share(self, ctx: CallContext, a: Any, on: bool) -> Any:
        if on and self.m.in_grace() and not a.reclaim:
            return nlm4.nlm4_shareres(a.cookie, nlm4_stats.NLM4_DENIED_GRACE_PERIOD, 0)
        try:
            f = self.svc.file(a.share.fh, ctx)
        except _Stale:
            return nlm4.nlm4_shareres(a.cookie, nlm4_stats.NLM4_STALE_FH, 0)
        except _Refused:
            return nlm4.nlm4_shareres(a.cookie, nlm4_stats.NLM4_FAILED, 0)
        owner = Owner(Host(_name(a.share.caller_name), ctx.client[0]), 0, bytes(a.share.oh))
        status = self.m.share(f, owner, a.share.mode, a.share.access) if on else self.m.unshare(f, owner)
        return nlm4.nlm4_shareres(a.cookie, _stat(status), 0)

    def SHARE(self, ctx: CallContext, a: Any) -> Any:
        return self._share(ctx, a, True)

    def UNSHARE(self, ctx: CallContext, a: Any) -> Any:
        return self._share(ctx, a, False)

    def FREE_ALL(self, ctx: CallContext, a: Any) -> None:
        """The client rebooted (it has no status monitor): drop all it held, from its address."""
        name = _name(a.name)
        n = self.m.free_host(lambda h: h.name == name and h.addr == ctx.client[0])
        log.info("FREE_ALL from %s (%s): %d lock owner(s) released", name, ctx.client[0], n)


class NsmProcedures:
    """The status monitor, as far as a lock server needs it: receive SM_NOTIFY.

    Monitoring on behalf of local programs (MON and friends) is the host's rpc.statd's
    job, not ours: those calls answer stat_fail."""

    def __init__(self, svc: LockService) -> None:
        self.svc = svc

    def NULL(self, ctx: CallContext, a: None) -> None:
        return None

    def STAT(self, ctx: CallContext, a: Any) -> Any:
        return nsm.sm_stat_res(nsm.res.stat_succ, self.svc.state)

    def MON(self, ctx: CallContext, a: Any) -> Any:
        return nsm.sm_stat_res(nsm.res.stat_fail, self.svc.state)

    def UNMON(self, ctx: CallContext, a: Any) -> Any:
        return nsm.sm_stat(self.svc.state)

    UNMON_ALL = UNMON

    def SIMU_CRASH(self, ctx: CallContext, a: None) -> None:
        return None

    def NOTIFY(self, ctx: CallContext, a: Any) -> None:
        """A client restarted: its locks are gone with its processes; drop them at once.
        Only the client's own address may say so (anyone could send the name)."""
        name = _name(a.mon_name)
        n = self.svc.m.free_host(lambda h: (h.name == name or h.addr == name) and h.addr == ctx.client[0])
        log.info("SM_NOTIFY from %s (%s, state %d): %d lock owner(s) released", name, ctx.client[0],
                 a.state, n)
