"""CPU per RENAME and SETATTR as the server pays it, without the network; prints figures.

    python scripts/benchmarks/bench_changes.py [--calls N] [--rounds R] [--files F] [--ops rename,setattr]

The companion of bench_namespace.py (CREATE/REMOVE), with the same started ``NfsServer``
(watcher, directory fsyncs, the handle table's group commit, the index) and the same bursts
of 32 calls through ``Dispatcher.dispatch``: RENAME moves ``--files`` files of one directory
back and forth (``aN`` -> ``bN``, then back), as the load generator's RENAME does; SETATTR
sets the mode of one file, two modes alternated.  Per round: the process's CPU (user +
system, every thread) per call while the calls come, then per call for the index flush
after them.  Compare trees by running this script from each (``PYTHONPATH=TREE`` or the
tree's own copy), alternated.  Not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_namespace import CRED, NO_CHANGE, per_call, report, run, scratch_server  # noqa: E402
from nfsd.rpc.client import CallEncoder  # noqa: E402
from protocol import nfs3  # noqa: E402
from protocol.nfs3 import NFS3  # noqa: E402


class Records:
    """Encoded calls with distinct xids (the duplicate-request cache keeps one entry each)."""

    def __init__(self) -> None:
        self.encoder = CallEncoder(NFS3, CRED)
        self.xid = 0

    def __call__(self, proc: int, args: Any) -> bytes:
        self.xid += 1
        record = self.encoder.record(proc, args)
        return record[:4] + self.xid.to_bytes(4, "big") + record[8:]  # after the record mark


def renames(rec: Records, d: Any, files: int, calls: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < calls:
        for src, dst in ((b"a", b"b"), (b"b", b"a")):
            out += [rec(14, nfs3.RENAME3args(nfs3.diropargs3(d, src + b"%d" % i), nfs3.diropargs3(d, dst + b"%d" % i)))
                    for i in range(files)]
    return out


def make_files(files: int) -> Callable[[str], None]:
    """The files RENAME moves back and forth, made before the server starts."""
    def fill(scratch: str) -> None:
        for i in range(files):
            open(os.path.join(scratch, f"a{i}"), "wb").close()
    return fill


async def bench(ops: list[str], calls: int, rounds: int, files: int, where: str) -> None:
    async with scratch_server(where, "bench-changes-", fill=make_files(files)) as server:
        fs = next(iter(server.exports.values()))
        scratch = os.path.join(fs.local.root_path, "scratch")
        d = fs.local.lookup(fs.local.root, b"scratch")
        dir_fh, file_fh = nfs3.nfs_fh3(d.fh), nfs3.nfs_fh3(fs.local.lookup(d, b"a0").fh)
        rec = Records()
        results: dict[str, list[tuple[float, float]]] = {op: [] for op in ops}
        # whole back-and-forth cycles: every round leaves the names as it found them
        rename_calls = max(2 * files, calls // (2 * files) * 2 * files)
        for _ in range(rounds):
            for op in ops:
                if op == "rename":
                    records = renames(rec, dir_fh, files, rename_calls)
                elif op == "setattr":
                    records = [rec(2, nfs3.SETATTR3args(file_fh, nfs3.sattr3(0o600 if i & 1 else 0o644, None, None,
                                                                                None, NO_CHANGE, NO_CHANGE), None))
                               for i in range(calls)]
                else:
                    raise SystemExit(f"unknown op {op!r}")
                results[op].append(per_call(await run(server, records), len(records)))
        if sorted(os.listdir(scratch)) != sorted(f"a{i}" for i in range(files)):
            raise SystemExit("RENAME failed: the names are not back where they were")
        print(f"{calls} calls x {rounds} rounds, bursts of 32, export in {where}, watcher on; "
              f"CPU per call (µs): total = calls + index flush")
        report(results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="rename,setattr")
    p.add_argument("--calls", type=int, default=4096, help="calls per op and round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--files", type=int, default=64, help="files RENAME moves back and forth")
    p.add_argument("--dir", default="/tmp", help="where the export and state go")
    args = p.parse_args()
    asyncio.run(bench(args.ops.split(","), args.calls, args.rounds, args.files, args.dir))


if __name__ == "__main__":
    main()
