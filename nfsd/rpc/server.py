"""asyncio transports: a thin shell moving RPC records between sockets and the dispatcher.

Uses ``asyncio.Protocol`` callbacks rather than streams (several times faster per call).
Each TCP connection bounds what it holds: one record of at most ``max_record`` bytes (larger:
logged and the connection closed), at most ``max_inflight`` calls being served, and replies
queued up to about ``WRITE_BUFFER``: past either limit the connection stops dispatching (the
records already received wait in a backlog) and stops reading until the peer catches up.
``reap_connections`` closes connections that sit still: idle ones after
``ConnectionLimits.idle_timeout``, and after ``stall_timeout`` those holding a partial record
no byte has been added to, or replies the peer does not read; it also trims the buffers
kept for large records (protocol/record.py).  Nothing on the per-record
path keeps a timer: the reaper looks at a flag each connection sets when it makes progress.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from protocol.record import LAST_FRAGMENT as _LAST_FRAGMENT
from protocol.record import RecordReader, RecordTooLarge, set_mark, trim_buffers
from protocol.rpc import accept_stat, accepted_error_reply

from .dispatch import Dispatcher, system_error_for

log = logging.getLogger("pysfsd.net")

#: Replies a connection may queue unsent before it stops reading and dispatching; inline
#: replies leave in vectored writes of up to WRITE_BATCH.
WRITE_BUFFER = 4 << 20
WRITE_BATCH = 1 << 20
#: Inline replies of a burst adding up to at most this many bytes are joined into one (their
#: copy costs less than the transport's handling of each); larger ones leave as they are.
JOIN_MAX = 4 << 10
LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn (4096 by default)
_fill_mark = struct.Struct(">I").pack_into  # a record mark, into a reply's first 4 bytes


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a TCP connection may sit still, and how many may be open at once."""

    #: nothing received, nothing pending (knfsd closes idle connections after 6 minutes;
    #: clients reconnect transparently)
    idle_timeout: float = 360.0
    #: a partial record no byte was added to, or replies not read by the peer
    stall_timeout: float = 120.0
    #: connections beyond this are closed at once (each one is a file descriptor)
    max_connections: int = 1 << 16

    @property
    def sweep_interval(self) -> float:
        """How often the reaper looks: often enough for short (test) timeouts, rarely
        otherwise (a look costs a few attribute reads per connection)."""
        return min(5.0, max(0.05, min(self.idle_timeout, self.stall_timeout) / 4))


def raise_open_files_limit(ceiling: int = 1 << 20) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (at most ``ceiling``): every
    connection is a descriptor and shells and systemd default to 1024.  Returns the soft
    limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(ceiling, hard) if hard != resource.RLIM_INFINITY else ceiling
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_cap() -> int:
    """Connections to accept at most: half the descriptors, the rest for open files, the
    LMDB environment and inotify."""
    return max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2)


class ConnectionActivity:
    """Whether the event loop serves one connection only (``alone``): no burst came from
    another one within ``QUIET`` seconds of the previous burst.  A lone client sending one
    call at a time gains nothing from work handed to the thread pool so that the loop can
    serve others meanwhile (nfsd/fs/dirsync.py fsyncs its directory changes on the loop).
    One instance per process (``activity``), told of every burst (``serving``); UDP calls
    count as coming from another client each."""

    QUIET = 0.5

    __slots__ = ("last", "last_at", "mixed_at", "calls", "piped_at")

    def __init__(self) -> None:
        self.last = 0          # id() of the connection served last
        self.last_at = 0.0     # when
        self.mixed_at = -1e9   # when a burst last came from another connection than the one before, within QUIET
        self.calls = 0         # records in the burst being served
        self.piped_at = -1e9   # when a burst last held several records

    def serving(self, conn: object, calls: int) -> None:
        self.calls = calls
        now = time.monotonic()
        if id(conn) != self.last:
            if now - self.last_at < self.QUIET:
                self.mixed_at = now
            self.last = id(conn)
        if calls > 1:
            self.piped_at = now
        self.last_at = now

    def shared(self) -> None:
        """A call from a client that has no connection of its own (UDP)."""
        self.last = 0
        self.calls = 1
        self.last_at = self.mixed_at = time.monotonic()

    def alone(self) -> bool:
        return self.last_at - self.mixed_at >= self.QUIET

    def one_at_a_time(self) -> bool:
        """``alone``, and no burst held several records within ``QUIET``: the client waits
        for each reply before its next call (a shell loop, an untar), so its calls have
        nothing to share; one that keeps several in flight (``make -j`` through one mount)
        shares a directory fsync between them when it is not made on the loop."""
        return self.alone() and self.last_at - self.piped_at >= self.QUIET

    def lone_call(self) -> bool:
        """``alone``, and the burst being served is one call: the client waits for this
        reply before it sends anything else, so work done on the loop delays nobody (a
        pipelined burst's calls could run side by side in threads)."""
        return self.calls == 1 and self.alone()


