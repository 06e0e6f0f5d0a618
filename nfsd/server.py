"""asyncio transports: a thin shell moving RPC records between sockets and the dispatcher.

Uses ``asyncio.Protocol`` callbacks rather than streams (several times faster per call).
Each connection bounds its memory: one record at most ``max_record`` bytes (larger: logged and
the connection closed), at most ``max_inflight`` calls being served, and reading pauses
while the peer is not reading its replies.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from protocol.record import RecordReader, RecordTooLarge, set_mark

from .dispatch import Dispatcher

log = logging.getLogger("pysfsd.net")


class RpcStreamProtocol(asyncio.Protocol):
    def __init__(self, dispatcher: Dispatcher, connections: set["RpcStreamProtocol"],
                 max_record: int, max_inflight: int = 32) -> None:
        self.dispatcher = dispatcher
        self.connections = connections
        self.reader = RecordReader(max_record)
        self.max_inflight = max_inflight
        self.inflight = 0
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self._reading_paused = False
        self._writing_paused = False
        self.tasks: set[asyncio.Task[Any]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("local", 0)
        transport.set_write_buffer_limits(high=4 << 20)  # type: ignore[attr-defined]
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            records = self.reader.feed(data)
        except RecordTooLarge as exc:
            log.warning("closing connection from %s:%d: %s", *self.peer, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        for record in records:
            reply = self.dispatcher.dispatch(record, self.peer, 4)
            if reply is None:
                continue
            if isinstance(reply, (bytes, bytearray)):
                self._send(reply)
            else:
                self.inflight += 1
                task = asyncio.ensure_future(reply)
                self.tasks.add(task)
                task.add_done_callback(self._done)
        self._update_reading()

    def _done(self, task: "asyncio.Future[Any]") -> None:
        self.tasks.discard(task)  # type: ignore[arg-type]
        self.inflight -= 1
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("call from %s:%d failed: %r", *self.peer, exc)
        else:
            reply = task.result()
            if reply is not None:
                self._send(reply)
        self._update_reading()

    def _send(self, reply: bytes | bytearray) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(reply, bytes):
            reply = bytearray(reply)
        self.transport.write(set_mark(reply))

    def _update_reading(self) -> None:
        if self.transport is None:
            return
        should_pause = self.inflight >= self.max_inflight or self._writing_paused
        if should_pause and not self._reading_paused:
            self.transport.pause_reading()
            self._reading_paused = True
        elif not should_pause and self._reading_paused:
            self.transport.resume_reading()
            self._reading_paused = False

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()


class RpcDatagramProtocol(asyncio.DatagramProtocol):
    """RPC over UDP: one record per datagram, replies bounded by the datagram size."""

    MAX_DATAGRAM = 65507

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.dispatcher.dispatch(data, (addr[0], addr[1]), 0)
        if reply is None:
            return
        if isinstance(reply, (bytes, bytearray)):
            self._send(reply, addr)
        else:
            task = asyncio.ensure_future(reply)
            self.tasks.add(task)
            task.add_done_callback(lambda t: self._done(t, addr))

    def _done(self, task: "asyncio.Future[Any]", addr: tuple[str, int]) -> None:
        self.tasks.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and task.exception() is None and task.result() is not None:
            self._send(task.result(), addr)

    def _send(self, reply: bytes | bytearray, addr: tuple[str, int]) -> None:
        if self.transport is None:
            return
        if len(reply) > self.MAX_DATAGRAM:
            log.warning("reply of %d bytes to %s does not fit a datagram; dropped", len(reply), addr[0])
            return
        self.transport.sendto(reply, addr)
