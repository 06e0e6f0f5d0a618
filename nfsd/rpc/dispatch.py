"""From a received RPC record to the reply bytes: the transport-independent core.

The dispatcher checks the RPC header (version, program, version range, procedure, auth),
decodes the arguments with the procedure's XDR type (GARBAGE_ARGS on failure), consults the
duplicate-request cache for non-idempotent calls, runs the handler (inline when it is quick,
in a thread pool when it does blocking I/O such as fsync or large reads) and encodes the
result.  A handler that cannot answer yet (``CallPending``) has its call held until it
can (nfsd/rpc/held.py), then run again.  Transports (TCP, UDP) only move records.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from concurrent.futures import Executor
from threading import get_ident
from typing import Any, Awaitable, Callable, Mapping

from protocol.program import Procedure, Program
from protocol.rpc import (CallRejected, NotACall, accept_stat, accepted_error_reply, parse_call,
                          success_reply)
from xdr import Enum, Union, XdrError

from . import trace
from .burst import Burst
from .call import MAX_TRANSFER, CallContext, CallFailed, CallPending, WouldBlock
from .drc import IN_PROGRESS
from .held import HeldCalls

log = logging.getLogger("pysfsd.rpc")

Reply = bytearray | bytes | None
#: Records up to this size are decoded from their bytes, larger ones through a memoryview.
SMALL_RECORD = 1024
Offload = Callable[[Any], bool]
Handler = Callable[[CallContext, Any], Any]
#: a procedure as the dispatcher serves it: its row, handler, offload predicate, argument
#: decoder and result encoder
Entry = tuple[Procedure, Handler, "Offload | None", Callable[..., Any], Callable[..., Any]]
Forward = Callable[[bytes | bytearray, tuple[str, int], int], "Reply | Awaitable[Reply]"]


class Registered:
    """A program version bound to the object whose methods implement its procedures."""

    __slots__ = ("program", "service", "handlers", "status_enum")

    def __init__(self, program: Program, service: Any, offload: Mapping[int, Offload],
                 handlers: Mapping[int, Handler] | None) -> None:
        self.program = program
        self.service = service
        self.handlers: dict[int, Entry] = {}
        for num, proc in program.procedures.items():
            pack_res = proc.res.compiled()[0]
            unpack_args = proc.args.compiled()[1]
            handler = handlers[num] if handlers is not None else getattr(service, proc.name)
            self.handlers[num] = (proc, handler, offload.get(num), unpack_args, pack_res)
        res_types = [p.res for p in program.procedures.values() if isinstance(p.res, Union)]
        self.status_enum: Enum | None = res_types[0].disc if res_types and isinstance(res_types[0].disc, Enum) else None


class Dispatcher:
    def __init__(self, executor: Executor | None = None, trace_level: int = 0,
                 drc: Any = None) -> None:
        self.executor = executor
        self.trace_level = trace_level
        self.drc = drc
        self._programs: dict[tuple[int, int], Registered] = {}
        # (program, version, procedure) -> its program and entry: one look-up per call
        self._procedures: dict[tuple[int, int, int], tuple[Registered, Entry]] = {}
        self._versions: dict[int, tuple[int, int]] = {}
        self._forwards: dict[int, Forward] = {}
        self.calls = 0
        self.held = HeldCalls()
        # (begin, end) called around a burst of calls served inline (``begin_burst``), the
        # second before their replies leave; ``end`` may return a future the replies must
        # wait for (a cluster's change-log rows, nfsd/shared/state.py).  Parts that defer
        # work only now and then (the handle table's group commit, nfsd/state/store.py;
        # deferred directory fsyncs, nfsd/fs/dirsync.py) read ``burst`` instead and register
        # their end there when they defer something (nfsd/rpc/burst.py)
        self.bursts: list[tuple[Callable[[], None], Callable[[], "asyncio.Future[Any] | None"]]] = []
        self.burst_starts: list[Callable[[], None]] = []  # called at a burst's start only
        self.burst = Burst()
        # called before a burst's replies leave, when ``burst.before_due`` says they have
        # work (a part sets it): at its end, or, when they wait for a future
        # an ``end`` returned, once that future is done, before them (the bursts of one
        # directory fsync job, served over several connections and loop turns, then share
        # one call: the handle table's group commit, nfsd/state/store.py ``commit_later``)
        self.before_replies: list[Callable[[], None]] = []
        self._before_on: asyncio.Future[Any] | None = None  # the held future they wait for
        # the burst's non-idempotent calls, for the DRC: their keys, replies and xids (three
        # lists: ``finish_all`` takes the first two as they are)
        self._drc_keys: list[Any] = []
        self._drc_replies: list[bytes | bytearray] = []
        self._drc_xids: list[int] = []

    def register(self, program: Program, service: Any, offload: Mapping[int, Offload] | None = None,
                 handlers: Mapping[int, Handler] | None = None) -> None:
        """Serve ``program``: each procedure by ``handlers[number]`` (a program's table, as
        nfsd/nfs3/procedures.py), or, without a table, by ``service``'s method named after
        it (the small programs: MOUNT, NLM, NSM, the portmapper).  ``offload`` maps procedure
        numbers to a predicate on the decoded arguments telling when a call must run in the
        thread pool (it may block on the disk) rather than inline on the event loop.
        ``service.trace_credentials``, where present, explains whom a call ran as (traces)."""
        reg = self._programs[(program.number, program.version)] = Registered(program, service, offload or {}, handlers)
        for num, entry in reg.handlers.items():
            self._procedures[(program.number, program.version, num)] = (reg, entry)
        low, high = self._versions.get(program.number, (program.version, program.version))
        self._versions[program.number] = (min(low, program.version), max(high, program.version))

    def forward(self, program: int, to: "Forward") -> None:
        """Hand every call of ``program`` (any version), undecoded, to ``to(record, client,
        reserve)``, which answers as ``dispatch`` does: a follower worker's NLM and NSM go
        to the process holding the lock table (nfsd/locks/relay.py)."""
        self._forwards[program] = to

    def begin_burst(self) -> None:
        """The transport starts serving a burst of records inline (the event loop)."""
        burst = self.burst
        burst.thread = get_ident()
        burst.count += 1
        for start in self.burst_starts:
            start()
        for begin, _ in self.bursts:
            begin()

    def end_burst(self) -> "asyncio.Future[Any] | None":
        """The burst is served: None if its replies may leave now, else a future they must
        wait for; failed, they must be SYSTEM_ERR instead (``system_error_for``).  Until
        then the duplicate-request cache holds the burst's calls as in progress, so a
        retransmission is not answered before the original."""
        burst = self.burst
        burst.thread = 0
        held: asyncio.Future[Any] | None = None
        if burst.due:
            for end in burst.due:
                waits = end()
                if waits is not None:
                    held = waits if held is None else asyncio.gather(held, waits)
            burst.due.clear()
        for _, end in self.bursts:
            waits = end()
            if waits is not None:
                held = waits if held is None else asyncio.gather(held, waits)
        if burst.before_due:
            burst.before_due = False
            if held is None:
                for before in self.before_replies:
                    before()
            elif held is not self._before_on:
                # the first callback on it: it runs before those that send the replies
                # (callbacks run in the order they were added), whatever the future's outcome
                self._before_on = held
                held.add_done_callback(self._before_held_replies)
        if self._drc_keys:
            keys, replies, xids = self._drc_keys, self._drc_replies, self._drc_xids
            if held is None:
                self.drc.finish_all(keys, replies)
                keys.clear()  # (the same lists serve the next burst)
                replies.clear()
                xids.clear()
            else:
                self._drc_keys, self._drc_replies, self._drc_xids = [], [], []
                held.add_done_callback(lambda f: self._cache_replies(keys, replies, xids, f))
        return held

    def _before_held_replies(self, held: "asyncio.Future[Any]") -> None:
        if self._before_on is held:
            self._before_on = None
        for before in self.before_replies:
            before()

    def _cache_replies(self, keys: list[Any], replies: list[bytes | bytearray], xids: list[int],
                       held: "asyncio.Future[Any]") -> None:
        if held.cancelled() or held.exception() is not None:
            replies = [accepted_error_reply(xid, accept_stat.SYSTEM_ERR) for xid in xids]
        self.drc.finish_all(keys, replies)

    def dispatch(self, record: bytes | bytearray, client: tuple[str, int], reserve: int,
                 max_transfer: int = MAX_TRANSFER, hold: bool = True) -> Reply | Awaitable[Reply]:
        """The reply (with ``reserve`` leading bytes for a record mark), None to send
        nothing, or an awaitable of either when the handler runs in the thread pool or the
        call is held (``hold``: it may be; not over UDP, see nfsd/rpc/held.py).
        ``max_transfer`` bounds the data of one READ or READDIR reply (UDP: a datagram)."""
        tracing = self.trace_level
        start = time.perf_counter() if tracing else 0.0
        try:
            call = parse_call(record)
        except CallRejected as rej:
            log.info("rejected call from %s: %s", client[0], rej)
            return bytes(reserve) + rej.reply
        except NotACall:
            return None
        except XdrError as exc:
            log.info("dropping unparseable record from %s: %s", client[0], exc)
            return None
        self.calls += 1
        xid, prog, vers, procnum, cred, args_offset = call
        if self._forwards and prog in self._forwards:
            return self._forwards[prog](record, client, reserve)
        found = self._procedures.get((prog, vers, procnum))
        if found is None:
            if (prog, vers) in self._programs:
                return self._error(reserve, xid, accept_stat.PROC_UNAVAIL, client, call)
            versions = self._versions.get(prog)
            if versions is None:
                return self._error(reserve, xid, accept_stat.PROG_UNAVAIL, client, call)
            return self._error(reserve, xid, accept_stat.PROG_MISMATCH, client, call, *versions)
        reg, (proc, handler, offload, unpack_args, pack_res) = found
        # A memoryview lets WRITE data reach pwrite() without being copied; a small record is
        # decoded from its bytes (each opaque, a handle, is then one slice, not a view and a
        # copy of it), where copying any data it carries costs less than the views.
        view = record if len(record) <= SMALL_RECORD and type(record) is bytes else memoryview(record)
        try:
            args, end = unpack_args(view, args_offset)
            if end != len(record):
                raise XdrError(f"{len(record) - end} trailing bytes")
        except (XdrError, struct.error, IndexError, TypeError) as exc:
            log.info("GARBAGE_ARGS from %s for %s: %s", client[0], proc.name, exc)
            return self._error(reserve, xid, accept_stat.GARBAGE_ARGS, client, call)
        drc_key = None
        drc = self.drc
        if drc is not None and not proc.idempotent:
            drc_key = drc.key(client[0], xid, prog, vers, procnum, view[args_offset:])
            cached = drc.begin(drc_key)
            if cached is not None:
                if cached is not IN_PROGRESS:  # (bytes, or the bytearray copy ``_finish`` made)
                    log.debug("replaying cached reply for xid %#x from %s", xid, client[0])
                    return bytes(reserve) + cached
                return None  # the original is still being served: its reply will answer
        ctx = _new(CallContext, (cred, client, max_transfer))  # one C call, not CallContext's __new__
        # Served inline: ``_invoke`` written out here (a Python frame less per call).
        try:
            if offload is not None and self.executor is not None and offload(args):
                return self._later(reg, proc, handler, offload, pack_res, ctx, args, reserve, call, drc_key, start,
                                   record, hold, None)
            result = handler(ctx, args)
        except CallPending as pending:
            if hold and self.held.room():
                return self._later(reg, proc, handler, offload, pack_res, ctx, args, reserve, call, drc_key, start,
                                   record, hold, pending)
            pending.ready.cancel()  # (not held: UDP, or HELD_MAX held already) its failure now
            result = self._failed(proc, pending)
        except WouldBlock:  # (nothing done: it waits for the disk in the pool instead)
            return self._later(reg, proc, handler, offload, pack_res, ctx, args, reserve, call, drc_key, start,
                               record, hold, None)
        except Exception as exc:  # noqa: BLE001 - answered as _invoke answers it
            result = self._failed(proc, exc)
        reply = self._finish(proc, pack_res, result, reserve, xid, drc_key)
        if tracing:
            self._trace(reg, proc, call, ctx, args, result, start, record, reply, reserve)
        return reply

    async def _later(self, reg: Registered, proc: Procedure, handler: Callable[..., Any], offload: Offload | None,
                     pack_res: Callable[..., Any], ctx: CallContext, args: Any, reserve: int, call: Any,
                     drc_key: Any, start: float, record: bytes | bytearray, hold: bool,
                     pending: CallPending | None) -> Reply:
        """The reply to a call ``dispatch`` did not answer inline: one it runs in the thread
        pool (``pending`` None), or one held until ``pending`` is ready (nfsd/rpc/held.py).
        A held call runs again as ``dispatch`` would run it (in the pool, or inline within a
        burst of its own), held again as often as it is pending again, within HOLD_SECONDS
        (LONG_HOLD_SECONDS while what it waits for ``ends``) of its first hold.  Held only if
        it may be (``hold``) and while fewer than HELD_MAX are: else, as for the first time
        it is pending, its failure."""
        loop = asyncio.get_running_loop()
        since = None
        reply: Reply = None
        waits = None
        pooled = pending is None  # (``dispatch`` asked ``offload`` already)
        while True:
            if pending is not None:
                if since is None:
                    if not (hold and self.held.room()):
                        pending.ready.cancel()
                        result = self._failed(proc, pending)
                        break
                    since = loop.time()
                held = self.held
                deadline = since + (held.long_hold_seconds if pending.ends else held.hold_seconds)
                try:
                    go = await held.wait(pending.ready, ctx.client, deadline)
                except asyncio.CancelledError:  # (the server stops: nothing ran)
                    if drc_key is not None:
                        self.drc.finish(drc_key, None)
                    raise
                if go is None:  # its connection closed: nothing to answer
                    if drc_key is not None:
                        self.drc.finish(drc_key, None)
                    return None
                if not go:
                    result = self._failed(proc, pending)
                    break
            try:
                if pooled or (offload is not None and self.executor is not None and offload(args)):
                    result = await loop.run_in_executor(self.executor, self._invoke, handler, ctx, args, proc)
                    break
                self.begin_burst()  # (a held call run again inline: a burst of its own)
                try:
                    result = self._invoke(handler, ctx, args, proc)
                    reply = self._finish(proc, pack_res, result, reserve, call.xid, drc_key)
                finally:
                    waits = self.end_burst()
                break
            except CallPending as again:  # (raised out of the thread, or inline: before any change)
                pending, pooled, waits = again, False, None
            except WouldBlock:  # (inline, before any change) to the pool
                pending, pooled, waits = None, True, None
            except Exception as exc:  # noqa: BLE001 - (the offload check) answered as ``dispatch`` does
                result = self._failed(proc, exc)
                break
        if reply is None:
            reply = self._finish(proc, pack_res, result, reserve, call.xid, drc_key)
        elif waits is not None:  # what it tells must be durable first (``end_burst``)
            try:
                await waits
            except Exception:  # noqa: BLE001 - answered as a held burst's replies are
                reply = system_error_for(reply, reserve)
        if self.trace_level:
            self._trace(reg, proc, call, ctx, args, result, start, record, reply, reserve)
        return reply

    @classmethod
    def _invoke(cls, handler: Callable[..., Any], ctx: CallContext, args: Any, proc: Procedure) -> Any:
        try:
            return handler(ctx, args)
        except (CallPending, WouldBlock):
            raise  # (held, or run in the pool, by the caller: ``_later``)
        except Exception as exc:  # noqa: BLE001 - every failure is answered
            return cls._failed(proc, exc)

    @staticmethod
    def _failed(proc: Procedure, exc: Exception) -> Any:
        """The result for a handler that raised ``exc``: the procedure's failure result for
        a CallFailed with a status it can carry, else SYSTEM_ERR (logged)."""
        if isinstance(exc, CallFailed):
            failure = proc.failure(exc.status)
            if failure is not None:
                return failure
            log.warning("%s failed: %s", proc.name, exc)
            return _SYSTEM_ERR
        log.error("%s raised", proc.name, exc_info=exc)
        return _SYSTEM_ERR

    def _finish(self, proc: Procedure, pack_res: Callable[..., Any], result: Any, reserve: int, xid: int,
                drc_key: Any) -> Reply:
        """The reply to a call whose handler returned ``result``, cached for a non-idempotent
        one (``drc_key``)."""
        reply: Reply = None
        if result is not _SYSTEM_ERR:
            buf = success_reply(xid, reserve)
            try:
                pack_res(buf, result)
                reply = buf
            except (XdrError, struct.error, TypeError, ValueError):
                log.exception("cannot encode %s result", proc.name)
        if reply is None:
            reply = bytes(reserve) + accepted_error_reply(xid, accept_stat.SYSTEM_ERR)
        if drc_key is not None:
            if self.burst.thread:  # in a burst served inline: cached once the burst's replies may leave (``end_burst``)
                self._drc_keys.append(drc_key)
                self._drc_replies.append(reply[reserve:])
                self._drc_xids.append(xid)
            else:
                self.drc.finish(drc_key, reply[reserve:])
        return reply

    def _error(self, reserve: int, xid: int, stat: int, client: tuple[str, int], call: Any,
               low: int = 0, high: int = 0) -> bytes:
        if self.trace_level:
            trace.log.info("%s:%d xid=%#x prog=%d vers=%d proc=%d -> %s", client[0], client[1], xid,
                           call.prog, call.vers, call.proc, accept_stat.values(stat).name)
        return bytes(reserve) + accepted_error_reply(xid, stat, low, high)

    def _trace(self, reg: Registered, proc: Procedure, call: Any, ctx: CallContext, args: Any, result: Any,
               start: float, record: bytes | bytearray, reply: Any, reserve: int) -> None:
        ms = (time.perf_counter() - start) * 1000
        status = "SYSTEM_ERR" if result is _SYSTEM_ERR else trace.status_name(result, reg.status_enum)
        trace.log.info("%s:%d xid=%#x %s.%s %s -> %s %.3fms", ctx.client[0], ctx.client[1], call.xid, reg.program.name, proc.name, trace.summarize(args), status, ms)
        if self.trace_level >= 2:
            trace.log.info("  %s\n  args: %s\n  res:  %s", trace.credentials(call.cred, reg.service, proc.name, ctx, args),
                           trace.pretty(args, depth=1),
                           trace.pretty(result, depth=1) if result is not _SYSTEM_ERR else "SYSTEM_ERR")
        if self.trace_level >= 10:
            trace.log.info("  call bytes:\n%s\n  reply bytes:\n%s", trace.hexdump(record),
                           trace.hexdump(memoryview(reply)[reserve:]))


_SYSTEM_ERR = object()
_new = tuple.__new__


def system_error_for(reply: bytes | bytearray, reserve: int) -> bytes:
    """A SYSTEM_ERR reply to the call ``reply`` answers (``reserve`` leading bytes kept):
    what a held reply becomes when what it waited for failed (``Dispatcher.end_burst``)."""
    xid = int.from_bytes(reply[reserve:reserve + 4], "big")
    return bytes(reserve) + accepted_error_reply(xid, accept_stat.SYSTEM_ERR)
