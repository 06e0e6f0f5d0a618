"""ONC RPC clients over TCP, shared by the tests, the benchmarks and the load generator.

* ``RpcClient``: one connection, one call at a time, blocking (tests, tools, setup steps);
  raw calls (pre-encoded arguments, any xid) for the tests that send what no client would.
* ``RpcConnection``: pipelined on ``asyncio.Protocol``, many calls in flight, each reply
  decoded and handed to a callback (streams would cost a task switch per reply).
* ``RawConnection`` with ``CallEncoder``: the load generator's measured loop, calls sent
  pre-encoded and replies counted, never decoded.

Framing, call headers and reply headers come from the protocol layer; argument and result
bodies from its XDR types.  Here, in the installed package, rather than under tests/ or
scripts/: both import it without putting directories on ``sys.path`` (scripts/ is not a
package), and ``protocol/`` stays pure (no sockets).  It knows no particular program.
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import random
import socket
import struct
from typing import Any, Callable, Self

from protocol.program import Program
from protocol.record import RecordReader, RecordTooLarge, frame, set_mark
from protocol.rpc import Credentials, accept_stat, decode_reply, encode_call, reply_stat
from xdr import XdrError

#: Called with (decoded result, None) or (None, error description).
ReplyCallback = Callable[[Any, "str | None"], None]

_XID = struct.Struct(">I")
MAX_RECORD = 8 << 20  # a 1 MiB READ reply plus headroom


class RpcError(Exception):
    """A call that got no usable result (RPC-level rejection, bad reply, lost connection)."""


def _as_bytes(record: bytes | bytearray) -> bytes:
    """A record as bytes (the reader joins a multi-fragment record into a bytearray)."""
    return record if isinstance(record, bytes) else bytes(record)


class _Default(enum.Enum):
    CRED = 0  # the client's own credentials (``None`` means AUTH_NONE)


_xids = itertools.count(0x1000)


def next_xid() -> int:
    """A fresh xid for a call built by hand (unique among this process's blocking calls)."""
    return next(_xids)


class RpcClient:
    """One TCP connection, one call at a time: send a call, wait for its reply."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 source_port: int | None = None, cred: Credentials | None = None,
                 max_record: int = 64 << 20) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=("127.0.0.1", source_port) if source_port else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cred = cred  # of every call that names none; None: AUTH_NONE
        self.reader = RecordReader(max_record)
        self._pending: list[bytes | bytearray] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_record(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def recv_record(self) -> bytes:
        while not self._pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self._pending.extend(self.reader.feed(data))
        return _as_bytes(self._pending.pop(0))

    def exchange(self, call: bytes) -> bytes:
        """Send one call message, return the next reply message."""
        self.send_record(call)
        return self.recv_record()

    def raw_call(self, prog: int, vers: int, proc: int, args: bytes = b"",
                 cred: Credentials | None | _Default = _Default.CRED,
                 xid: int | None = None) -> tuple[int, Any, bytes]:
        """Send a call with pre-encoded args; return (xid, reply_body, results bytes)."""
        xid = next(_xids) if xid is None else xid
        buf = encode_call(xid, prog, vers, proc, self.cred if cred is _Default.CRED else cred)
        buf += args
        reply = self.exchange(bytes(buf))
        rxid, body, off = decode_reply(reply)
        if rxid != xid:
            raise RpcError(f"reply to xid {rxid:#x}, not {xid:#x}")
        return rxid, body, reply[off:]

    def call(self, program: Program, proc: int, args: Any,
             cred: Credentials | None | _Default = _Default.CRED) -> Any:
        """A typed call: encode args with the procedure's type, decode the result."""
        p = program.procedures[proc]
        buf = bytearray()
        p.args.pack(buf, args)
        _, body, results = self.raw_call(program.number, program.version, proc, bytes(buf), cred)
        stat, accepted = body
        if stat != reply_stat.MSG_ACCEPTED:
            raise RpcError(f"{program.name}.{p.name}: call denied: {body}")
        if accepted.reply_data[0] != accept_stat.SUCCESS:
            raise RpcError(f"{program.name}.{p.name}: not SUCCESS: {accepted.reply_data}")
        value, end = p.res.unpack(results, 0)
        if end != len(results):
            raise RpcError(f"{program.name}.{p.name}: {len(results) - end} bytes after the result")
        return value


class UdpRpcClient(RpcClient):
    """The same over UDP: one datagram per call, resent on timeout, replies matched by xid."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 2.0,
                 cred: Credentials | None = None, tries: int = 3) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.cred, self.tries = cred, tries

    def exchange(self, call: bytes) -> bytes:
        """Send, wait for the reply with the same xid (resending on timeout)."""
        xid = call[:4]
        for _ in range(self.tries):
            self.sock.send(call)
            try:
                while True:
                    reply = self.sock.recv(1 << 17)
                    if reply[:4] == xid:
                        return reply
            except socket.timeout:
                continue
        raise TimeoutError("no reply")


class _CallConnection(asyncio.Protocol):
    """What both asynchronous connections share: the transport, the calls in flight by xid,
    and failing them all once when the connection ends (``_failed`` tells one call)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._pending: dict[int, Any] = {}
        self._xid = random.getrandbits(32)
        self.closed = False
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self.error or f"connection lost{f': {exc}' if exc else ''}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, reason: str) -> None:
        """Fail every outstanding call once; later sends fail at once."""
        if not self.closed:
            self.closed, self.error = True, reason
            if self.transport is not None:
                self.transport.abort()
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            self._failed(entry, reason)

    def _failed(self, entry: Any, reason: str) -> None:
        raise NotImplementedError


class RpcConnection(_CallConnection):
    """One TCP connection speaking one RPC program, many calls in flight; calls are matched
    to replies by xid."""

    def __init__(self, program: Program, cred: Credentials) -> None:
        self.program = program
        # The header differs between calls only in its xid: encode it once per procedure.
        self._templates = {n: bytes(encode_call(0, program.number, program.version, n, cred))
                           for n in program.procedures}
        self._procs = program.procedures
        super().__init__()
        self._reader = RecordReader(MAX_RECORD)
        self._pending: dict[int, tuple[Any, ReplyCallback]] = {}

    # -- asyncio.Protocol -------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        try:
            records = self._reader.feed(data)
        except RecordTooLarge as exc:
            self._fail(f"reply too large: {exc}")
            return
        for record in records:
            rec = _as_bytes(record)
            try:
                xid, body, off = decode_reply(rec)
            except XdrError as exc:
                self._fail(f"undecodable reply: {exc}")
                return
            entry = self._pending.pop(xid, None)
            if entry is None:
                continue  # not ours (or already failed): a real client drops it too
            res_type, callback = entry
            if body[0] != reply_stat.MSG_ACCEPTED:
                callback(None, f"MSG_DENIED {body[1][0]}")
                continue
            stat = body[1].reply_data[0]
            if stat != accept_stat.SUCCESS:
                callback(None, accept_stat.values(stat).name)
                continue
            try:
                result, _ = res_type.unpack(rec, off)
            except XdrError as exc:
                callback(None, f"bad result: {exc}")
                continue
            callback(result, None)

    # -- calls ------------------------------------------------------------------------------
    def send(self, proc: int, args: Any, callback: ReplyCallback) -> None:
        """Send a call without waiting: the callback gets the decoded result."""
        if self.closed:
            callback(None, self.error or "connection closed")
            return
        xid = self._xid = (self._xid + 1) & 0xFFFFFFFF
        procedure = self._procs[proc]
        buf = bytearray(4)  # room for the record mark
        buf += self._templates[proc]
        _XID.pack_into(buf, 4, xid)
        procedure.args.pack(buf, args)
        self._pending[xid] = (procedure.res, callback)
        self.transport.write(set_mark(buf))  # type: ignore[union-attr]

    async def call(self, proc: int, args: Any) -> Any:
        """One call, awaited (for setup, not for the measured loop)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any, error: str | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(RpcError(error))

        self.send(proc, args, done)
        return await asyncio.wait_for(future, 30)

    def _failed(self, entry: tuple[Any, ReplyCallback], reason: str) -> None:
        entry[1](None, reason)


async def connect(host: str, port: int, program: Program, cred: Credentials) -> RpcConnection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: RpcConnection(program, cred), host, port)
    return conn


#: Called with (nfsstat3 or -1 on an RPC-level failure, reply size in bytes, the reply's last
#: 8 bytes, an error description or None).
RawCallback = Callable[[int, int, bytes, "str | None"], None]
_HEAD_KEEP = 64   # bytes of each reply kept: RPC header, verifier, accept_stat, nfsstat
_TAIL_KEEP = 8    # ...and its last bytes (a listing's end-of-list flag and eof)
_MARK_LEN = 4


class RawConnection(_CallConnection):
    """One TCP connection for the measured loop: calls go out pre-encoded (the caller hands
    complete records, the xid patched in here), replies are never decoded.  Record marks
    are followed as the bytes stream in; of each reply only its first bytes (for the xid,
    accept_stat and nfsstat) and its last 8 bytes are kept, so a 1 MiB READ reply or a
    150 KiB listing costs the generator no copy and no parsing."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, RawCallback] = {}
        self._left = 0            # bytes left in the current fragment
        self._last = False        # whether the current fragment ends its record
        self._mark = bytearray()  # a record mark split across reads
        self._head = bytearray()
        self._tail = b""
        self._size = 0

    def data_received(self, data: bytes) -> None:
        off, n = 0, len(data)
        while off < n:
            if self._left == 0:
                take = min(_MARK_LEN - len(self._mark), n - off)
                self._mark += data[off:off + take]
                off += take
                if len(self._mark) < _MARK_LEN:
                    return
                mark = _XID.unpack(self._mark)[0]
                self._mark.clear()
                self._last, self._left = bool(mark & 0x80000000), mark & 0x7FFFFFFF
                if self._left == 0 and self._last:
                    self._record()
                continue
            k = min(self._left, n - off)
            if len(self._head) < _HEAD_KEEP:
                self._head += data[off:off + min(k, _HEAD_KEEP - len(self._head))]
            self._tail = data[off + k - _TAIL_KEEP:off + k] if k >= _TAIL_KEEP else (self._tail + data[off:off + k])[-_TAIL_KEEP:]
            self._size += k
            self._left -= k
            off += k
            if self._left == 0 and self._last:
                self._record()

    def _record(self) -> None:
        head, size, tail = self._head, self._size, self._tail
        self._head, self._size, self._tail = bytearray(), 0, b""
        if len(head) < 24:
            self._fail(f"reply of {size} bytes is too short")
            return
        xid, mtype, rstat, _flavor, verf_len = struct.unpack_from(">IIIII", head)
        callback = self._pending.pop(xid, None)
        if callback is None:
            return  # not ours: a real client drops it too
        if mtype != 1 or rstat != 0:
            callback(-1, size, tail, "MSG_DENIED" if rstat == 1 else "not a reply")
            return
        at = 20 + ((verf_len + 3) & ~3)
        if at + 4 > len(head):
            callback(-1, size, tail, "reply too short for its accept_stat")
            return
        accept, = struct.unpack_from(">I", head, at)
        # A procedure with a void result (NULL) has no status: the reply ends at accept_stat.
        status = struct.unpack_from(">I", head, at + 4)[0] if at + 8 <= len(head) else 0
        if accept != 0:
            callback(-1, size, tail, accept_stat.values(accept).name)
            return
        callback(status, size, tail, None)

    def send(self, template: bytes, callback: RawCallback, payload: bytes | None = None) -> None:
        """Send a call: ``template`` is the record mark, the call header with any xid and
        the arguments, copied here (a transport may hold on to what it is given) with this
        call's xid; ``payload``, when given, follows unchanged (a WRITE's data, which the
        record mark already counts)."""
        if self.closed:
            callback(-1, 0, b"", self.error or "connection closed")
            return
        xid = self._xid = (self._xid + 1) & 0xFFFFFFFF
        record = bytearray(template)
        _XID.pack_into(record, _MARK_LEN, xid)
        self._pending[xid] = callback
        if payload is None:
            self.transport.write(record)  # type: ignore[union-attr]
        else:
            self.transport.writelines((record, payload))  # type: ignore[union-attr]

    def _failed(self, entry: RawCallback, reason: str) -> None:
        entry(-1, 0, b"", reason)


async def connect_raw(host: str, port: int) -> RawConnection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(RawConnection, host, port)
    return conn


class CallEncoder:
    """Complete call records (mark + header + arguments) for one program and credential,
    built with the protocol layer's encoders; the xid is patched in at send time."""

    def __init__(self, program: Program, cred: Credentials) -> None:
        self._templates = {n: bytes(encode_call(0, program.number, program.version, n, cred))
                           for n in program.procedures}
        self._procs = program.procedures

    def record(self, proc: int, args: Any, extra: int = 0) -> bytes:
        """The record for ``proc(args)``; ``extra`` bytes sent after it (a payload) are
        counted in its record mark."""
        buf = bytearray(_MARK_LEN)
        buf += self._templates[proc]
        self._procs[proc].args.pack(buf, args)
        struct.pack_into(">I", buf, 0, 0x80000000 | (len(buf) - _MARK_LEN + extra))
        return bytes(buf)
