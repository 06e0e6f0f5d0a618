"""NFS and MOUNT over UDP: same port as TCP, same dispatcher, replies that fit a datagram
(READ and READDIR bounded by the 32 KiB FSINFO advertises over UDP), retransmissions of
non-idempotent calls answered from the duplicate request cache."""
from __future__ import annotations

import asyncio
import hashlib
import random
import socket
from typing import Any

import pytest

from nfsd.rpc.client import next_xid

from protocol import mount3, nfs3
from protocol.rpc import accept_stat, decode_reply, encode_call
from tests.nfs3_helpers import (FSINFO, LOOKUP, MOUNT, NFS, OK, READ, READDIRPLUS, REMOVE, WRITE,
                                diropargs, raw_call_bytes)
from tests.rpc_client import ROOT, UdpRpcClient, fh

UDP_MAX = 32 << 10


@pytest.fixture
def udp(server) -> Any:
    with UdpRpcClient(server.port) as client:
        yield client


def test_null_on_the_tcp_port_number(server, udp) -> None:
    for prog in (NFS, MOUNT):
        _, body, results = udp.raw_call(prog, 3, 0)
        assert body[0] == 0 and body[1].reply_data == (0, None)
        assert results == b""


def test_mount_export_and_fsinfo_over_udp(server, udp, rpc) -> None:
    exports = udp.call(mount3.MOUNT3, 5, None)
    assert [e.ex_dir for e in exports] == [server.export_b]
    root = udp.mount(server.export_b)
    status, info = udp.nfs(FSINFO, nfs3.FSINFO3args.cls(fh(root)))
    assert status == OK
    assert (info.rtmax, info.rtpref, info.wtmax, info.wtpref) == (UDP_MAX,) * 4
    assert info.dtpref <= UDP_MAX
    # TCP keeps its 1 MiB.
    status, info = rpc.nfs(FSINFO, nfs3.FSINFO3args.cls(fh(root)))
    assert (info.rtmax, info.wtmax) == (1 << 20, 1 << 20)


def test_read_is_clamped_to_fit_a_datagram(server, udp) -> None:
    data = random.Random("big.bin").randbytes(200_000)  # fixed: sniffed the same every run
    (server.export / "big.bin").write_bytes(data)
    root = udp.mount(server.export_b)
    status, res = udp.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"big.bin")))
    assert status == OK
    handle = res.object.data
    got = bytearray()
    while True:
        # Ask for 1 MiB: a UDP reply carries at most 32 KiB.
        status, res = udp.nfs(READ, nfs3.READ3args.cls(fh(handle), len(got), 1 << 20))
        assert status == OK
        assert 0 < res.count <= UDP_MAX
        got += res.data
        if res.eof:
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_write_of_32k_over_udp(server, udp) -> None:
    (server.export / "w.bin").write_bytes(b"")
    (server.export / "w.bin").chmod(0o666)  # writable whatever identity root is squashed to
    root = udp.mount(server.export_b)
    status, res = udp.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"w.bin")))
    handle = res.object.data
    data = random.Random("w.bin").randbytes(UDP_MAX)
    status, res = udp.nfs(WRITE, nfs3.WRITE3args.cls(fh(handle), 0, len(data), nfs3.stable_how.FILE_SYNC, data))
    assert status == OK and res.count == len(data)
    assert (server.export / "w.bin").read_bytes() == data


