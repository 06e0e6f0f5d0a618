#!/usr/bin/env python3
"""A directory's READDIRPLUS listing, first and again: the server's CPU per listing.

The VM's ls_l_2000_cold lists, with ``ls -l``, 2,000 files created long before: the first
listing of that directory, so each entry is stat-ed, its handle made and its item encoded;
ls_l_2000_again finds them encoded (``nfsd/nfs3/dirlist.py`` EntryCache, trusted
``DEFAULT_MAX_AGE`` seconds).  This creates ``--files`` files through NFS in a new
directory of a pysfsd it starts (an async export, the default workers), waits, then lists
the directory once per ``--passes`` name, ``--gap`` seconds apart (past the cache's age:
every pass cold), in pages the Linux client asks for (dircount and maxcount 65,536).
Prints per pass the calls, the entries, the wall time and the server's CPU (every thread
of every process, from /proc/PID/task/*/schedstat).  ``--tree NAME=PATH``: also a server
run from checkout PATH, the servers' passes interleaved.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE / "load_generator"), str(HERE.parent / "load")]  # driver needs scripts/load

from driver import server_pids  # noqa: E402
from servers import Pysfsd, from_tree  # noqa: E402
from tests.nfs3_helpers import ZERO_VERF, create_ok, mkdir_ok, readdirplus_raw  # noqa: E402
from tests.rpc_client import RpcClient  # noqa: E402

PAGE = 65536  # the Linux client's dircount and maxcount for a READDIRPLUS (a traced VM run)


def server_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its workers, every thread, from schedstat (nanoseconds:
    a listing takes tens of ms, utime+stime counts 10 ms ticks)."""
    total = 0
    for p in server_pids(pid):
        for task in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    return total / 1e9


def listing(rpc: Any, d: bytes) -> tuple[int, int]:
    """(calls, entries) of a whole READDIRPLUS listing of ``d``."""
    cookie, verf, calls, entries = 0, ZERO_VERF, 0, 0
    while True:
        (status, res), _ = readdirplus_raw(rpc, d, cookie, verf, PAGE, PAGE)
        calls += 1
        if status != 0:
            raise RuntimeError(f"READDIRPLUS: status {status}")
        items = res.reply.entries
        entries += len(items)
        if items:
            cookie = items[-1].cookie
        verf = res.cookieverf
        if res.reply.eof:
            return calls, entries


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--passes", default="cold,again", help="comma list of pass names")
    p.add_argument("--gap", type=float, default=0.5, help="seconds between passes")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the creates and the first pass")
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    args = p.parse_args()
    trees: list[tuple[str, Path | None]] = [("this", None)]
    trees += [(name, Path(path)) for name, _, path in (t.partition("=") for t in args.tree)]
    work = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    try:
        with ExitStack() as stack:
            served = []
            for name, tree in trees:
                export = work / f"export-{name}"
                export.mkdir()
                with from_tree(tree):
                    srv = stack.enter_context(Pysfsd(export, work / f"state-{name}", options="rw,no_root_squash,insecure,async"))
                rpc = stack.enter_context(RpcClient(srv.port))
                d = mkdir_ok(rpc, rpc.mount(str(export).encode()), b"l")
                for i in range(args.files):
                    create_ok(rpc, d, b"n%d" % i)
                assert srv.pid is not None
                served.append((name, srv.pid, rpc, d))
            time.sleep(args.settle)
            for what in args.passes.split(","):
                for name, pid, rpc, d in served:
                    c0, t0 = server_cpu(pid), time.perf_counter()
                    calls, entries = listing(rpc, d)
                    c1, t1 = server_cpu(pid), time.perf_counter()
                    print(f"{name:8} {what:8} {calls:4} calls {entries:7} entries  wall {1000 * (t1 - t0):8.1f} ms"
                          f"  server CPU {1000 * (c1 - c0):7.1f} ms ({1e6 * (c1 - c0) / max(entries, 1):.1f} us an entry)")
                    time.sleep(args.gap)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
