"""One write verifier for every worker process (nfsd/fs/shared_verifier.py), changed where
knfsd changes it (``Nfs3Service._write_failed``)."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from nfsd.fs import localfs
from nfsd.fs.localfs import LocalFS
from nfsd.fs.shared_verifier import WriteVerifier
from nfsd.nfs3.service import Nfs3Service
from nfsd.rpc.call import CallContext
from nfsd.state.store import Store
from protocol import nfs3
from protocol.nfs3 import nfsstat3
from tests.rpc_client import ROOT

BOOT = b"\0\0\0\x05abcd"


def _forked(fn: Callable[[], bytes]) -> tuple[int, int]:
    """Run ``fn`` in a forked process (as the supervisor forks a worker); its pid and the
    pipe its answer comes on."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.write(w, fn())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _answer(pid: int, r: int) -> bytes:
    try:
        data = os.read(r, 64)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert status == 0
    return data


def test_a_reset_in_one_worker_is_what_every_worker_answers_from_then_on() -> None:
    verifier = WriteVerifier()  # the supervisor's, before any worker forks
    assert not verifier.is_set()
    verifier.set(BOOT)          # (the primary's first start)
    go_r, go_w = os.pipe()
    seen_r, seen_w = os.pipe()

    def running_worker() -> bytes:
        os.write(seen_w, verifier.current())  # it has answered with the boot's
        os.read(go_r, 1)                      # ... and another worker resets it meanwhile
        return verifier.current()
    running = _forked(running_worker)
    assert os.read(seen_r, 64) == BOOT  # (before the reset: a race otherwise)
    new = _answer(*_forked(verifier.reset))  # the worker that met the write-back error
    os.write(go_w, b"!")
    assert _answer(*running) == new
    assert new != BOOT and new[:4] == BOOT[:4] and verifier.boot == 5
    assert verifier.current() == new                       # the parent's view
    assert _answer(*_forked(verifier.current)) == new      # a worker started again after it
    for fd in (go_r, go_w, seen_r, seen_w):
        os.close(fd)


def test_each_reset_is_new_and_a_verifier_is_eight_bytes() -> None:
    verifier = WriteVerifier(BOOT)
    seen = {verifier.current()}
    for _ in range(20):
        seen.add(verifier.reset())
        assert verifier.current()[:4] == BOOT[:4]
    assert len(seen) == 21
    with pytest.raises(ValueError):
        verifier.set(b"short")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Nfs3Service, LocalFS, localfs.Node]]:
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "f").write_bytes(b"")
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    try:
        yield Nfs3Service({1: fs}, store, BOOT), fs, fs.lookup(fs.root, b"f")
    finally:
        fs.close()
        store.close()


def _write(nfs: Nfs3Service, n: localfs.Node, stable: int) -> int:
    args = nfs3.WRITE3args.cls(nfs3.nfs_fh3.cls(n.fh), 0, 4, stable, b"DATA")
    status, _ = nfs.WRITE(CallContext(ROOT, ("127.0.0.1", 0)), args)
    return status


def _commit(nfs: Nfs3Service, n: localfs.Node) -> int:
    status, _ = nfs.COMMIT(CallContext(ROOT, ("127.0.0.1", 0)), nfs3.COMMIT3args.cls(nfs3.nfs_fh3.cls(n.fh), 0, 0))
    return status


@pytest.mark.parametrize("call, sync", [("commit", "fsync"), ("file_sync", "fsync"), ("data_sync", "fdatasync")])
def test_a_failed_fsync_of_a_commit_or_stable_write_changes_the_verifier(
        served: tuple[Nfs3Service, LocalFS, localfs.Node], monkeypatch: pytest.MonkeyPatch,
        call: str, sync: str) -> None:
    """As knfsd (``nfsd_commit``, ``nfsd_vfs_write``): the error may be a write-back error
    that lost earlier UNSTABLE data of the file, so the clients must resend it."""
    nfs, fs, n = served
    assert _write(nfs, n, nfs3.stable_how.UNSTABLE) == nfsstat3.NFS3_OK
    real = getattr(os, sync)
    io = n.io_fd(write=True)

    def failing(fd: int) -> None:
        if fd == io:
            raise OSError(errno.EIO, "write-back failed")
        real(fd)
    monkeypatch.setattr(localfs.os, sync, failing)
    if call == "commit":
        status = _commit(nfs, n)
    else:
        status = _write(nfs, n, nfs3.stable_how.FILE_SYNC if call == "file_sync" else nfs3.stable_how.DATA_SYNC)
    monkeypatch.undo()
    assert status == nfsstat3.NFS3ERR_IO
    assert nfs.verifier.current() != BOOT and nfs.verifier.current()[:4] == BOOT[:4]


@pytest.mark.parametrize("err, changes", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EIO, True),
                                          (errno.EACCES, False), (errno.EROFS, False), (errno.ESTALE, False),
                                          (errno.EAGAIN, False)])
def test_which_write_errors_change_the_verifier(served: tuple[Nfs3Service, LocalFS, localfs.Node],
                                                monkeypatch: pytest.MonkeyPatch, err: int, changes: bool) -> None:
    """knfsd resets on any error of the write itself but EAGAIN and ESTALE; a refusal it
    makes before writing (permission, read-only) never reaches that point."""
    nfs, fs, n = served

    def refused(*args: object) -> None:
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(fs, "write", refused)
    monkeypatch.setattr(fs, "commit", refused)
    assert _write(nfs, n, nfs3.stable_how.UNSTABLE) != nfsstat3.NFS3_OK
    assert (nfs.verifier.current() != BOOT) == changes
    before = nfs.verifier.current()
    assert _commit(nfs, n) != nfsstat3.NFS3_OK
    assert (nfs.verifier.current() != before) == changes
