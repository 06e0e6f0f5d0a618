"""A handle the handle table cannot place, on a big export: the walk that looks for it runs
in slices (here one directory each: PYSFSD_SEARCH_SLICE_DIRS=1) while the worker goes on
serving other calls, and the call is held until the walk can answer it (nfsd/rpc/held.py):
a file moved deep behind the server's back is found by the first call, not JUKEBOX (the
Linux client would wait 5 s to retry) nor STALE, and a file deleted is STALE once the whole
export was walked (nfsd/fs/searchslices.py).  Until the ``heldsearch`` branch the first
calls answered JUKEBOX."""
from __future__ import annotations

import os
import threading

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


def in_thread(rpc: RpcClient, h: bytes) -> tuple[threading.Thread, list]:
    """GETATTR ``h`` in a thread (the call is held): the thread and where its answer goes."""
    answer: list = []
    t = threading.Thread(target=lambda: answer.append(getattr_(rpc, h)))
    t.start()
    return t, answer


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
            held, answer = in_thread(rpc, file_h)  # not answered within a slice: held
            served, alive = 0, True
            while alive:  # another connection is served meanwhile
                alive = held.is_alive()
                status, ok = getattr_(other, src)
                assert status == nfs3.NFS3_OK and ok.obj_attributes.fileid == os.stat(export / "src").st_ino
                served += alive
            held.join()
            assert served, "the held call was answered before another call could be"
            status, ok = answer[0]  # the first call's answer: the file where it moved
            assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
            assert ok.obj_attributes.fileid == os.stat(deep / "file2").st_ino
            assert getattr_(rpc, doomed_h)[0] == nfsstat3.NFS3ERR_STALE  # held until the walk ended
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err[-4000:]


def test_held_calls_of_a_closed_connection_and_at_shutdown_leave_the_server_clean(tmp_path):
    """A held call whose connection closes is dropped (the worker goes on serving); one
    still held when the server stops is answered "try again" (JUKEBOX), or STALE if the
    walk ended first, and the server stops cleanly."""
    export = tmp_path / "export"
    for i in range(TOPS):
        for j in range(SUBS):
            (export / "t" / f"a{i:02}" / f"b{j:02}").mkdir(parents=True)
    (export / "doomed").write_bytes(b"gone\n")
    srv = ServerProcess(export, tmp_path / "state", env={"PYSFSD_SEARCH_SLICE_DIRS": "1"},
                        args=("--workers", "1")).start()
    err = ""
    try:
        with RpcClient(srv.port) as rpc:
            root = rpc.mount(srv.export_b)
            doomed_h = lookup(rpc, root, b"doomed")
        srv.stop()
        os.unlink(export / "doomed")  # only a whole walk tells it is gone
        srv.start()
        closing = RpcClient(srv.port)
        closing.mount(srv.export_b)
        closing.send_record(bytes(_getattr_call(doomed_h)))  # held...
        closing.close()  # ...and its connection gone
        with RpcClient(srv.port) as rpc, RpcClient(srv.port) as other:
            held, answer = in_thread(rpc, doomed_h)
            assert getattr_(other, root)[0] == nfs3.NFS3_OK  # served meanwhile
            err = srv.stop()
            held.join()
        assert answer and answer[0][0] in (nfsstat3.NFS3ERR_JUKEBOX, nfsstat3.NFS3ERR_STALE), answer
    finally:
        err = srv.stop() or err
    assert "Traceback" not in err and "Task was destroyed" not in err, err[-4000:]
    assert "never retrieved" not in err, err[-4000:]


def _getattr_call(h: bytes) -> bytearray:
    from protocol.rpc import encode_call
    from tests.rpc_client import ROOT
    buf = encode_call(0x5eed, nfs3.NFS3.number, 3, 1, ROOT)
    nfs3.GETATTR3args.pack(buf, nfs3.GETATTR3args.cls(fh(h)))
    return buf
