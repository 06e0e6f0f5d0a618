"""Calls held instead of answered "try again later" (nfsd/rpc/held.py, Dispatcher._later): a
handler raising CallPending has its call held until the future it names is done, then run
again (same arguments, same duplicate-request-cache entry) while other calls are served;
bounded in number and time; dropped with its connection; never over UDP.  NFSv3's GETATTR
and REMOVE serve as the procedures (REMOVE: a non-idempotent one), with fake handlers."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from nfsd.nfs3.attrs import fattr
from nfsd.nfs3.errors import NfsError, NfsPending
from nfsd.rpc.dispatch import Dispatcher
from nfsd.rpc.drc import DuplicateRequestCache
from protocol import nfs3
from protocol.nfs3 import nfsstat3
from protocol.program import Program
from protocol.rpc import accept_stat, decode_reply, encode_call, reply_stat

GETATTR, REMOVE = nfs3.NFS3.procedures[1], nfs3.NFS3.procedures[12]
PROGRAM = Program.of(nfs3.NFS3.number, 3, "NFS", [GETATTR, REMOVE])
CLIENT = ("10.0.0.1", 801)
FH = bytes(16)


class Walk:
    """What the fake handlers consult: a search that has met the inode, or not yet."""

    def __init__(self) -> None:
        self.found: bool | None = None  # None: not yet; True: met; False: ended without it
        self.ends = False  # (CallPending.ends: what it waits for is sure to end)
        self.waiters: list[Future[bool]] = []
        self.runs: list[str] = []
        self.removed = 0

    def resolve(self, name: str) -> None:
        self.runs.append(name)
        if self.found is None:
            fut: Future[bool] = Future()
            self.waiters.append(fut)
            raise NfsPending(fut, "the search goes on", self.ends)
        if not self.found:
            raise NfsError(nfsstat3.NFS3ERR_STALE)

    def end(self, found: bool) -> None:
        self.found = found
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(True)

    def getattr_(self, ctx: Any, a: Any) -> Any:
        self.resolve("GETATTR")
        return nfsstat3.NFS3_OK, nfs3.GETATTR3resok.cls(fattr(os.stat("/"), 1))

    def remove(self, ctx: Any, a: Any) -> Any:
        self.resolve("REMOVE")
        self.removed += 1
        return nfsstat3.NFS3_OK, nfs3.REMOVE3resok.cls(nfs3.wcc_data.cls(None, None))


def _dispatcher(walk: Walk, executor: Any = None, offload_getattr: bool = False, **held: Any) -> Dispatcher:
    d = Dispatcher(executor, drc=DuplicateRequestCache())
    offload = {1: (lambda a: True)} if offload_getattr else {}
    d.register(PROGRAM, None, offload, {1: walk.getattr_, 12: walk.remove})
    for name, value in held.items():
        setattr(d.held, name, value)
    return d


def _record(proc: Any, xid: int) -> bytes:
    buf = encode_call(xid, PROGRAM.number, 3, proc.number)
    args = (nfs3.GETATTR3args.cls(nfs3.nfs_fh3.cls(FH)) if proc is GETATTR
            else nfs3.REMOVE3args.cls(nfs3.diropargs3.cls(nfs3.nfs_fh3.cls(FH), b"f")))
    proc.args.pack(buf, args)
    return bytes(buf)


def _status(reply: Any) -> int:
    assert isinstance(reply, (bytes, bytearray)), reply
    _, body, off = decode_reply(bytes(reply))
    assert body[0] == reply_stat.MSG_ACCEPTED and body[1].reply_data[0] == accept_stat.SUCCESS
    return int.from_bytes(reply[off:off + 4], "big")


def _held(d: Dispatcher, proc: Any, xid: int, client: tuple[str, int] = CLIENT) -> "asyncio.Future[Any]":
    """The task of a call the dispatcher holds (an awaitable, not a reply)."""
    held = d.dispatch(_record(proc, xid), client, 0)
    assert held is not None and not isinstance(held, (bytes, bytearray)), "answered at once"
    return asyncio.ensure_future(held)


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_held_call_is_answered_once_the_walk_meets_the_inode_while_others_are_served() -> None:
    walk = Walk()
    d = _dispatcher(walk)

    async def go() -> None:
        held = d.dispatch(_record(GETATTR, 1), CLIENT, 0)
        assert not isinstance(held, (bytes, bytearray)) and held is not None  # held, not JUKEBOX
        task = asyncio.ensure_future(held)
        await _turns()
        assert not task.done() and d.held.count == 1
        walk.found = True  # another call is served meanwhile, inline
        assert _status(d.dispatch(_record(GETATTR, 2), ("10.0.0.2", 802), 0)) == nfsstat3.NFS3_OK
        walk.end(True)
        assert _status(await task) == nfsstat3.NFS3_OK
        assert walk.runs == ["GETATTR", "GETATTR", "GETATTR"] and d.held.count == 0
    asyncio.run(go())


def test_a_held_call_for_an_inode_the_walk_ended_without_is_stale() -> None:
    walk = Walk()
    d = _dispatcher(walk)

    async def go() -> None:
        task = _held(d, GETATTR, 1)
        await _turns()
        walk.end(False)
        assert _status(await task) == nfsstat3.NFS3ERR_STALE
    asyncio.run(go())


def test_a_non_idempotent_call_is_held_in_progress_then_cached_and_run_once() -> None:
    walk = Walk()
    d = _dispatcher(walk)

    async def go() -> None:
        task = _held(d, REMOVE, 9)
        await _turns()
        assert d.dispatch(_record(REMOVE, 9), CLIENT, 0) is None  # the retransmission: in progress
        walk.end(True)
        first = await task
        assert _status(first) == nfsstat3.NFS3_OK and walk.removed == 1
        assert d.dispatch(_record(REMOVE, 9), CLIENT, 0) == first  # replayed from the cache
        assert walk.removed == 1
    asyncio.run(go())


def test_an_idempotent_retransmission_is_held_beside_the_original() -> None:
    """A client whose timeout is shorter than the hold retransmits: an idempotent call has
    no duplicate-request-cache entry, so the copy is held too and both are answered."""
    walk = Walk()
    d = _dispatcher(walk)

    async def go() -> None:
        tasks = [_held(d, GETATTR, 7), _held(d, GETATTR, 7)]
        await _turns()
        assert d.held.count == 2
        walk.end(True)
        assert [_status(await t) for t in tasks] == [nfsstat3.NFS3_OK] * 2
    asyncio.run(go())


def test_beyond_held_max_a_call_is_jukebox_at_once() -> None:
    walk = Walk()
    d = _dispatcher(walk, held_max=2)

    async def go() -> None:
        tasks = [_held(d, GETATTR, x) for x in (1, 2)]
        await _turns()
        assert d.held.count == 2
        assert _status(d.dispatch(_record(GETATTR, 3), CLIENT, 0)) == nfsstat3.NFS3ERR_JUKEBOX
        assert walk.waiters[2].cancelled()  # (what it waited on is let go)
        walk.end(True)
        assert [_status(await t) for t in tasks] == [nfsstat3.NFS3_OK] * 2
    asyncio.run(go())


def test_a_burst_of_pending_calls_holds_no_more_than_held_max() -> None:
    """Calls dispatched in one burst are all pending before the first of them is held: the
    bound is checked as each starts to wait, so the burst's third waits for nothing and is
    answered JUKEBOX (checked at dispatch only, all three were held, past the bound)."""
    walk = Walk()
    d = _dispatcher(walk, held_max=2)

    async def go() -> None:
        tasks = [_held(d, GETATTR, x) for x in (1, 2, 3)]
        await _turns()
        assert d.held.count == 2 and tasks[2].done()
        assert _status(await tasks[2]) == nfsstat3.NFS3ERR_JUKEBOX and walk.waiters[2].cancelled()
        walk.end(True)
        assert [_status(await t) for t in tasks[:2]] == [nfsstat3.NFS3_OK] * 2
    asyncio.run(go())


def test_over_udp_a_call_pending_out_of_the_pool_is_jukebox() -> None:
    walk = Walk()
    with ThreadPoolExecutor(1) as pool:
        d = _dispatcher(walk, pool, offload_getattr=True)

        async def go() -> None:
            reply = d.dispatch(_record(GETATTR, 1), CLIENT, 0, 32 << 10, False)
            assert reply is not None and not isinstance(reply, (bytes, bytearray))  # (the pool's)
            assert _status(await reply) == nfsstat3.NFS3ERR_JUKEBOX
            assert walk.waiters[0].cancelled() and d.held.count == 0
        asyncio.run(go())


def test_a_call_held_past_hold_seconds_is_jukebox() -> None:
    walk = Walk()
    d = _dispatcher(walk, hold_seconds=0.0)  # (its deadline is now: no time is waited for)

    async def go() -> None:
        assert _status(await d.dispatch(_record(GETATTR, 1), CLIENT, 0)) == nfsstat3.NFS3ERR_JUKEBOX  # type: ignore[misc]
        assert walk.waiters[0].cancelled() and d.held.count == 0
    asyncio.run(go())


def test_a_wait_that_ends_is_held_longer_counted_from_the_first_hold() -> None:
    """``ends``: held up to long_hold_seconds, past hold_seconds (0 here); pending again for
    an ordinary wait, it has only hold_seconds from its first hold: JUKEBOX at once."""
    walk = Walk()
    walk.ends = True
    d = _dispatcher(walk, hold_seconds=0.0, long_hold_seconds=60.0)

    async def go() -> None:
        task = _held(d, GETATTR, 1)
        await _turns()
        assert not task.done() and d.held.count == 1
        walk.ends = False
        for fut in walk.waiters:  # what it waited for moved on, the rerun waits for more
            fut.set_result(True)
        assert _status(await task) == nfsstat3.NFS3ERR_JUKEBOX and walk.runs == ["GETATTR"] * 2
        walk.ends = True
        task = _held(d, GETATTR, 2)
        await _turns()
        walk.end(True)
        assert _status(await task) == nfsstat3.NFS3_OK
    asyncio.run(go())


def test_a_call_whose_connection_closed_answers_nothing_and_is_forgotten() -> None:
    walk = Walk()
    d = _dispatcher(walk)
    drc = d.drc

    async def go() -> None:
        task = _held(d, REMOVE, 5)
        other = _held(d, GETATTR, 6, ("10.0.0.2", 802))
        await _turns()
        d.held.closed(CLIENT)
        assert await task is None and walk.removed == 0
        assert walk.waiters[0].cancelled() and not other.done() and d.held.count == 1
        key = drc.key(CLIENT[0], 5, PROGRAM.number, 3, 12, _record(REMOVE, 5)[40:])
        assert drc.begin(key) is None  # forgotten: a new connection's retry is served anew
        d.held.release()  # the server stops: the other is told to try again
        assert _status(await other) == nfsstat3.NFS3ERR_JUKEBOX
        assert d.held.count == 0 and not d.held._waits
    asyncio.run(go())


def test_over_udp_a_pending_call_is_jukebox_as_before() -> None:
    walk = Walk()
    d = _dispatcher(walk)
    assert _status(d.dispatch(_record(GETATTR, 1), CLIENT, 0, 32 << 10, False)) == nfsstat3.NFS3ERR_JUKEBOX
    assert walk.waiters[0].cancelled()


def test_a_call_from_the_thread_pool_is_held_on_the_loop_and_run_again_in_the_pool() -> None:
    walk = Walk()
    with ThreadPoolExecutor(1) as pool:
        d = _dispatcher(walk, pool, offload_getattr=True)

        async def go() -> None:
            task = _held(d, GETATTR, 1)
            while not walk.waiters:
                await asyncio.sleep(0.001)
            await _turns()
            assert d.held.count == 1
            assert pool.submit(lambda: "free").result() == "free"  # no pool thread waits
            walk.end(True)
            assert _status(await task) == nfsstat3.NFS3_OK
        asyncio.run(go())


def test_a_failure_caught_by_a_handler_stays_its_jukebox() -> None:
    """A CallPending caught as the failure it also is answers that failure (JUKEBOX), as
    before holding: the fallback where a handler catches NfsError around a resolve."""
    with pytest.raises(NfsError) as err:
        raise NfsPending(Future())
    assert err.value.status == nfsstat3.NFS3ERR_JUKEBOX


def test_an_offload_check_that_is_pending_holds_the_call_and_one_that_fails_is_system_err() -> None:
    """The check that decides whether a call runs in the thread pool resolves its handle
    too (READDIR's): pending, the call is held like any other; failing, it is answered
    SYSTEM_ERR (it used to escape the dispatcher) -- held or not."""
    walk = Walk()
    d = Dispatcher(ThreadPoolExecutor(1), drc=DuplicateRequestCache())
    checks: list[str] = []

    def offload(a: Any) -> bool:
        checks.append("check")
        if len(checks) == 2:
            raise RuntimeError("broken check")
        walk.resolve("check")
        return False
    d.register(PROGRAM, None, {1: offload}, {1: walk.getattr_, 12: walk.remove})
    task_status: list[int] = []

    async def held_then_broken() -> None:
        task = _held(d, GETATTR, 1)  # the check is pending: held
        await _turns()
        walk.end(True)  # run again: the check now fails
        reply = await task
        _, body, _ = decode_reply(bytes(reply))
        task_status.append(body[1].reply_data[0])
        # not held: the check passes (third call) and the call is served inline
        assert _status(d.dispatch(_record(GETATTR, 2), CLIENT, 0)) == nfsstat3.NFS3_OK
    asyncio.run(held_then_broken())
    assert task_status == [accept_stat.SYSTEM_ERR] and checks == ["check"] * 3
    checks[:] = ["check"]  # the next check is the second: it fails, outside any hold
    reply = d.dispatch(_record(GETATTR, 3), CLIENT, 0)
    _, body, _ = decode_reply(bytes(reply))  # type: ignore[arg-type]
    assert body[1].reply_data[0] == accept_stat.SYSTEM_ERR
    d.executor.shutdown()  # type: ignore[union-attr]


def test_held_calls_do_not_stop_the_calls_behind_them_on_their_connection() -> None:
    """Two GETATTRs held on a connection that serves at most two calls at once: the NULL
    sent after them is answered while they wait (before, it waited the hold out unread)."""
    from nfsd.rpc.server import RpcStreamProtocol
    from protocol.record import set_mark

    walk = Walk()
    null = nfs3.NFS3.procedures[0]
    d = Dispatcher(None, drc=DuplicateRequestCache())
    d.register(Program.of(nfs3.NFS3.number, 3, "NFS", [null, GETATTR]), None, {},
               {0: lambda ctx, a: None, 1: walk.getattr_})

    def marked(record: bytes) -> bytes:
        return bytes(set_mark(bytearray(4) + record))

    async def reply_xid(reader: asyncio.StreamReader) -> int:
        mark = await reader.readexactly(4)
        body = await reader.readexactly(int.from_bytes(mark, "big") & 0x7FFFFFFF)
        return int.from_bytes(body[:4], "big")

    async def go() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: RpcStreamProtocol(d, set(), 65536, max_inflight=2), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(marked(_record(GETATTR, 1)) + marked(_record(GETATTR, 2))
                         + marked(bytes(encode_call(3, PROGRAM.number, 3, 0))))
            assert await asyncio.wait_for(reply_xid(reader), 10) == 3  # NULL, the GETATTRs held
            assert d.held.count == 2
            walk.end(True)
            assert {await asyncio.wait_for(reply_xid(reader), 10) for _ in range(2)} == {1, 2}
        finally:
            writer.close()
            server.close()
            await server.wait_closed()
    asyncio.run(go())
