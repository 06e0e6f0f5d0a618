"""A file written through the server is let go once idle (nfsd/fs/idlefd.py): it can then be
run on the server host (no ETXTBSY), the server holds none of its descriptors open for
writing and no more than the one that names it (O_PATH, or read-only for a file it made), and an UNSTABLE write left uncommitted over the idle close still COMMITs with
the same verifier and reads back."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from protocol import nfs3
from tests.conftest import ServerProcess
from tests.nfs3_helpers import OK, commit, create_ok, read, write
from tests.rpc_client import RpcClient

SCRIPT = b"#!/bin/sh\necho built here\n"
O_PATH = 0o10000000
WAIT = 60.0  # a loaded machine may be slow to run the periodic close; it is not timed


def _open_on(pids: list[int], export: Path, writable: bool = False) -> list[str]:
    """The descriptors of the server's processes on files of ``export`` other than O_PATH
    (``writable``: only those open for writing)."""
    held = []
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError):
                continue
            if target.startswith(str(export) + "/") and not flags & O_PATH and (flags & 3 or not writable):
                held.append(target)
    return held


def _until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_written_files_are_let_go_when_idle(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state", args=("--idle-fd-seconds", "0.1")).start()
    try:
        with RpcClient(srv.port) as rpc:
            root = rpc.mount(srv.export_b)
            prog = create_ok(rpc, root, b"prog", 0o755)
            status, res = write(rpc, prog, 0, SCRIPT, nfs3.stable_how.UNSTABLE)
            assert status == OK and res.committed == nfs3.stable_how.UNSTABLE
            for i in range(10):
                h = create_ok(rpc, root, b"f%d" % i)
                assert write(rpc, h, 0, b"x" * 100, nfs3.stable_how.FILE_SYNC)[0] == OK
                assert read(rpc, h, 0, 100)[0] == OK
            # nothing open for writing; of each file only the read-only descriptor it was made
            # by (the index's transducers read new files for a moment: waited for too)
            _until(lambda: not _open_on(srv.pids(), srv.export, writable=True),
                   "the server still holds files open for writing")
            _until(lambda: sorted(_open_on(srv.pids(), srv.export)) == sorted(
                str(srv.export / n) for n in ["prog", *(f"f{i}" for i in range(10))]),
                "the server still holds more than one descriptor of a file")
            ran = subprocess.run([str(srv.export / "prog")], capture_output=True, check=True)
            assert ran.stdout == b"built here\n"
            status, done = commit(rpc, prog)
            assert status == OK and done.verf == res.verf  # nothing to resend
            assert (srv.export / "prog").read_bytes() == SCRIPT
            status, got = read(rpc, prog, 0, 4096)
            assert status == OK and got.data == SCRIPT
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err[-4000:]
