"""File handles survive server restarts (clean stop and kill -9).

Handles are taken with the raw RPC client before the restart and then reused byte for byte
after it: GETATTR, READ, READDIRPLUS and LOOKUP must work, also after the file's parent
directory was renamed and moved on the host behind the server's back (the server then finds
it by searching the export).  A handle of a file deleted on the host is STALE, and the root
handle MOUNT hands out is the same across restarts.  nfs-rs, holding its own handles, must
carry on across a restart too.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from protocol import nfs3
from protocol.nfs3 import nfsstat3
from tests.rpc_client import RpcClient, fh

SIGNALS = [pytest.param(signal.SIGTERM, id="sigterm"), pytest.param(signal.SIGKILL, id="sigkill")]
CONTENT = b"survives restarts\n" * 100


def lookup(rpc: RpcClient, dirfh: bytes, name: bytes) -> bytes:
    status, ok = rpc.nfs(3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(dirfh), name)))
    assert status == nfs3.NFS3_OK, f"LOOKUP {name!r}: {nfsstat3.values(status).name}"
    return ok.object.data


def getattr_(rpc: RpcClient, h: bytes) -> tuple[int, Any]:
    status, ok = rpc.nfs(1, nfs3.GETATTR3args.cls(fh(h)))
    return status, ok


def read(rpc: RpcClient, h: bytes, offset: int = 0, count: int = 1 << 20) -> bytes:
    status, ok = rpc.nfs(6, nfs3.READ3args.cls(fh(h), offset, count))
    assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
    return ok.data


def readdirplus(rpc: RpcClient, h: bytes) -> dict[bytes, Any]:
    entries: dict[bytes, object] = {}
    cookie, verf = 0, b"\0" * 8
    while True:
        status, ok = rpc.nfs(17, nfs3.READDIRPLUS3args.cls(fh(h), cookie, verf, 4096, 65536))
        assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
        for e in ok.reply.entries:
            assert e.name not in entries
            entries[e.name] = e
            cookie = e.cookie
        verf = ok.cookieverf
        if ok.reply.eof:
            return entries


def check_alive(rpc: RpcClient, file_h: bytes, dir_h: bytes, file_path, dir_path) -> None:
    """The file and directory handles work and name the objects now at these host paths."""
    status, ok = getattr_(rpc, file_h)
    assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
    st = os.stat(file_path)
    assert ok.obj_attributes.fileid == st.st_ino and ok.obj_attributes.size == st.st_size
    assert read(rpc, file_h) == CONTENT
    assert read(rpc, file_h, 100, 50) == CONTENT[100:150]
    status, ok = getattr_(rpc, dir_h)
    assert status == nfs3.NFS3_OK and ok.obj_attributes.fileid == os.stat(dir_path).st_ino
    entries = readdirplus(rpc, dir_h)
    assert set(entries) == {b".", b".."} | {os.fsencode(n) for n in os.listdir(dir_path)}
    name = os.fsencode(os.path.basename(file_path))
    assert entries[name].name_handle.data == file_h
    assert entries[name].name_attributes.fileid == os.stat(file_path).st_ino
    assert lookup(rpc, dir_h, name) == file_h


@pytest.mark.parametrize("sig", SIGNALS)
def test_handles_survive_restart_and_moves(server, rpc, sig):
    ex = server.export
    (ex / "top/mid").mkdir(parents=True)
    (ex / "top/mid/file.txt").write_bytes(CONTENT)
    (ex / "top/mid/other").write_bytes(b"o")
    (ex / "doomed.txt").write_bytes(b"d")
    (ex / "doomed-live.txt").write_bytes(b"d")

    root = rpc.mount(server.export_b)
    top = lookup(rpc, root, b"top")
    mid = lookup(rpc, top, b"mid")
    file_h = lookup(rpc, mid, b"file.txt")
    doomed = lookup(rpc, root, b"doomed.txt")
    doomed_live = lookup(rpc, root, b"doomed-live.txt")
    check_alive(rpc, file_h, mid, ex / "top/mid/file.txt", ex / "top/mid")

    # Deleted on the host while the server runs: STALE at once.
    os.unlink(ex / "doomed-live.txt")
    assert getattr_(rpc, doomed_live)[0] == nfsstat3.NFS3ERR_STALE

    # Made through NFS just before the restart: a directory and a file written UNSTABLE,
    # never committed.
    sattr = nfs3.sattr3.cls(0o755, None, None, None, (0, None), (0, None))
    status, ok = rpc.nfs(9, nfs3.MKDIR3args.cls(nfs3.diropargs3.cls(fh(top), b"made"), sattr))
    assert status == nfs3.NFS3_OK
    made = ok.obj.data
    status, ok = rpc.nfs(8, nfs3.CREATE3args.cls(nfs3.diropargs3.cls(fh(made), b"new.txt"),
                                                 (nfs3.createmode3.UNCHECKED, sattr)))
    assert status == nfs3.NFS3_OK
    new_h = ok.obj.data
    status, _ = rpc.nfs(7, nfs3.WRITE3args.cls(fh(new_h), 0, len(CONTENT), nfs3.stable_how.UNSTABLE, CONTENT))
    assert status == nfs3.NFS3_OK

    # 1. plain restart
    os.unlink(ex / "doomed.txt")
    server.restart(sig)
    with RpcClient(server.port) as rpc2:
        assert rpc2.mount(server.export_b) == root
        check_alive(rpc2, file_h, mid, ex / "top/mid/file.txt", ex / "top/mid")
        check_alive(rpc2, new_h, made, ex / "top/made/new.txt", ex / "top/made")
        assert getattr_(rpc2, top)[0] == nfs3.NFS3_OK
        assert getattr_(rpc2, doomed)[0] == nfsstat3.NFS3ERR_STALE
        status, _ = rpc2.nfs(6, nfs3.READ3args.cls(fh(doomed), 0, 10))
        assert status == nfsstat3.NFS3ERR_STALE
        assert getattr_(rpc2, doomed_live)[0] == nfsstat3.NFS3ERR_STALE

    # 2. the file's parent directory renamed and moved deeper, behind the server's back
    (ex / "elsewhere/deeper").mkdir(parents=True)
    os.rename(ex / "top/mid", ex / "elsewhere/deeper/renamed")
    server.restart(sig)
    moved = ex / "elsewhere/deeper/renamed"
    with RpcClient(server.port) as rpc3:
        assert rpc3.mount(server.export_b) == root
        check_alive(rpc3, file_h, mid, moved / "file.txt", moved)
        assert getattr_(rpc3, doomed)[0] == nfsstat3.NFS3ERR_STALE
        # The path walk from the root agrees with the old handles.
        h = lookup(rpc3, lookup(rpc3, lookup(rpc3, root, b"elsewhere"), b"deeper"), b"renamed")
        assert h == mid
        # ".." of the moved directory is its new parent.
        assert readdirplus(rpc3, mid)[b".."].name_attributes.fileid == os.stat(moved.parent).st_ino

    # 3. and once more, now that the handle table knows the new place
    server.restart(sig)
    with RpcClient(server.port) as rpc4:
        check_alive(rpc4, file_h, mid, moved / "file.txt", moved)
        assert rpc4.mount(server.export_b) == root


def test_handle_of_file_replaced_on_host_is_stale(server, rpc):
    """Same name, new file: the old handle must not silently name the new object."""
    p = server.export / "f"
    p.write_bytes(b"old")
    root = rpc.mount(server.export_b)
    old = lookup(rpc, root, b"f")
    p.unlink()
    p.write_bytes(b"new")
    server.restart(signal.SIGKILL)
    with RpcClient(server.port) as rpc2:
        new = lookup(rpc2, root, b"f")
        if new == old:
            pytest.skip("the file system reused the inode and has no generation numbers")
        assert getattr_(rpc2, old)[0] == nfsstat3.NFS3ERR_STALE
        assert read(rpc2, new) == b"new"


@pytest.mark.slow
def test_nfs_rs_carries_on_across_a_restart(server):
    """nfs-rs keeps its handles across a kill -9 restart, even though the file's directory
    was moved on the host meanwhile.  (nfs-rs only notices the dead connection after its
    ~10 s RPC attempt timeout, and reports a WRITE sent on it as an uncertain outcome, so
    the first call after the restart is a READ.)"""
    nfs_rs = pytest.importorskip("nfs_rs")
    (server.export / "a/b").mkdir(parents=True)
    (server.export / "a/b/f").write_bytes(CONTENT)
    with nfs_rs.Client.connect(server.url(), connect_timeout=10, operation_timeout=60) as c:
        with c.open("a/b/f", "r+b") as f:
            assert f.read_at(0, 10) == CONTENT[:10]
            server.stop(signal.SIGKILL)
            os.rename(server.export / "a/b", server.export / "moved")
            server.start(server.port)
            assert f.read_at(10, 10) == CONTENT[10:20]  # the old handle, found by searching
            f.write_at(b"XY", 0)
            assert f.read_at(0, 4) == b"XY" + CONTENT[2:4]
        assert (server.export / "moved/f").read_bytes() == b"XY" + CONTENT[2:]
        assert set(c.listdir("moved")) - {".", ".."} == {"f"}


@pytest.mark.parametrize("sig", SIGNALS)
def test_exclusive_create_verifier_survives_restart(server, rpc, sig):
    """A retransmitted EXCLUSIVE CREATE (same verifier) that reaches a restarted server
    still succeeds with the same handle; another verifier still gets EXIST."""
    root = rpc.mount(server.export_b)
    where = nfs3.diropargs3.cls(fh(root), b"excl")
    status, first = rpc.nfs(8, nfs3.CREATE3args.cls(where, (nfs3.createmode3.EXCLUSIVE, b"verf-one")))
    assert status == nfs3.NFS3_OK
    server.restart(sig)
    with RpcClient(server.port) as rpc2:
        status, again = rpc2.nfs(8, nfs3.CREATE3args.cls(where, (nfs3.createmode3.EXCLUSIVE, b"verf-one")))
        assert status == nfs3.NFS3_OK and again.obj.data == first.obj.data
        status, _ = rpc2.nfs(8, nfs3.CREATE3args.cls(where, (nfs3.createmode3.EXCLUSIVE, b"verf-two")))
        assert status == nfsstat3.NFS3ERR_EXIST


def test_dotdot_after_restart(server, rpc):
    (server.export / "p/q").mkdir(parents=True)
    root = rpc.mount(server.export_b)
    p = lookup(rpc, root, b"p")
    q = lookup(rpc, p, b"q")
    server.restart(signal.SIGKILL)
    with RpcClient(server.port) as rpc2:
        assert lookup(rpc2, q, b"..") == p
        assert lookup(rpc2, p, b"..") == root
        assert lookup(rpc2, root, b"..") == root  # the export root is its own parent
        assert lookup(rpc2, q, b".") == q


@pytest.mark.parametrize("sig", SIGNALS)
def test_symlink_and_fifo_handles_survive_restart_and_moves(server, rpc, sig):
    """Symbolic links and FIFOs have no generation number to check: they are found by name."""
    ex = server.export
    (ex / "dir").mkdir()
    os.symlink("../somewhere/else", ex / "dir/link")
    os.mkfifo(ex / "dir/fifo", 0o600)
    root = rpc.mount(server.export_b)
    d = lookup(rpc, root, b"dir")
    link = lookup(rpc, d, b"link")
    fifo = lookup(rpc, d, b"fifo")

    def check(client: RpcClient, where) -> None:
        status, ok = client.nfs(5, nfs3.READLINK3args.cls(fh(link)))
        assert status == nfs3.NFS3_OK and ok.data == b"../somewhere/else"
        status, ok = getattr_(client, fifo)
        assert status == nfs3.NFS3_OK
        assert ok.obj_attributes.type == nfs3.ftype3.NF3FIFO
        assert ok.obj_attributes.fileid == os.lstat(where / "fifo").st_ino
        status, ok = getattr_(client, link)
        assert status == nfs3.NFS3_OK and ok.obj_attributes.fileid == os.lstat(where / "link").st_ino

    server.restart(sig)
    with RpcClient(server.port) as rpc2:
        check(rpc2, ex / "dir")
    os.rename(ex / "dir", ex / "dir-renamed")
    server.restart(sig)
    with RpcClient(server.port) as rpc3:
        check(rpc3, ex / "dir-renamed")
        # SETATTR on the symlink (it needs the link's current name) works too.
        sattr = nfs3.sattr3.cls(None, 321, 654, None, (0, None), (0, None))
        status, _ = rpc3.nfs(2, nfs3.SETATTR3args.cls(fh(link), sattr, None))
        assert status == nfs3.NFS3_OK
        st = os.lstat(ex / "dir-renamed/link")
        assert (st.st_uid, st.st_gid) == (321, 654)
    os.unlink(ex / "dir-renamed/link")
    server.restart(sig)
    with RpcClient(server.port) as rpc4:
        assert getattr_(rpc4, link)[0] == nfsstat3.NFS3ERR_STALE
        assert getattr_(rpc4, fifo)[0] == nfs3.NFS3_OK
