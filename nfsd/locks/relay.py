"""NLM and NSM with several workers (``--workers N``): one lock table, in the primary.

Lock state (the table, the OFD locks on the real files, waiters, the grace period, the
monitor records, callbacks) lives in one process, the primary worker.  A client sends NLM
and NSM to the NFS port, like to a single-process server, so any worker may receive them:
a follower hands the whole call record, with the client's address, to the primary over a
``SOCK_SEQPACKET`` pair (one per follower, created by the parent and kept open by it, so a
call sent while the primary restarts waits in the socket), the primary dispatches it as if
the client had sent it there (``ctx.client`` is the client's, so lock owners, FREE_ALL,
SM_NOTIFY checks and ``*_RES``/GRANTED callbacks address the client) and sends the reply
bytes back; the follower answers on the client's connection.  A call the primary does not
answer within ``FORWARD_TIMEOUT`` gets no reply: the client retransmits, as after a lost
datagram.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Iterator
from typing import Any, Callable

log = logging.getLogger("pysfsd.nlm")

_CALL = struct.Struct(">IHB")   # request number, client port, client address length; address, record
_REPLY = struct.Struct(">IB")   # request number, 1 = a reply follows (0: none, a _MSG call's void)
MAX_RECORD = 32 << 10           # an NLM call is < 3 KiB (a 1 KiB owner and caller name at most)
FORWARD_TIMEOUT = 10.0


def relay_pair() -> tuple[socket.socket, socket.socket]:
    """(primary end, follower end) of one follower's lock channel."""
    p, f = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (p, f):
        s.set_inheritable(True)
    return p, f


Reply = bytes | bytearray | None


def _received(sock: socket.socket, least: int) -> Iterator[bytes]:
    """The messages waiting in ``sock`` (non-blocking), until one shorter than ``least``."""
    while True:
        try:
            msg = sock.recv(MAX_RECORD + 512)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("lock channel: %s", exc)
            return
        if len(msg) < least:
            return
        yield msg


class LockForwarder:
    """A follower's end: ``forward`` is the dispatcher's handler of NLM and NSM calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        # a restarted follower must not take an earlier incarnation's late replies for its own
        self._next = int.from_bytes(os.urandom(4), "big")
        self._reading = False

    def start(self) -> None:
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)
        self._reading = True

    def stop(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self._reading = False
        for fut in self.pending.values():
            fut.cancel()
        self.pending.clear()

    def forward(self, record: bytes | bytearray, client: tuple[str, int], reserve: int) -> Reply | Awaitable[Reply]:
        if len(record) > MAX_RECORD or not self._reading:
            return None  # no NLM call is that big; not started (or stopping): no answer
        rid = self._next = (self._next + 1) & 0xFFFFFFFF
        addr = client[0].encode()
        try:
            self.sock.send(b"".join((_CALL.pack(rid, client[1] & 0xFFFF, len(addr)), addr, record)))
        except OSError as exc:  # the channel is full (the primary is stuck or restarting)
            log.info("NLM/NSM call from %s not forwarded: %s", client[0], exc)
            return None
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        return self._answer(rid, fut, reserve)

    async def _answer(self, rid: int, fut: "asyncio.Future[Reply]", reserve: int) -> Reply:
        try:
            reply = await asyncio.wait_for(fut, FORWARD_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            return None
        finally:
            self.pending.pop(rid, None)
        if reply is None:
            return None
        out = bytearray(reserve)
        out += reply
        return out

    def _read(self) -> None:
        for msg in _received(self.sock, _REPLY.size):
            rid, has = _REPLY.unpack_from(msg)
            fut = self.pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(msg[_REPLY.size:] if has else None)


class LockRelay:
    """The primary's end of every follower's lock channel: dispatch, send the reply back."""

    def __init__(self, socks: list[socket.socket], dispatch: Callable[[bytes, tuple[str, int], int], Any]) -> None:
        self.socks = socks
        self.dispatch = dispatch
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for s in self.socks:
            s.setblocking(False)
            loop.add_reader(s.fileno(), self._read, s)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for s in self.socks:
            loop.remove_reader(s.fileno())
        for t in self.tasks:
            t.cancel()

    def _read(self, sock: socket.socket) -> None:
        for msg in _received(sock, _CALL.size):
            rid, port, alen = _CALL.unpack_from(msg)
            start = _CALL.size + alen
            client = (msg[_CALL.size:start].decode(errors="replace"), port)
            reply = self.dispatch(msg[start:], client, 0)
            if reply is None or isinstance(reply, (bytes, bytearray)):
                self._send(sock, rid, reply)
            else:
                task = asyncio.ensure_future(reply)
                self.tasks.add(task)
                task.add_done_callback(lambda t, s=sock, r=rid: self._sent_later(t, s, r))

    def _sent_later(self, task: "asyncio.Future[Reply]", sock: socket.socket, rid: int) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._send(sock, rid, task.result())

    @staticmethod
    def _send(sock: socket.socket, rid: int, reply: Reply) -> None:
        try:
            if reply is None:
                sock.send(_REPLY.pack(rid, 0))
            else:
                sock.send(b"".join((_REPLY.pack(rid, 1), reply)))
        except OSError as exc:  # the follower is gone or stuck: it times the call out
            log.info("lock channel: reply not sent: %s", exc)
