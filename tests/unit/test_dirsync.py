"""Group commit of directory fsyncs (nfsd/fs/dirsync.py)."""
from __future__ import annotations

import threading
import time

from nfsd.fs.dirsync import DirSync


def test_concurrent_changes_share_fsyncs_and_each_waits_for_one_begun_after_it() -> None:
    sync = DirSync()
    made: list[int] = []       # changes made, in order
    began: list[int] = []      # how many changes had been made when each fsync began
    covered: dict[int, int] = {}
    lock = threading.Lock()

    def fsync() -> None:
        with lock:
            began.append(len(made))
        time.sleep(0.05)

    def change(i: int) -> None:
        with lock:
            made.append(i)
            mine = len(made)
        sync.sync(7, fsync)
        with lock:  # some fsync that began after this change has completed
            covered[i] = mine
            assert any(b >= mine for b in began[:len(began)]), (mine, began)

    threads = [threading.Thread(target=change, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(covered) == 16
    assert 1 <= len(began) < 16  # shared
    assert sync._dirs == {}      # nothing kept once nobody waits


def test_a_failed_fsync_is_retried_by_the_next_caller() -> None:
    sync = DirSync()
    calls = []

    def failing() -> None:
        calls.append("fail")
        raise OSError("EIO")

    try:
        sync.sync(1, failing)
    except OSError:
        pass
    sync.sync(1, lambda: calls.append("ok"))
    assert calls == ["fail", "ok"]


# -- through a server in this process: replies held until the burst's directory fsync -------

import asyncio  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import pytest  # noqa: E402

from protocol import nfs3  # noqa: E402
from protocol.rpc import accept_stat, encode_call, reply_stat  # noqa: E402
from tests.nfs3_helpers import NFS, NO_SATTR, OK, diropargs, pack, reply_of  # noqa: E402
from tests.rpc_client import ROOT, RpcClient, fh  # noqa: E402


class GatedFsync:
    """os.fsync of the export's directories, each one waiting for the test to open its
    gate; records which fsyncs began and ended."""

    def __init__(self, export: Path) -> None:
        self.export = str(export)
        self.real = os.fsync
        self.lock = threading.Lock()
        self.began = 0
        self.ended = 0
        self.gates: list[threading.Event] = [threading.Event() for _ in range(64)]
        self.fail_next = False

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not (os.path.isdir(path) and path.startswith(self.export)):
            return self.real(fd)
        with self.lock:
            mine = self.began
            self.began += 1
        assert self.gates[mine].wait(20), "gate never opened"
        self.real(fd)
        with self.lock:
            self.ended += 1
            if self.fail_next:
                self.fail_next = False
                raise OSError(5, "injected EIO")
        return None

    def wait_began(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while self.began < n:
            assert time.monotonic() < deadline, (self.began, n)
            time.sleep(0.01)


@pytest.fixture
def gated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, GatedFsync, Path]]:
    from nfsd.app import NfsServer, ServerConfig
    export = tmp_path / "export"
    (export / "d").mkdir(parents=True)
    gate = GatedFsync(export)
    monkeypatch.setattr(os, "fsync", gate)
    config = ServerConfig([f"{export} *(rw,no_root_squash,insecure)"], bind="127.0.0.1", port=0, state_dir=str(tmp_path / "state"),
                          watch=False, register=False, locks=False)
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = NfsServer(config)
        started["port"] = loop.run_until_complete(server.start())[1]
        started["server"] = server
        loop.run_forever()
        loop.run_until_complete(server.stop())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while "port" not in started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield started["port"], gate, export
    finally:
        for g in gate.gates:
            g.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)


def _create_record(xid: int, d: bytes, name: bytes) -> bytes:
    args = nfs3.CREATE3args.cls(diropargs(d, name), (nfs3.createmode3.GUARDED, NO_SATTR))
    return bytes(encode_call(xid, NFS, 3, 8, ROOT)) + pack(nfs3.CREATE3args, args)


def _replies(rpc: RpcClient, n: int) -> dict[int, tuple[Any, bytes]]:
    got = {}
    for _ in range(n):
        xid, body, rest = reply_of(rpc.recv_record())
        got[xid] = (body, rest)
    return got


