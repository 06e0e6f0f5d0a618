"""asyncio transports: a thin shell moving RPC records between sockets and the dispatcher.

Uses ``asyncio.Protocol`` callbacks rather than streams (several times faster per call).
Each connection bounds its memory: one record at most ``max_record`` bytes (larger: logged and
the connection closed), at most ``max_inflight`` calls being served, and reading pauses
while the peer is not reading its replies.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Callable

from protocol.record import RecordReader, RecordTooLarge, set_mark
from protocol.rpc import accept_stat, accepted_error_reply

from .dispatch import Dispatcher

log = logging.getLogger("pysfsd.net")


def _marked(reply: bytes | bytearray) -> bytearray:
    """The reply with its record mark filled into the 4 bytes reserved at its start."""
    return set_mark(reply if isinstance(reply, bytearray) else bytearray(reply))


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
        # Replies answered inline leave together: one vectored write for a pipelined burst
        # instead of a system call per reply.
        ready: list[bytearray] = []
        for record in records:
            reply = self.dispatcher.dispatch(record, self.peer, 4)
            if reply is None:
                continue
            if isinstance(reply, (bytes, bytearray)):
                ready.append(_marked(reply))
            else:
                self.inflight += 1
                task = asyncio.ensure_future(reply)
                self.tasks.add(task)
                task.add_done_callback(self._done)
        if ready and self.transport is not None and not self.transport.is_closing():
            if len(ready) == 1:
                self.transport.write(ready[0])
            else:
                self.transport.writelines(ready)
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
        self.transport.write(_marked(reply))

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
    """RPC over UDP: one record per datagram, replies bounded by the datagram size.

    Calls carry ``max_transfer`` to the handlers (READ and READDIR data, FSINFO's
    rtmax/wtmax), 32 KiB as knfsd uses over UDP, so that replies fit a datagram; one that
    still does not is answered SYSTEM_ERR rather than dropped (a dropped reply is retransmitted
    forever).  Retransmissions are absorbed by the dispatcher's duplicate request cache.  At
    most ``max_inflight`` calls run at once; datagrams beyond that are dropped (the client
    retransmits).  ``connections``, when given, holds this endpoint while it is open, so the
    server's shutdown waits for its calls like for those of TCP connections.
    """

    MAX_DATAGRAM = 65507
    MAX_TRANSFER = 32 << 10
    SOCKET_BUFFER = 4 << 20

    def __init__(self, dispatcher: Dispatcher, connections: set[Any] | None = None,
                 max_inflight: int = 128, max_transfer: int = MAX_TRANSFER) -> None:
        self.dispatcher = dispatcher
        self.connections = connections if connections is not None else set()
        self.max_inflight = max_inflight
        self.max_transfer = max_transfer
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:  # bursts of 32 KiB WRITEs overflow the default buffers
                sock.setsockopt(socket.SOL_SOCKET, option, self.SOCKET_BUFFER)
            except (OSError, AttributeError):
                pass
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # e.g. ICMP port unreachable from a vanished client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self.tasks) >= self.max_inflight:
            self.dropped += 1
            return
        reply = self.dispatcher.dispatch(data, (addr[0], addr[1]), 0, self.max_transfer)
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
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("call from %s:%d failed: %r", addr[0], addr[1], exc)
        elif task.result() is not None:
            self._send(task.result(), addr)

    def _send(self, reply: bytes | bytearray, addr: tuple[str, int]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if len(reply) > self.MAX_DATAGRAM:
            log.warning("reply of %d bytes to %s does not fit a datagram; answering SYSTEM_ERR",
                        len(reply), addr[0])
            reply = accepted_error_reply(int.from_bytes(reply[:4], "big"), accept_stat.SYSTEM_ERR)
        self.transport.sendto(reply, addr)


async def listen_rpc(host: str, port: int, stream_factory: Callable[[], asyncio.Protocol],
                     datagram_factory: Callable[[], asyncio.DatagramProtocol],
                     attempts: int = 32) -> tuple[asyncio.base_events.Server, asyncio.DatagramTransport, int]:
    """A TCP server and a UDP endpoint on the same port of ``host``; with ``port`` 0, a port
    free for both.  Returns (server, UDP transport, port)."""
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        server = await loop.create_server(stream_factory, host, port, reuse_address=True)
        bound = server.sockets[0].getsockname()[1]
        try:
            udp, _ = await loop.create_datagram_endpoint(datagram_factory, local_addr=(host, bound))
        except OSError:
            server.close()
            if port != 0 or attempt == attempts - 1:
                raise
            continue
        return server, udp, bound
    raise AssertionError("unreachable")
