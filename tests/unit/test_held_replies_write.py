"""A burst's replies held for its directory fsync (nfsd/rpc/server.py ``_hold``) leave as the
inline ones do: small ones joined into one write, not a vectored ``writelines`` (which costs
uvloop two memoryviews and a buffer export per reply); large ones still vectored."""
from __future__ import annotations

import asyncio
import os
from typing import Any

from nfsd.nfs3.attrs import fattr
from nfsd.rpc.dispatch import Dispatcher
from nfsd.rpc.server import JOIN_MAX, RpcStreamProtocol
from protocol import nfs3
from protocol.nfs3 import nfsstat3
from protocol.program import Program
from protocol.record import LAST_FRAGMENT
from protocol.rpc import decode_reply, encode_call

GETATTR = nfs3.NFS3.procedures[1]
PROGRAM = Program.of(nfs3.NFS3.number, 3, "NFS", [GETATTR])


class Transport:
    """What the protocol writes, call by call."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []

    def write(self, data: bytes | bytearray) -> None:
        self.writes.append(("write", bytes(data)))

    def writelines(self, items: list[bytearray]) -> None:
        self.writes.append(("writelines", [bytes(i) for i in items]))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 999) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _record(xid: int) -> bytes:
    buf = encode_call(xid, PROGRAM.number, 3, GETATTR.number)
    GETATTR.args.pack(buf, nfs3.GETATTR3args.cls(nfs3.nfs_fh3.cls(bytes(16))))
    return (LAST_FRAGMENT | len(buf)).to_bytes(4, "big") + bytes(buf)


def _xids(stream: bytes) -> list[int]:
    """The xids of the replies in a stream of records (each one fragment)."""
    xids = []
    while stream:
        n = int.from_bytes(stream[:4], "big") & ~LAST_FRAGMENT
        xid, _, _ = decode_reply(stream[4:4 + n])
        xids.append(xid)
        stream = stream[4 + n:]
    return xids


def _served(calls: int) -> list[tuple[str, Any]]:
    """The writes of a burst of ``calls`` GETATTRs whose replies wait for a future."""
    async def scenario() -> list[tuple[str, Any]]:
        loop = asyncio.get_running_loop()
        d = Dispatcher()
        d.register(PROGRAM, None, {}, {1: lambda ctx, a: (nfsstat3.NFS3_OK, nfs3.GETATTR3resok.cls(fattr(os.stat("/"), 1)))})
        durable: asyncio.Future[None] = loop.create_future()
        d.bursts.append((lambda: None, lambda: durable))  # as DirSync's: the replies wait
        proto = RpcStreamProtocol(d, set(), 1 << 20)
        transport = Transport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.data_received(b"".join(_record(0x100 + i) for i in range(calls)))
        assert transport.writes == []  # held
        durable.set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)
        return transport.writes
    return asyncio.run(scenario())


def test_small_held_replies_leave_joined_in_one_write() -> None:
    writes = _served(3)
    assert [kind for kind, _ in writes] == ["write"]  # (a writelines of three before)
    assert _xids(writes[0][1]) == [0x100, 0x101, 0x102]


def test_held_replies_past_join_max_leave_vectored() -> None:
    calls = JOIN_MAX // 100 + 1  # a GETATTR reply is over 100 bytes
    writes = _served(calls)
    assert [kind for kind, _ in writes] == ["writelines"]
    assert _xids(b"".join(writes[0][1])) == [0x100 + i for i in range(calls)]
