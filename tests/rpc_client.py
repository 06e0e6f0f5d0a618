"""A small synchronous ONC RPC client over TCP for tests: sends raw or typed calls."""
from __future__ import annotations

import itertools
import socket
import struct
from typing import Any

from protocol import mount3, nfs3
from protocol.record import RecordReader, frame
from protocol.rpc import AUTH_SYS, Credentials, decode_reply, encode_call

_xids = itertools.count(0x1000)
ROOT = Credentials(AUTH_SYS, 0, 0, (), b"pytest")


class RpcClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 source_port: int | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=("127.0.0.1", source_port) if source_port else None)
        self.reader = RecordReader(64 << 20)
        self._pending: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RpcClient":
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
        return self._pending.pop(0)

    def raw_call(self, prog: int, vers: int, proc: int, args: bytes = b"",
                 cred: Credentials | None = ROOT, xid: int | None = None) -> tuple[int, Any, bytes]:
        """Send a call with pre-encoded args; return (xid, reply_body, results bytes)."""
        xid = next(_xids) if xid is None else xid
        buf = encode_call(xid, prog, vers, proc, cred)
        buf += args
        self.send_record(bytes(buf))
        reply = self.recv_record()
        rxid, body, off = decode_reply(reply)
        assert rxid == xid, (rxid, xid)
        return rxid, body, reply[off:]

    def call(self, program: Any, proc: int, args: Any, cred: Credentials | None = ROOT) -> Any:
        """A typed call: encode args with the procedure's type, decode the result."""
        p = program.procedures[proc]
        buf = bytearray()
        p.args.pack(buf, args)
        _, body, results = self.raw_call(program.number, program.version, proc, bytes(buf), cred)
        stat, accepted = body
        assert stat == 0, f"call denied: {body}"
        assert accepted.reply_data[0] == 0, f"not SUCCESS: {accepted.reply_data}"
        value, end = p.res.unpack(results, 0)
        assert end == len(results)
        return value

    # conveniences -----------------------------------------------------------------
    def mount(self, path: bytes) -> bytes:
        status, ok = self.call(mount3.MOUNT3, 1, path)
        assert status == 0, f"MNT {path!r}: {status}"
        return ok.fhandle

    def nfs(self, proc: int, args: Any, cred: Credentials | None = ROOT) -> Any:
        return self.call(nfs3.NFS3, proc, args, cred)


def fh(data: bytes) -> Any:
    return nfs3.nfs_fh3.cls(data)


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)
