"""Locks from the Linux kernel client, in the qemu VM, mounted with no ``nolock``.

The guest (scripts/vm/workloads/locks.sh) runs Debian's rpcbind and rpc.statd and mounts
with locks on; its lockd finds the server's NLM through the portmapper at 10.0.2.2:111
(the host's 127.0.0.1:111: pysfsd's ``--portmap``).  flock, fcntl byte ranges, a blocked
lock granted on release, concurrent sqlite3 writers, and locks of a process on the
host excluding the client and the reverse (host actions below; a third sqlite3 writer runs on the host, on the real file).  ``plain``: the server on
port 2049 and Debian's ``mount.nfs`` with no options at all, which tries NFSv4 first and
falls back to v3 by itself.  Skips when qemu, the Debian kernel or a free port 111 (and
2049 for ``plain``) is missing, unless PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.server.test_discovery import discovery_status, port_111_busy
from tests.vm_support import WORKLOADS, tail, vm_or_skip

pytestmark = pytest.mark.vm

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, int(sys.argv[3]), int(sys.argv[2]))
print("locked", flush=True)
time.sleep(float(sys.argv[4]))
"""


def _wait_port_111(seconds: float = 300.0) -> bool:
    """Whether port 111 is (or becomes, within ``seconds``) free: other tests start and stop
    a system rpcbind there now and then."""
    deadline = time.monotonic() + seconds
    while port_111_busy():
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


def _our_portmapper_or_skip(srv: ServerProcess) -> None:
    """Another test may have started an rpcbind on 111 between the check and our start."""
    status = discovery_status(srv)
    if status != "serving portmap v2 on 127.0.0.1:111 (tcp, udp)":
        srv.stop()
        pytest.skip(f"port 111 was taken meanwhile: {status}")


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class HostLocks:
    """The host actions of locks.sh, acting on files of the export as local processes."""

    def __init__(self, export: Path) -> None:
        self.export = export
        self.holders: list[subprocess.Popen] = []

    def path(self, rel: str) -> str:
        assert ".." not in rel and not rel.startswith("/")
        return str(self.export / rel)

    def hostlock(self, args: list[str]) -> str:
        rel, start, length, seconds = args
        p = subprocess.Popen([sys.executable, "-c", HOLDER, self.path(rel), start, length, seconds],
                             stdout=subprocess.PIPE, text=True)
        self.holders.append(p)
        line = p.stdout.readline() if p.stdout else ""
        if line.strip() != "locked":
            raise RuntimeError(f"host process could not lock: {line!r}")
        return "held"

    def hosttrylock(self, args: list[str]) -> str:
        rel, start, length, *want = args
        fd = os.open(self.path(rel), os.O_RDWR)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, int(length), int(start))
            except OSError:
                if want == ["free"]:
                    raise RuntimeError("the host process was refused, the range should be free") from None
                return "refused"
            if want != ["free"]:
                ino = os.fstat(fd).st_ino
                held = [line for line in Path("/proc/locks").read_text().splitlines() if f":{ino} " in line]
                raise RuntimeError(f"the host process got a lock the NFS client holds; "
                                   f"locks on inode {ino}: {' | '.join(held)}")
            return "locked"
        finally:
            os.close(fd)

    def sqlite_writer(self, args: list[str]) -> str:
        """Insert rows (writer number, i) one transaction each, in a thread, meanwhile."""
        rel, writer, rows = args
        self.writer_error: Exception | None = None

        def write() -> None:
            db = sqlite3.connect(self.path(rel), timeout=120, isolation_level=None)
            try:
                for i in range(1, int(rows) + 1):
                    db.execute("INSERT INTO t VALUES (?, ?, hex(randomblob(200)))", (int(writer), i))
            except Exception as exc:
                self.writer_error = exc
            finally:
                db.close()
        self.writer = threading.Thread(target=write)
        self.writer.start()
        return "writing"

    def sqlite_writer_wait(self, args: list[str]) -> str:
        self.writer.join(300)
        if self.writer.is_alive() or self.writer_error is not None:
            raise RuntimeError(f"host writer: {self.writer_error or 'still running'}")
        return "done"

    def sqlite_check(self, args: list[str]) -> str:
        rel, rows = args
        db = sqlite3.connect(self.path(rel))
        try:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
            count = db.execute("SELECT count(*) FROM t").fetchone()[0]
            order = [w for (w,) in db.execute("SELECT w FROM t ORDER BY rowid")]
        finally:
            db.close()
        if check != "ok" or count != int(rows):
            raise RuntimeError(f"on the host: integrity_check={check} rows={count}")
        switches = sum(a != b for a, b in zip(order, order[1:]))
        return f"ok {count} rows, {switches} switches between writers"

    def close(self) -> None:
        for p in self.holders:
            p.kill()
            p.wait()