def test_readdirplus_reply_fits_a_datagram(server, udp) -> None:
    d = server.export / "many"
    d.mkdir()
    for i in range(1500):
        (d / f"file-with-a-longish-name-{i:05d}").write_bytes(b"")
    root = udp.mount(server.export_b)
    status, res = udp.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"many")))
    dh = res.object.data
    names: list[bytes] = []
    cookie, verf = 0, b"\0" * 8
    while True:
        args = nfs3.READDIRPLUS3args.cls(fh(dh), cookie, verf, 1 << 20, 1 << 20)
        buf = bytearray()
        nfs3.READDIRPLUS3args.pack(buf, args)
        reply = udp.exchange(bytes(encode_call(next_xid(), NFS, 3, READDIRPLUS, ROOT) + buf))
        assert len(reply) <= UDP_MAX + 512, len(reply)
        _, body, off = decode_reply(reply)
        results = reply[off:]
        (status, ok), _ = nfs3.READDIRPLUS3res.unpack(results, 0)
        assert status == OK
        names += [e.name for e in ok.reply.entries]
        if ok.reply.eof:
            break
        cookie, verf = ok.reply.entries[-1].cookie, ok.cookieverf
    assert len([n for n in names if n.startswith(b"file-")]) == 1500


def test_retransmitted_remove_is_answered_from_the_cache(server, udp) -> None:
    (server.export / "victim").write_bytes(b"x")
    server.export.chmod(0o777)  # removable whatever identity root is squashed to
    root = udp.mount(server.export_b)
    args = bytearray()
    nfs3.REMOVE3args.pack(args, nfs3.REMOVE3args.cls(diropargs(root, b"victim")))
    xid = next_xid()
    first = udp.raw_call(NFS, 3, REMOVE, bytes(args), xid=xid)
    again = udp.raw_call(NFS, 3, REMOVE, bytes(args), xid=xid)  # a retransmission
    assert first[2] == again[2]
    (status, _), _ = nfs3.REMOVE3res.unpack(first[2], 0)
    assert status == OK and not (server.export / "victim").exists()
    # A new call (new xid) really runs: the file is gone.
    (status, _), _ = nfs3.REMOVE3res.unpack(udp.raw_call(NFS, 3, REMOVE, bytes(args))[2], 0)
    assert status == nfs3.nfsstat3.NFS3ERR_NOENT


def test_garbage_datagrams_do_not_hurt(server, udp) -> None:
    for junk in (b"", b"\x00", random.Random(3).randbytes(3), random.Random(200).randbytes(200), raw_call_bytes(7, NFS, 3, READ, b"\x01")):
        udp.sock.send(junk)
    _, body, _ = udp.raw_call(NFS, 3, 0)
    assert body[0] == 0
    _, body, _ = udp.raw_call(NFS, 3, 99)
    assert body[1].reply_data[0] == accept_stat.PROC_UNAVAIL


def test_a_reply_too_large_for_a_datagram_becomes_system_err() -> None:
    from nfsd.rpc.server import RpcDatagramProtocol

    class Dispatcher:
        def dispatch(self, record: bytes, client: Any, reserve: int, max_transfer: int, hold: bool) -> bytes:
            return record[:4] + bytes(70_000)

        def begin_burst(self) -> None:
            pass

        def end_burst(self) -> None:
            return None  # nothing to wait for

    class Transport:
        sent: list[bytes] = []

        def get_extra_info(self, name: str) -> None:
            return None

        def is_closing(self) -> bool:
            return False

        def sendto(self, data: bytes, addr: Any) -> None:
            self.sent.append(bytes(data))

    proto = RpcDatagramProtocol(Dispatcher())  # type: ignore[arg-type]
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.datagram_received(b"\x12\x34\x56\x78" + bytes(40), ("127.0.0.1", 9))
    xid, body, _ = decode_reply(transport.sent[0])
    assert xid == 0x12345678
    assert body[1].reply_data[0] == accept_stat.SYSTEM_ERR


def test_port_zero_picks_a_port_free_for_tcp_and_udp() -> None:
    from nfsd.rpc.server import listen_rpc

    async def main() -> None:
        # Occupy the UDP side of many ports: listen_rpc must skip them.
        for _ in range(3):
            server, udp, port = await listen_rpc("127.0.0.1", 0, asyncio.Protocol, asyncio.DatagramProtocol)
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with pytest.raises(OSError):
                probe.bind(("127.0.0.1", port))
            probe.close()
            server.close()
            udp.close()

    asyncio.run(main())
