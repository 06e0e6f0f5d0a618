"""A write-back error is seen by every worker (nfsd/fs/shared_verifier.py): with ``--workers
2`` the write verifier a worker resets after a failed fsync or fdatasync is the one the
other worker answers from then on, so a client whose next call reaches the other worker
(another connection, nconnect, a reconnect) resends what it wrote UNSTABLE.

The error is a real one, not a hook: the export is an ext4 file system on a loop device
whose backing file sits on a tmpfs far smaller than it, so data written into the page cache
fails at write-back (ENOSPC, then EIO), as a failing disk would.  That takes mounting:
root only, skipped otherwise.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.nfs3_helpers import OK, commit, create_ok, write
from tests.rpc_client import RpcClient
from tests.server.test_workers import one_per_worker, workers_of
from tests.waiting import eventually

CHUNK = 1 << 16
TOO_MUCH = 16 << 20  # written UNSTABLE: more than the tmpfs under the file system holds


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.fixture
def failing_disk(tmp_path: Path) -> Iterator[Path]:
    """A mounted ext4 (no journal, ``errors=continue``) of 64 MiB on 8 MiB of tmpfs."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 (a loop mount)")
    under, mnt = tmp_path / "tmpfs", tmp_path / "mnt"
    under.mkdir()
    mnt.mkdir()
    if not _run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(under)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        image = under / "ext4.img"
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        if not (_run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "nodiscard", str(image))
                and _run("mount", "-o", "loop,errors=continue", str(image), str(mnt))):
            pytest.skip("cannot make or loop-mount an ext4 here")
        try:
            (mnt / "export").mkdir()
            yield mnt / "export"
        finally:
            if not _run("umount", str(mnt)):
                _run("umount", "-l", str(mnt))
    finally:
        if not _run("umount", str(under)):
            _run("umount", "-l", str(under))


@pytest.fixture
def two(failing_disk: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(failing_disk, tmp_path / "state",  # the handle table on a good disk
                        args=("--workers", "2", "--no-watch", "--idle-fd-seconds", "0.2")).start()
    try:
        yield srv
    finally:
        srv.stop()


def _verifier(c: RpcClient, h: bytes) -> bytes:
    st, res = write(c, h, 0, b"v", stable=0)
    assert st == OK
    return bytes(res.verf)


def _unstable_too_much(c: RpcClient, h: bytes) -> None:
    for offset in range(0, TOO_MUCH, CHUNK):
        st, _ = write(c, h, offset, b"d" * CHUNK, stable=0)
        assert st == OK  # into the page cache: acknowledged


@pytest.mark.parametrize("how", ["commit", "idle close"])
def test_a_write_back_error_on_one_worker_changes_the_verifier_the_other_answers(
        two: ServerProcess, how: str) -> None:
    """``commit``: the COMMIT's fsync fails on the worker that got it.  ``idle close``: no
    COMMIT comes; the fdatasync before an idle descriptor closes (nfsd/fs/idlefd.py) fails.
    Either way the other worker, which saw no error, answers the new verifier."""
    (_, a), (_, b) = one_per_worker(two).items()
    root = a.mount(two.export_b)
    lost, small = create_ok(a, root, b"lost"), create_ok(a, root, b"small")
    old = _verifier(b, small)
    assert _verifier(a, small) == old  # one verifier for both workers
    _unstable_too_much(a, lost)
    if how == "commit":
        st, _ = commit(a, lost)
        assert st != OK  # ENOSPC or EIO: the data is not on the disk
        assert _verifier(b, small) != old
    else:
        eventually(lambda: _verifier(b, small) != old)
    assert _verifier(a, small) == _verifier(b, small)  # and still one for both
    for c in (a, b):
        c.close()


def test_a_worker_started_again_answers_the_verifier_reset_before_it_died(two: ServerProcess) -> None:
    """The parent used to hand a restarted worker the verifier of the primary's first start:
    after a reset (here by the idle close's failed fdatasync, which the base did reset in
    the worker that met it), that worker would have answered the old one again."""
    conns = one_per_worker(two)
    (_, a), (other, b) = conns.items()
    root = a.mount(two.export_b)
    lost, small = create_ok(a, root, b"lost"), create_ok(a, root, b"small")
    old = _verifier(a, small)
    _unstable_too_much(a, lost)
    eventually(lambda: _verifier(a, small) != old)
    for c in (a, b):
        c.close()
    os.kill(other, signal.SIGKILL)
    eventually(lambda: len(workers_of(two)) == 2 and other not in workers_of(two))
    conns = one_per_worker(two)

    def agreed() -> object:
        seen = {_verifier(c, small) for c in conns.values()}
        return len(seen) == 1 and old not in seen or seen
    eventually(agreed)
    for c in conns.values():
        c.close()
