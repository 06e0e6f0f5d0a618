"""Pipelined ONC RPC client for the load generator, on ``asyncio.Protocol``.

Streams would cost a task switch per reply; a protocol delivers each reply straight to a
callback, so one connection can keep many calls in flight with little client CPU.  Framing,
call headers and reply headers come from the project's protocol layer; argument and result
bodies from its XDR types.
"""
from __future__ import annotations

import asyncio
import random
import struct
from typing import Any, Callable

from protocol.program import Program
from protocol.record import RecordReader, RecordTooLarge, set_mark
from protocol.rpc import Credentials, accept_stat, decode_reply, encode_call, reply_stat
from xdr import XdrError

#: Called with (decoded result, None) or (None, error description).
ReplyCallback = Callable[[Any, "str | None"], None]

_XID = struct.Struct(">I")
MAX_RECORD = 8 << 20  # a 1 MiB READ reply plus headroom


class RpcError(Exception):
    """A call that got no usable result (RPC-level rejection, bad reply, lost connection)."""


class RpcConnection(asyncio.Protocol):
    """One TCP connection speaking one RPC program; calls are matched to replies by xid."""

    def __init__(self, program: Program, cred: Credentials) -> None:
        self.program = program
        # The header differs between calls only in its xid: encode it once per procedure.
        self._templates = {n: bytes(encode_call(0, program.number, program.version, n, cred))
                           for n in program.procedures}
        self._procs = program.procedures
        self._reader = RecordReader(MAX_RECORD)
        self._pending: dict[int, tuple[Any, ReplyCallback]] = {}
        self._xid = random.getrandbits(32)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: str | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            records = self._reader.feed(data)
        except RecordTooLarge as exc:
            self._fail(f"reply too large: {exc}")
            return
        for rec in records:
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self.error or f"connection lost{f': {exc}' if exc else ''}")

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
        for _, callback in pending.values():
            callback(None, reason)


async def connect(host: str, port: int, program: Program, cred: Credentials) -> RpcConnection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: RpcConnection(program, cred), host, port)
    return conn
