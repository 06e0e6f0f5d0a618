"""Locks from the Linux kernel client, in the qemu VM, mounted with no ``nolock``.

The guest (scripts/vm/workloads/locks.sh) runs Debian's rpcbind and rpc.statd and mounts
with locks on; its lockd finds the server's NLM through the portmapper at 10.0.2.2:111
(the host's 127.0.0.1:111: pysfsd's ``--portmap``).  flock, fcntl byte ranges, a blocked
lock granted on release, two concurrent sqlite3 writers, and locks of a process on the
host excluding the client and the reverse (host actions below).  ``plain``: the server on
port 2049 and Debian's ``mount.nfs`` with no options at all, which tries NFSv4 first and
falls back to v3 by itself.  Skips when qemu, the Debian kernel or a free port 111 (and
2049 for ``plain``) is missing, unless PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.test_discovery import port_111_busy
from tests.vm_support import WORKLOADS, tail, vm_or_skip

pytestmark = pytest.mark.vm

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, int(sys.argv[3]), int(sys.argv[2]))
print("locked", flush=True)
time.sleep(float(sys.argv[4]))
"""


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

    def sqlite_check(self, args: list[str]) -> str:
        rel, rows = args
        db = sqlite3.connect(self.path(rel))
        try:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
            count = db.execute("SELECT count(*) FROM t").fetchone()[0]
        finally:
            db.close()
        if check != "ok" or count != int(rows):
            raise RuntimeError(f"on the host: integrity_check={check} rows={count}")
        return f"ok {count} rows"

    def close(self) -> None:
        for p in self.holders:
            p.kill()
            p.wait()


@pytest.mark.parametrize("mount", ["ports", "plain"])
def test_kernel_client_locks(mount: str, tmp_path: Path) -> None:
    vm = vm_or_skip()
    if port_111_busy():
        pytest.skip("port 111 is in use: the guest's lockd needs our portmapper there")
    if mount == "plain" and _port_busy(2049):
        pytest.skip("port 2049 is in use: Debian's mount.nfs with no options needs it")
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state", args=("--portmap",),
                        env={"PYSFSD_TRACE": "1"})
    srv.start(2049 if mount == "plain" else 0)
    host = HostLocks(srv.export)
    try:
        result = vm.run_vm_test(
            srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
            workload=WORKLOADS / "locks.sh", timeout=900.0,
            guest_env={"PLAIN": "1"} if mount == "plain" else None,
            host_actions={"hostlock": host.hostlock, "hosttrylock": host.hosttrylock,
                          "sqlite-check": host.sqlite_check})
    finally:
        host.close()
        log = srv.stop()
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}"
    assert "Traceback" not in log
    assert "NLM4.LOCK" in log   # the locks went through our NLM, not local to the guest
