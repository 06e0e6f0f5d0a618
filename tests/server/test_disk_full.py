"""A full disk: under the export, and under the state store.

The export on a 4 MiB tmpfs with few inodes: WRITEs until it is full answer NFS3ERR_NOSPC
(not IO or SERVERFAULT), so do CREATE, MKDIR and SYMLINK once the inodes are gone; what was
written before is intact, the server keeps answering, and once space is freed writes and
creates work again.

The state store (LMDB: handle table, index) on a tmpfs of its own, filled up behind the
server: creating objects, which needs new handles, answers NOSPC and leaves nothing behind
(never SERVERFAULT), existing files are still served, the index says once that it is stuck
and keeps answering queries from its last good state, and when space returns new objects
are created and the index catches up by itself.

Mounting a tmpfs needs root: the tests skip (saying so) where it is not permitted.
"""
from __future__ import annotations

import io
import os
import random
import subprocess
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Iterator

import pytest

from nfsd.cli.index import main as index_main
from protocol import nfs3
from tests.conftest import ServerProcess, serving
from tests.nfs3_helpers import (OK, S, create, getattr_, lookup, mkdir, null_ok, read, remove,
                                sattr, symlink, write)
from tests.rpc_client import RpcClient
from tests.waiting import eventually

KiB, MiB = 1 << 10, 1 << 20
FILE_SYNC, UNSTABLE = nfs3.stable_how.FILE_SYNC, nfs3.stable_how.UNSTABLE
GUARDED = nfs3.createmode3.GUARDED


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def new_file(rpc: RpcClient, d: bytes, name: bytes) -> tuple[int, bytes | None]:
    status, res = create(rpc, d, name, GUARDED, sattr(mode=0o644))
    return status, (res.obj.data if status == OK else None)


def fsstat_free(rpc: RpcClient, root: bytes) -> int:
    status, res = rpc.nfs(18, nfs3.FSSTAT3args.cls(nfs3.nfs_fh3.cls(root)))
    assert status == OK
    return res.fbytes


def test_export_full(tmp_path):
    with tmpfs(tmp_path / "export", "size=4m,nr_inodes=48,mode=755"), serving(tmp_path) as srv, \
            RpcClient(srv.port) as rpc:
        root = rpc.mount(srv.export_b)
        kept = random.Random("kept").randbytes(256 * KiB)  # fixed bytes: sniffed the same every run
        status, keep = new_file(rpc, root, b"keep")
        assert status == OK and write(rpc, keep, 0, kept, FILE_SYNC)[0] == OK
        # Fill the blocks: FILE_SYNC writes until one fails, which must say NOSPC.
        status, fill = new_file(rpc, root, b"fill")
        assert status == OK
        chunk, offset, last = random.Random("chunk").randbytes(64 * KiB), 0, OK
        while offset < 8 * MiB:
            last, res = write(rpc, fill, offset, chunk, FILE_SYNC)
            if last != OK:
                break
            assert res.count == len(chunk)
            offset += len(chunk)
        assert last == S.NFS3ERR_NOSPC, last
        assert 2 * MiB < offset < 4 * MiB
        assert write(rpc, fill, offset, chunk, UNSTABLE)[0] == S.NFS3ERR_NOSPC
        assert fsstat_free(rpc, root) < 64 * KiB
        # Fill the inodes: CREATE until NOSPC, then MKDIR and SYMLINK fail the same way.
        names = []
        for i in range(100):
            status, _ = new_file(rpc, root, b"empty%d" % i)
            if status != OK:
                break
            names.append(b"empty%d" % i)
        assert status == S.NFS3ERR_NOSPC and names, status
        assert not (srv.export / f"empty{len(names)}").exists()
        assert mkdir(rpc, root, b"dir")[0] == S.NFS3ERR_NOSPC
        assert symlink(rpc, root, b"link", b"target")[0] == S.NFS3ERR_NOSPC
        # What was written before is intact; the server answers.
        status, res = read(rpc, keep, 0, len(kept))
        assert status == OK and res.data == kept
        assert (srv.export / "keep").read_bytes() == kept
        status, res = read(rpc, fill, offset - len(chunk), len(chunk))
        assert status == OK and res.data == chunk
        null_ok(rpc)
        assert getattr_(rpc, root)[0] == OK and getattr_(rpc, fill)[0] == OK
        # Space freed: writes, creates and directories work again.
        assert remove(rpc, root, b"fill")[0] == OK
        for name in names:
            assert remove(rpc, root, name)[0] == OK
        assert write(rpc, keep, len(kept), chunk, FILE_SYNC)[0] == OK
        assert new_file(rpc, root, b"after")[0] == OK
        assert mkdir(rpc, root, b"dir")[0] == OK
        assert (srv.export / "keep").read_bytes() == kept + chunk