def _nothing_arrives(rpc: RpcClient, seconds: float = 0.3) -> bool:
    rpc.sock.settimeout(seconds)
    try:
        rpc.recv_record()
    except (socket.timeout, TimeoutError):
        return True
    finally:
        rpc.sock.settimeout(10)
    return False


def _send_all(rpc: RpcClient, records: list[bytes]) -> None:
    from protocol.record import frame
    rpc.sock.sendall(b"".join(frame(r) for r in records))


def test_replies_wait_for_the_fsync_and_a_burst_shares_one(gated: Any) -> None:
    """CREATEs answered inline: no reply leaves before an fsync of its directory that began
    after it has completed, the loop serves other calls meanwhile, and every create made
    while one fsync runs shares the next one (two fsyncs for seventeen creates)."""
    port, gate, export = gated
    with RpcClient(port) as rpc, RpcClient(port) as other:
        root = rpc.mount(str(export).encode())
        d = rpc.nfs(3, nfs3.LOOKUP3args.cls(diropargs(root, b"d")))[1].object.data
        _send_all(rpc, [_create_record(0xC000, d, b"first")])
        gate.wait_began(1)                    # its fsync runs (held at the gate)
        assert (export / "d" / "first").exists()  # made inline, already
        assert _nothing_arrives(rpc)          # but not answered
        _send_all(rpc, [_create_record(0xC001 + i, d, b"f%d" % i) for i in range(16)])
        time.sleep(0.3)
        assert all((export / "d" / ("f%d" % i)).exists() for i in range(16))
        # the loop is not blocked: another connection is served
        assert other.nfs(1, nfs3.GETATTR3args.cls(fh(d)))[0] == OK
        gate.gates[0].set()                   # the first fsync completes: only its reply
        first = _replies(rpc, 1)
        assert list(first) == [0xC000]
        gate.wait_began(2)                    # one fsync for the sixteen others
        assert _nothing_arrives(rpc)
        assert gate.began == 2 and gate.ended == 1
        gate.gates[1].set()
        rest = _replies(rpc, 16)
        assert sorted(rest) == [0xC001 + i for i in range(16)]
        for body, res in rest.values():
            assert body[0] == reply_stat.MSG_ACCEPTED
            assert nfs3.CREATE3res.unpack(res, 0)[0][0] == OK
        assert gate.began == 2 and gate.ended == 2


def test_a_retransmission_of_a_held_reply_is_in_progress_then_replayed(gated: Any) -> None:
    port, gate, export = gated
    with RpcClient(port) as rpc:
        root = rpc.mount(str(export).encode())
        record = _create_record(0xD000, root, b"once")
        _send_all(rpc, [record])
        gate.wait_began(1)
        _send_all(rpc, [record])              # retransmitted while the reply is held
        assert _nothing_arrives(rpc)
        gate.gates[0].set()
        got = _replies(rpc, 1)
        assert nfs3.CREATE3res.unpack(got[0xD000][1], 0)[0][0] == OK
        assert _nothing_arrives(rpc)          # one reply for the two
        for g in gate.gates:
            g.set()
        _send_all(rpc, [record])              # and now the cached reply, not EXIST
        again = _replies(rpc, 1)
        assert again[0xD000][1] == got[0xD000][1]


def test_a_failed_fsync_answers_system_err(gated: Any) -> None:
    port, gate, export = gated
    with RpcClient(port) as rpc:
        root = rpc.mount(str(export).encode())
        gate.fail_next = True
        for g in gate.gates:
            g.set()
        _send_all(rpc, [_create_record(0xE000, root, b"lost")])
        body, _ = _replies(rpc, 1)[0xE000]
        assert body[0] == reply_stat.MSG_ACCEPTED
        assert body[1].reply_data[0] == accept_stat.SYSTEM_ERR


def test_over_udp_too(gated: Any) -> None:
    port, gate, export = gated
    with RpcClient(port) as rpc:
        root = rpc.mount(str(export).encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.3)
        udp.sendto(_create_record(0xF000, root, b"by-udp"), ("127.0.0.1", port))
        gate.wait_began(1)
        with pytest.raises((socket.timeout, TimeoutError)):
            udp.recv(65536)
        assert (export / "by-udp").exists()
        gate.gates[0].set()
        udp.settimeout(10)
        xid, body, res = reply_of(udp.recv(65536))
        assert xid == 0xF000 and nfs3.CREATE3res.unpack(res, 0)[0][0] == OK
