"""Calls from the lock server to a client: GRANTED callbacks, ``*_RES`` answers to
``*_MSG`` calls, SM_NOTIFY after a restart.

The client's port comes from its portmapper (portmap v2 GETPORT on port 111 of the address
the client called us from), then one UDP datagram per try.  Everything is asyncio and
bounded: a few tries with a timeout each, so a client that never answers costs a few
seconds and nothing more.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any

from protocol import portmap
from protocol.program import Program
from protocol.rpc import decode_reply, encode_call

log = logging.getLogger("pysfsd.nlm")

TIMEOUT = 2.0
TRIES = 3
_xids = itertools.count(int.from_bytes(os.urandom(3), "big") << 8)


class CallbackError(Exception):
    """The client did not answer, or refused the call."""


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, xid: int) -> None:
        self.xid = xid
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 4 and int.from_bytes(data[:4], "big") == self.xid and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(CallbackError(str(exc)))


async def call(host: str, port: int, program: Program, proc: int, args: Any,
               timeout: float = TIMEOUT, tries: int = TRIES, want_reply: bool = True) -> Any:
    """One RPC over UDP; the decoded result (None for a one-way ``*_RES``/``_MSG`` message,
    ``want_reply=False``, which is sent once per try without waiting for an answer)."""
    p = program.procedures[proc]
    xid = next(_xids) & 0xFFFFFFFF
    buf = encode_call(xid, program.number, program.version, proc)
    p.args.pack(buf, args)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _Reply(xid), remote_addr=(host, port))
    try:
        for _ in range(tries):
            transport.sendto(bytes(buf))
            if not want_reply:
                return None
            try:
                data = await asyncio.wait_for(asyncio.shield(proto.done), timeout)
            except TimeoutError:
                continue
            _, body, off = decode_reply(data)
            stat, detail = body
            if stat != 0 or detail.reply_data[0] != 0:
                raise CallbackError(f"{program.name}.{p.name} refused by {host}:{port}")
            value, _ = p.res.unpack(data, off)
            return value
        raise CallbackError(f"{program.name}.{p.name}: no answer from {host}:{port}")
    finally:
        transport.close()


async def getport(host: str, prog: int, vers: int, pmap_port: int = portmap.PMAP_PORT) -> int:
    """The client's UDP port for (prog, vers), from its portmapper; CallbackError if none."""
    port = await call(host, pmap_port, portmap.PORTMAP2, 3,
                      portmap.mapping(prog, vers, portmap.IPPROTO_UDP, 0))
    if not port:
        raise CallbackError(f"{host} has no program {prog} v{vers} registered")
    return int(port)