def fill_up(directory: Path) -> Path:
    """A file taking every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (64 * KiB, 4 * KiB):
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def query(srv: ServerProcess, q: str) -> list[str]:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw)  # the query command writes bytes to sys.stdout.buffer
    with redirect_stdout(out):
        assert index_main(["query", "--export", str(srv.export), "--state-dir", str(srv.state_dir),
                           "--no-refresh", q]) == 0
    out.flush()
    return sorted(raw.getvalue().decode().split())


def test_state_store_full(tmp_path):
    (tmp_path / "export").mkdir()
    for i in range(5):
        (tmp_path / "export" / f"old{i}.txt").write_text(f"old file {i}\n")
    with tmpfs(tmp_path / "state", "size=2m,mode=700"):
        srv = ServerProcess(tmp_path / "export", tmp_path / "state").start()
        try:
            with RpcClient(srv.port) as rpc:
                root = rpc.mount(srv.export_b)
                status, old = lookup(rpc, root, b"old0.txt")
                assert status == OK
                old = old.object.data
                filler = fill_up(tmp_path / "state")
                # New objects need new handles: OK while LMDB finds room, then NOSPC.
                made, refused = [], []
                for i in range(400):
                    name = b"new%d.txt" % i
                    status, fh = new_file(rpc, root, name)
                    assert status in (OK, S.NFS3ERR_NOSPC), status
                    (made if status == OK else refused).append((name, fh))
                    if len(refused) >= 3:
                        break
                assert refused, "the state store never filled up"
                for name, _ in refused:  # nothing left behind by a refused create
                    assert not (srv.export / os.fsdecode(name)).exists()
                for name, fh in made:
                    assert getattr_(rpc, fh)[0] == OK
                assert mkdir(rpc, root, b"newdir")[0] in (OK, S.NFS3ERR_NOSPC)
                # Existing files are served: read, written, looked up.
                status, res = read(rpc, old, 0, 100)
                assert status == OK and res.data == b"old file 0\n"
                assert write(rpc, old, 0, b"OLD", FILE_SYNC)[0] == OK
                assert lookup(rpc, root, b"old1.txt")[0] == OK
                null_ok(rpc)
                # The index is stuck on its last good state, and says so once (when it has
                # tried to flush: asked of the log, not slept for).
                eventually(lambda: "queries answer from the last good state" in srv.log_path.read_text())
                assert {f"old{i}.txt" for i in range(5)} <= set(query(srv, "ext:/txt"))
                log = srv.log_path.read_text()
                assert log.count("its store") == 1 and "queries answer from the last good state" in log, log
                # Space returns: creates work, and the index catches up by itself.
                filler.unlink()
                assert new_file(rpc, root, b"after.txt")[0] == OK
                want = {f"old{i}.txt" for i in range(5)} | {os.fsdecode(n) for n, _ in made} | {"after.txt"}
                deadline = time.monotonic() + 40
                while set(query(srv, "ext:/txt")) != want and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert set(query(srv, "ext:/txt")) == want
                assert getattr_(rpc, old)[0] == OK
        finally:
            log = srv.stop()
        assert "has space again" in log and "Traceback" not in log, log[-3000:]