activity = ConnectionActivity()


def _marked(reply: bytes | bytearray) -> bytearray:
    """The reply with its record mark filled into the 4 bytes reserved at its start."""
    return set_mark(reply if isinstance(reply, bytearray) else bytearray(reply))


class RpcStreamProtocol(asyncio.BufferedProtocol):
    _refused_logged = 0.0  # when a refused connection was last logged (class-wide, rate-limited)

    def __init__(self, dispatcher: Dispatcher, connections: set["RpcStreamProtocol"],
                 max_record: int, max_inflight: int = 32,
                 limits: ConnectionLimits | None = None) -> None:
        self.dispatcher = dispatcher
        self.connections = connections
        self.reader = RecordReader(max_record)
        # The receive callbacks, one Python frame each instead of two (per receive).
        self.get_buffer = self.reader.get_buffer  # type: ignore[method-assign]
        self.received = self.reader.received
        self._dispatch = dispatcher.dispatch
        self._begin_burst, self._end_burst = dispatcher.begin_burst, dispatcher.end_burst
        self.max_inflight = max_inflight
        self.limits = limits or ConnectionLimits()
        self.inflight = 0
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self._reading_paused = False
        self._writing_paused = False
        self._backlog: list[bytes] = []  # records received but not dispatched yet
        self.tasks: set[asyncio.Future[Any]] = set()  # calls in threads, replies held
        # For the reaper: set on any progress; when it last saw some; unsent bytes then.
        self.progressed = True
        self.quiet_since = 0.0
        self.unsent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("local", 0)
        if len(self.connections) >= self.limits.max_connections:
            now = time.monotonic()
            if now - RpcStreamProtocol._refused_logged > 10:
                RpcStreamProtocol._refused_logged = now
                log.warning("refusing connection from %s:%d: %d connections open (the limit)",
                            *self.peer, len(self.connections))
            transport.abort()  # type: ignore[attr-defined]  # a TCP transport (typed BaseTransport)
            return
        self.transport = transport  # type: ignore[assignment]  # asyncio passes the TCP transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER)  # type: ignore[attr-defined]  # as above
        self.connections.add(self)
        self.dispatcher.held.watch(self.peer, self._held_change)

    def _held_change(self, n: int) -> None:
        """``n`` more (or fewer) of this connection's calls are held (nfsd/rpc/held.py): a
        held call, which may wait up to 50 s, does not count as in flight, so the calls
        behind it are read and served meanwhile (HELD_MAX bounds the held ones)."""
        self.inflight -= n
        if n > 0:  # (not from within the held call's step: from the loop's next turn)
            asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self._drain_backlog()
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        self._backlog = []
        self.dispatcher.held.closed(self.peer)  # its held calls answer nothing

    def close(self, reason: str, abort: bool = True) -> None:
        """Drop the connection (``abort``: at once, discarding unsent replies)."""
        if self.transport is None:
            return
        log.log(logging.INFO if not abort else logging.WARNING,
                "closing connection from %s:%d: %s", *self.peer, reason)
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    # Bytes are received into the record reader's own buffers (asyncio.BufferedProtocol):
    # a large record (a 1 MiB WRITE) straight into a buffer of its own, whose memoryview
    # reaches pwrite(), instead of being copied from a received chunk, then out of a
    # reassembly buffer.
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()  # (bound straight to the reader's in __init__)

    def buffer_updated(self, nbytes: int) -> None:
        self.progressed = True
        try:
            records = self.received(nbytes)
        except RecordTooLarge as exc:
            self.close(str(exc))
            return
        if records or self._backlog:  # a part of a record changes nothing else
            self._serve(records)

    def data_received(self, data: bytes) -> None:
        """Serve the records ``data`` completes (after any backlog), in order, while the
        connection may take work; keep the rest in the backlog and stop reading.

        Replies answered inline leave together: one vectored write for a pipelined burst
        instead of a system call per reply, flushed early past WRITE_BATCH.  What may stop
        the loop is checked only where it can change (a task started, a batch written), and
        everything is inline: this is the per-call path."""
        self.progressed = True
        try:
            records = self.reader.feed(data)
        except RecordTooLarge as exc:
            self.close(str(exc))
            return
        self._serve(records)

    def _serve(self, records: list[Any]) -> None:
        if self._backlog:
            records, self._backlog = self._backlog + records, []
        activity.serving(self, len(records))
        if self.inflight >= self.max_inflight or self._writing_paused:
            self._backlog = records
            records = []
        dispatch, peer, batch = self._dispatch, self.peer, WRITE_BATCH
        begin, end = self._begin_burst, self._end_burst
        ready: list[bytearray] = []
        append = ready.append
        held = None
        size = 0
        pending = iter(records)  # what a break leaves in it waits in the backlog
        begin()
        try:
            for record in pending:
                reply = dispatch(record, peer, 4)
                if not isinstance(reply, bytearray):  # the common case first: an encoded reply
                    if reply is None:
                        continue
                    if not isinstance(reply, bytes):  # an awaitable: the call runs in a thread
                        self.inflight += 1
                        task = asyncio.ensure_future(reply)
                        self.tasks.add(task)
                        task.add_done_callback(self._done)
                        if self.inflight >= self.max_inflight:
                            self._backlog = list(pending)
                            break
                        continue
                    reply = bytearray(reply)
                n = len(reply)
                _fill_mark(reply, 0, _LAST_FRAGMENT | (n - 4))  # in the 4 bytes reserved for it
                append(reply)
                size += n
                if size >= batch:
                    held = end()  # what the replies tell is written first
                    self._write(ready, held)  # may pause writing
                    held = None
                    begin()
                    ready, size = [], 0
                    append = ready.append
                    if self._writing_paused:
                        self._backlog = list(pending)
                        break
        finally:
            held = end()
        if held is not None:
            self._hold(held, ready)
        elif ready:
            self._send_all(ready, size)
        if self._reading_paused or self._backlog or self._writing_paused or self.inflight >= self.max_inflight:
            self._update_reading()  # a connection that may keep reading has nothing to change

    def _send_all(self, ready: "list[bytearray]", size: int) -> None:
        """Send replies (``size`` bytes together) in one write."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if len(ready) == 1:
            transport.write(ready[0])
        elif size <= JOIN_MAX:
            # Small replies leave joined: one bytes object the transport sends as is, where
            # writelines costs uvloop two memoryviews and a buffer export per reply.
            transport.write(b"".join(ready))
        else:
            transport.writelines(ready)

    def _write(self, ready: list[bytearray], held: "asyncio.Future[Any] | None" = None) -> None:
        if held is not None:
            self._hold(held, ready)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.writelines(ready)

    def _hold(self, held: "asyncio.Future[Any]", ready: list[bytearray]) -> None:
        """Send ``ready`` once ``held`` is done (the fsync of the directories the burst
        changed, nfsd/fs/dirsync.py); they count as calls in flight meanwhile."""
        if not ready:
            return
        self.inflight += len(ready)
        self.tasks.add(held)

        def release(done: "asyncio.Future[Any]") -> None:
            self.tasks.discard(done)
            self.inflight -= len(ready)
            self.progressed = True
            replies = ready
            if done.cancelled() or done.exception() is not None:
                log.error("replies to %s:%d answered SYSTEM_ERR: %r", *self.peer,
                          None if done.cancelled() else done.exception())
                replies = [_marked(system_error_for(r, 4)) for r in ready]
            self._send_all(replies, sum(map(len, replies)))  # (joined when small, as inline replies)
            self._drain_backlog()
            self._update_reading()
        held.add_done_callback(release)

    def _drain_backlog(self) -> None:
        if self._backlog and self.transport is not None:
            self._serve([])  # serves the backlog first

    def _done(self, task: "asyncio.Future[Any]") -> None:
        self.tasks.discard(task)
        self.inflight -= 1
        self.progressed = True
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("call from %s:%d failed: %r", *self.peer, exc)
        else:
            reply = task.result()
            if reply is not None:
                self._send(reply)
        self._drain_backlog()
        self._update_reading()

    def _send(self, reply: bytes | bytearray) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_marked(reply))

    def _update_reading(self) -> None:
        if self.transport is None:
            return
        should_pause = self.inflight >= self.max_inflight or self._writing_paused or self._backlog
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
        self.progressed = True
        self._drain_backlog()
        self._update_reading()

    def overdue(self, now: float) -> tuple[str, bool] | None:
        """Why the reaper should close this connection now (and whether abruptly), if it
        should: called every ``sweep_interval``, it times how long nothing has moved."""
        transport = self.transport
        if transport is None:
            return None
        unsent = transport.get_write_buffer_size()
        if self.progressed or unsent < self.unsent:  # bytes arrived, or replies drained
            self.progressed = False
            self.quiet_since, self.unsent = now, unsent
            return None
        self.unsent = unsent
        quiet = now - self.quiet_since
        if unsent:
            if quiet > self.limits.stall_timeout:
                return f"{unsent} bytes of replies unread for {quiet:.0f} s", True
        elif self.inflight or self._backlog:
            pass  # the server is busy, not the peer
        elif self.reader.buffered:
            if quiet > self.limits.stall_timeout:
                return f"partial record of {self.reader.buffered} bytes stalled for {quiet:.0f} s", True
        elif quiet > self.limits.idle_timeout:
            return f"idle for {quiet:.0f} s", False
        return None


async def reap_connections(connections: set[Any], limits: ConnectionLimits) -> None:
    """Close the stream connections of ``connections`` that sit still past ``limits``
    (a background task; the set also holds UDP endpoints, which are left alone)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(limits.sweep_interval)
        trim_buffers()  # large records' buffers a quiet spell left unused
        now = loop.time()
        for conn in list(connections):
            if isinstance(conn, RpcStreamProtocol):
                verdict = conn.overdue(now)
                if verdict is not None:
                    conn.close(*verdict)


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
        self.tasks: set[asyncio.Future[Any]] = set()  # calls in threads, replies held
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio passes the datagram transport
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
        dispatcher = self.dispatcher
        activity.shared()
        dispatcher.begin_burst()
        try:
            # (not held: the client retransmits after 1.1 s; nfsd/rpc/held.py)
            reply = dispatcher.dispatch(data, (addr[0], addr[1]), 0, self.max_transfer, False)
        finally:
            held = dispatcher.end_burst()
        if reply is None:
            return
        if isinstance(reply, (bytes, bytearray)):
            if held is not None:  # a directory change: sent once it is durable
                self.tasks.add(held)
                held.add_done_callback(lambda f: self._release(f, reply, addr))
            else:
                self._send(reply, addr)
        else:
            task = asyncio.ensure_future(reply)
            self.tasks.add(task)
            task.add_done_callback(lambda t: self._done(t, addr))

    def _release(self, held: "asyncio.Future[Any]", reply: bytes | bytearray, addr: tuple[str, int]) -> None:
        self.tasks.discard(held)
        failed = held.cancelled() or held.exception() is not None
        self._send(system_error_for(reply, 0) if failed else reply, addr)

    def _done(self, task: "asyncio.Future[Any]", addr: tuple[str, int]) -> None:
        self.tasks.discard(task)
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


async def listen_rpc(host: str, port: int, stream_factory: Callable[[], asyncio.BaseProtocol],
                     datagram_factory: Callable[[], asyncio.DatagramProtocol],
                     attempts: int = 32) -> tuple[asyncio.base_events.Server, asyncio.DatagramTransport, int]:
    """A TCP server and a UDP endpoint on the same port of ``host``; with ``port`` 0, a port
    free for both.  Returns (server, UDP transport, port)."""
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        # A deep accept queue: a burst of clients (reconnecting after a restart) must not
        # overflow it while the loop is busy, or their SYNs are dropped and retried 1 s later.
        server = await loop.create_server(stream_factory, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)
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