@pytest.mark.parametrize("mount", ["ports", "plain"])
def test_kernel_client_locks(mount: str, tmp_path: Path) -> None:
    vm = vm_or_skip()
    if not _wait_port_111():
        pytest.skip("port 111 is in use: the guest's lockd needs our portmapper there")
    if mount == "plain" and _port_busy(2049):
        pytest.skip("port 2049 is in use: Debian's mount.nfs with no options needs it")
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state", args=("--portmap",),
                        env={"PYSFSD_TRACE": "1"})
    srv.start(2049 if mount == "plain" else 0)
    _our_portmapper_or_skip(srv)
    host = HostLocks(srv.export)
    try:
        result = vm.run_vm_test(
            srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
            workload=WORKLOADS / "locks.sh", timeout=900.0,
            guest_env={"PLAIN": "1"} if mount == "plain" else None,
            host_actions={"hostlock": host.hostlock, "hosttrylock": host.hosttrylock,
                          "sqlite-check": host.sqlite_check, "sqlite-writer": host.sqlite_writer,
                          "sqlite-writer-wait": host.sqlite_writer_wait})
    finally:
        host.close()
        log = srv.stop()
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}"
    assert "Traceback" not in log
    assert "NLM4.LOCK" in log   # the locks went through our NLM, not local to the guest


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThirdParty:
    """Host actions of locks_restart.sh: a raw-RPC NLM client on the host (caller name
    ``thirdparty``), the server's kill -9 and restart, and waits on its log."""

    GRACE = 25.0

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.restarted_at = 0.0

    def _fh(self, rel: str) -> bytes:
        from protocol import nfs3
        from tests.rpc_client import RpcClient, fh
        with RpcClient(self.srv.port) as rpc:
            h = rpc.mount(self.srv.export_b)
            for name in rel.split("/"):
                status, ok = rpc.nfs(3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(h), name.encode())))
                assert status == 0, f"LOOKUP {name}: {status}"
                h = ok.object.data
        return h

    def _lock(self, rel: str, offset: str, length: str) -> str:
        from protocol.nlm4 import nlm4_stats
        from tests.nlm_helpers import NlmClient
        c = NlmClient(self.srv.port, "thirdparty")
        try:
            h = self._fh(rel)
            status = c.lock(h, 4242, int(offset), int(length))
            if status == nlm4_stats.NLM4_GRANTED:
                c.unlock(h, 4242, int(offset), int(length))
            return nlm4_stats.values(status).name
        finally:
            c.close()

    def nlm(self, args: list[str]) -> str:
        rel, offset, length, want = args
        got = self._lock(rel, offset, length)
        if got != want:
            raise RuntimeError(f"third party's LOCK: {got}, expected {want}")
        return got

    def nlm_wait(self, args: list[str]) -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.nlm(args)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def kill9_restart(self, args: list[str]) -> str:
        self.srv.restart(signal.SIGKILL)
        self.restarted_at = time.monotonic()
        return "restarted"

    def wait_reclaim(self, args: list[str]) -> str:
        """Until the server's log shows the guest's reclaiming LOCK granted."""
        while time.monotonic() < self.restarted_at + self.GRACE:
            log = self.srv.log_path.read_text(errors="replace")
            if any("NLM4.LOCK" in line and "reclaim=True" in line and "-> NLM4_GRANTED" in line
                   for line in log.splitlines()):
                return f"reclaimed {time.monotonic() - self.restarted_at:.1f}s after the restart"
            time.sleep(0.5)
        raise RuntimeError("no reclaim within the grace period")

    def wait_grace(self, args: list[str]) -> str:
        time.sleep(max(0.0, self.restarted_at + self.GRACE + 1.5 - time.monotonic()))
        return "grace period over"


def test_kernel_client_reclaims_after_server_kill9(tmp_path: Path) -> None:
    vm = vm_or_skip()
    if not _wait_port_111():
        pytest.skip("port 111 is in use: the guest's lockd needs our portmapper there")
    statd, lockd, pmap = _free_udp_port(), _free_udp_port(), _free_udp_port()
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state",
                        args=("--portmap", "--grace-period", str(ThirdParty.GRACE), "--nsm-name", "10.0.2.2",
                              "--client-portmap-port", str(pmap)),
                        env={"PYSFSD_TRACE": "1"})
    srv.start()
    _our_portmapper_or_skip(srv)
    third = ThirdParty(srv)
    host = HostLocks(srv.export)
    try:
        result = vm.run_vm_test(
            srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
            workload=WORKLOADS / "locks_restart.sh", timeout=900.0,
            guest_env={"STATD_PORT": str(statd), "LOCKD_PORT": str(lockd), "PMAP_PORT": str(pmap)},
            udp_forwards=(statd, lockd, (pmap, 111)),
            host_actions={"nlm": third.nlm, "nlm-wait": third.nlm_wait, "kill9-restart": third.kill9_restart,
                          "wait-reclaim": third.wait_reclaim, "wait-grace": third.wait_grace,
                          "hostlock": host.hostlock})
    finally:
        host.close()
        log = srv.stop()
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}"
    assert "Traceback" not in log
    assert "sent SM_NOTIFY" in log
    assert "NLM4.GRANTED" not in log and "revoking" not in log   # the callback reached the guest
