"""A handle the handle table cannot place, on a big export: the walk that looks for it runs
in slices (here one directory each: PYSFSD_SEARCH_SLICE_DIRS=1), answering JUKEBOX until
it can answer, while the worker goes on serving other calls; a file moved deep behind the
server's back is then found, not STALE, and a file deleted is STALE once the whole export
was walked (nfsd/fs/searchslices.py)."""
from __future__ import annotations

import os
import time

import pytest

from protocol import nfs3
from protocol.nfs3 import nfsstat3
from tests.conftest import ServerProcess
from tests.rpc_client import RpcClient, fh

TOPS, SUBS = 60, 50  # 3,000 directories: thousands of slices


def lookup(rpc: RpcClient, dirfh: bytes, name: bytes) -> bytes:
    status, ok = rpc.nfs(3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(dirfh), name)))
    assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
    return ok.object.data


def getattr_(rpc: RpcClient, h: bytes):
    return rpc.nfs(1, nfs3.GETATTR3args.cls(fh(h)))


def until_not_jukebox(rpc: RpcClient, h: bytes):
    """GETATTR ``h`` until it answers other than JUKEBOX (each call walks a slice too)."""
    deadline = time.monotonic() + 120  # (only against a hang: nothing here is timed)
    while True:
        status, ok = getattr_(rpc, h)
        if status != nfsstat3.NFS3ERR_JUKEBOX or time.monotonic() > deadline:
            return status, ok
        time.sleep(0.02)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_moved_deep_in_a_big_export_is_found_while_others_are_served(tmp_path, workers):
    export = tmp_path / "export"
    for i in range(TOPS):
        for j in range(SUBS):
            (export / "t" / f"a{i:02}" / f"b{j:02}").mkdir(parents=True)
    (export / "src").mkdir()
    (export / "src" / "file").write_bytes(b"moved\n")
    (export / "src" / "doomed").write_bytes(b"gone\n")
    srv = ServerProcess(export, tmp_path / "state", env={"PYSFSD_SEARCH_SLICE_DIRS": "1"},
                        args=("--workers", str(workers))).start()
    try:
        with RpcClient(srv.port) as rpc:
            root = rpc.mount(srv.export_b)
            src = lookup(rpc, root, b"src")
            file_h, doomed_h = lookup(rpc, src, b"file"), lookup(rpc, src, b"doomed")
        srv.stop()
        deep = export / "t" / "a37" / "b20" / "x" / "y"
        deep.mkdir(parents=True)
        os.rename(export / "src" / "file", deep / "file2")  # behind the server's back
        os.unlink(export / "src" / "doomed")
        srv.start()
        with RpcClient(srv.port) as rpc, RpcClient(srv.port) as other:
            assert getattr_(rpc, file_h)[0] == nfsstat3.NFS3ERR_JUKEBOX  # not within a slice
            status, ok = getattr_(other, src)  # another connection is served meanwhile...
            assert status == nfs3.NFS3_OK and ok.obj_attributes.fileid == os.stat(export / "src").st_ino
            assert getattr_(rpc, doomed_h)[0] == nfsstat3.NFS3ERR_JUKEBOX  # ...the walk unfinished
            status, ok = until_not_jukebox(rpc, file_h)
            assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
            assert ok.obj_attributes.fileid == os.stat(deep / "file2").st_ino
            assert until_not_jukebox(rpc, doomed_h)[0] == nfsstat3.NFS3ERR_STALE
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err[-4000:]
