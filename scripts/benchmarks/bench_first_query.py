#!/usr/bin/env python3
"""A new user's first minute: the time from starting the server (a first index) to a
client's first answer of a query directory (default ``ext:/c``: LOOKUPs down to it, then
READDIRPLUS), retrying JUKEBOX after ``--retry`` s (default 5: the Linux client's
NFS_JUKEBOX_RETRY_TIME, so the figure is the time as its user would see it).  Before the
``heldindex`` branch a query directory answered JUKEBOX until the scan had indexed its
fields; since, the call is held until then (nfsd/fs/indexwaits.py).  Also printed: how many
JUKEBOX answers the client got, the answer's status (before the branch, LOOKUP of ``c`` in
``ext:`` as root could answer NOENT from the half-built index), and with ``--wait-ready``
when the server printed ``index ready``.

Trees are compared in the same run, interleaved (each run with ``PYTHONPATH`` and cwd = the
tree, a fresh state directory, so each start builds a first index):

    python scripts/benchmarks/bench_first_query.py --export /tmp/bench-first-query \\
        --files 50000 --trees base=/tmp/base,new=. --rounds 3

The export is made once if missing (``--files`` small files in directories of 500, a mix of
extensions).  Loopback, root's credentials.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1])]

from protocol import nfs3  # noqa: E402
from protocol.nfs3 import nfsstat3  # noqa: E402
from tests.rpc_client import RpcClient, fh  # noqa: E402

_LISTENING = re.compile(r"pysfsd: listening on [\d.]+:(\d+)")
_EXTS = ("c", "h", "py", "txt", "md")


def make_export(export: Path, files: int) -> None:
    if export.exists():
        return
    export.mkdir(parents=True)
    for i in range(files):
        d = export / f"d{i // 500:04d}"
        if i % 500 == 0:
            d.mkdir()
        (d / f"f{i}.{_EXTS[i % len(_EXTS)]}").write_bytes(b"x\n")


class Run:
    """One start of the server from ``tree``: its port, and when it said the index is ready."""

    def __init__(self, tree: str, export: str, workers: int) -> None:
        self.state = tempfile.mkdtemp(prefix="bench-first-query-")
        cmd = [sys.executable, "-m", "nfsd", "--export", f'"{export}" *(rw,no_root_squash,insecure)',
               "--bind", "127.0.0.1", "--port", "0", "--state-dir", self.state, "--no-register",
               "--workers", str(workers)]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=tree, env=dict(os.environ, PYTHONPATH=tree), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.ready_at: float | None = None
        self.port = 0
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = _LISTENING.match(line)
            if m:
                self.port = int(m.group(1))
                break
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("pysfsd: index ready") and self.ready_at is None:
                self.ready_at = time.monotonic() - self.t0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.state, ignore_errors=True)


def _retrying(call: Any, retry: float, jukebox: list[int]) -> Any:
    while True:
        status, res = call()
        if status != nfsstat3.NFS3ERR_JUKEBOX:
            return status, res
        jukebox[0] += 1
        time.sleep(retry)


def one(tree: str, export: str, query: bytes, retry: float, workers: int, wait_ready: bool) -> dict[str, Any]:
    run = Run(tree, export, workers)
    jukebox = [0]
    try:
        with RpcClient(run.port) as rpc:
            d = rpc.mount(os.fsencode(export))
            status = nfsstat3.NFS3_OK
            for name in query.split(b"/"):
                status, res = _retrying(lambda: rpc.nfs(3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(d), name))),
                                        retry, jukebox)
                if status != nfsstat3.NFS3_OK:  # (a half-built index said NOENT: the user sees that)
                    break
                d = bytes(res.object.data)
            else:
                status, res = _retrying(
                    lambda: rpc.nfs(17, nfs3.READDIRPLUS3args.cls(fh(d), 0, bytes(8), 4096, 32768)), retry, jukebox)
            answered = time.monotonic() - run.t0
            deadline = time.monotonic() + (300 if wait_ready else 0)
            while run.ready_at is None and time.monotonic() < deadline:
                time.sleep(0.05)
        return {"answer": answered, "jukebox": jukebox[0], "status": nfsstat3.values(status).name,
                "ready": run.ready_at or float("nan")}
    finally:
        run.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", required=True)
    ap.add_argument("--files", type=int, default=50000, help="files of the export, if it is made here")
    ap.add_argument("--trees", default="new=.", help="name=path,... (interleaved)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--query", default="ext:/c", help="the query directory, below the export")
    ap.add_argument("--retry", type=float, default=5.0, help="seconds before a JUKEBOX is retried")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--wait-ready", action="store_true", help="also wait for (and print) ``index ready``")
    args = ap.parse_args()
    make_export(Path(args.export), args.files)
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, path in trees.items():
            res = one(os.path.abspath(path), args.export, os.fsencode(args.query), args.retry, args.workers, args.wait_ready)
            results[name].append(res)
            print(f"round {r + 1} {name:>8}: first answer {res['status']} {res['answer']:6.2f} s after"
                  f" {res['jukebox']} JUKEBOX; index ready at {res['ready']:6.2f} s", flush=True)
    for name, rs in results.items():
        print(f"{name:>8}: median first answer {statistics.median(x['answer'] for x in rs):6.2f} s,"
              f" JUKEBOX {sum(x['jukebox'] for x in rs)} in all,"
              f" not NFS3_OK {sum(x['status'] != 'NFS3_OK' for x in rs)},"
              f" median index ready {statistics.median(x['ready'] for x in rs):6.2f} s")


if __name__ == "__main__":
    main()
