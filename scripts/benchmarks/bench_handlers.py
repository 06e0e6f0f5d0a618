"""Micro-benchmark of the changing calls (CREATE, REMOVE, RENAME, SETATTR, WRITE) in one
process, as bench_dispatch.py does for the shared path: a whole ``NfsServer`` on a scratch
export, not started, call records handed to ``Dispatcher.dispatch`` in pipelined bursts;
a burst whose replies wait for its directory fsync (a sync export) is awaited.  Prints
this process's CPU microseconds per call (every thread's).  For
system calls per call run it under ``strace -c -f`` twice with different ``--calls`` and
divide the difference.

    python scripts/benchmarks/bench_handlers.py [--calls N] [--rounds R] [--ops create,remove]
    python scripts/benchmarks/bench_handlers.py --profile create

Not a test: figures depend on the machine.  Compare trees with ``PYTHONPATH``.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from nfsd.app import GC_THRESHOLDS, NfsServer, ServerConfig  # noqa: E402
from nfsd.rpc.client import CallEncoder  # noqa: E402
from protocol import nfs3  # noqa: E402
from protocol.nfs3 import NFS3  # noqa: E402
from protocol.rpc import AUTH_SYS, Credentials  # noqa: E402

CLIENT = ("127.0.0.1", 900)
_NO_CHANGE = (nfs3.time_how.DONT_CHANGE, None)
WRITE_SIZE = 4096


def _sattr(mode: int | None) -> Any:
    return nfs3.sattr3(mode, None, None, None, _NO_CHANGE, _NO_CHANGE)


class Calls:
    """Call records per operation, each call distinct where it must be (a name per CREATE
    and REMOVE, renames back and forth, SETATTR modes alternating, as the load generator)."""

    def __init__(self, encoder: CallEncoder, scratch: bytes, file_fh: bytes) -> None:
        self.enc, self.scratch, self.file = encoder, nfs3.nfs_fh3(scratch), nfs3.nfs_fh3(file_fh)
        self.created = 0
        self.removed = 0
        self.xid = 1

    def _rec(self, proc: int, args: Any) -> bytes:
        self.xid += 1
        rec = self.enc.record(proc, args)[4:]
        return self.xid.to_bytes(4, "big") + rec[4:]

    def make(self, op: str, n: int) -> list[bytes]:
        out = []
        for i in range(n):
            if op == "create":
                self.created += 1
                where = nfs3.diropargs3(self.scratch, b"c%d" % self.created)
                out.append(self._rec(8, nfs3.CREATE3args(where, (nfs3.createmode3.GUARDED, _sattr(0o644)))))
            elif op == "remove":
                self.removed += 1
                out.append(self._rec(12, nfs3.REMOVE3args(nfs3.diropargs3(self.scratch, b"c%d" % self.removed))))
            elif op == "rename":
                k, side = i % 8, (i // 8) % 2
                a, b = nfs3.diropargs3(self.scratch, b"r%d-%d" % (k, side)), nfs3.diropargs3(self.scratch, b"r%d-%d" % (k, 1 - side))
                out.append(self._rec(14, nfs3.RENAME3args(a, b)))
            elif op == "setattr":
                out.append(self._rec(2, nfs3.SETATTR3args(self.file, _sattr(0o600 if i & 1 else 0o644), None)))
            elif op == "touch":  # both times to the server's (touch, utimes(NULL))
                now = (nfs3.time_how.SET_TO_SERVER_TIME, None)
                out.append(self._rec(2, nfs3.SETATTR3args(self.file, nfs3.sattr3(None, None, None, None, now, now),
                                                          None)))
            elif op in ("write", "write1m"):  # UNSTABLE, over the first 64 blocks of the file
                size = WRITE_SIZE if op == "write" else 1 << 20
                out.append(self._rec(7, nfs3.WRITE3args(self.file, (i % 64) * size, size,
                                                        nfs3.stable_how.UNSTABLE, b"w" * size)))
            else:
                raise SystemExit(f"unknown op {op}")
        return out


async def run(server: NfsServer, todo: list[bytes], burst: int) -> float:
    """CPU seconds of this process (every thread) for the calls, served in bursts of
    ``burst``.  (Not user and system apart: Linux splits them by clock-tick samples.)"""
    d = server.dispatcher
    dispatch, begin, end = d.dispatch, d.begin_burst, d.end_burst
    start = time.process_time()
    for i in range(0, len(todo), burst):
        begin()
        for record in todo[i:i + burst]:
            reply = dispatch(record, CLIENT, 4)
            if not isinstance(reply, (bytes, bytearray)):
                raise RuntimeError(f"call answered {reply!r} (offloaded or dropped)")
        held = end()
        if held is not None:
            await held
    return time.process_time() - start


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-handlers-", dir=args.dir) as tmp:
        export = os.path.join(tmp, "export")
        os.makedirs(os.path.join(export, "scratch"))
        with open(os.path.join(export, "file"), "wb") as f:
            f.write(b"x" * 4096)
        for k in range(8):
            open(os.path.join(export, "scratch", "r%d-0" % k), "wb").close()
        opts = "rw,no_root_squash,insecure" + (",async" if args.async_export else "")
        server = NfsServer(ServerConfig([f'"{export}" *({opts})'], state_dir=os.path.join(tmp, "state"),
                                        watch=False, locks=False))
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            fs = next(iter(server.exports.values()))
            local = fs.local
            scratch = local.lookup(local.root, b"scratch").fh
            file_fh = local.lookup(local.root, b"file").fh
            calls = Calls(CallEncoder(NFS3, Credentials(AUTH_SYS, 0, 0, (), b"bench")), scratch, file_fh)
            ops = args.ops.split(",")
            results: dict[str, list[float]] = {op: [] for op in ops}
            for op in ops:  # warm caches
                await run(server, calls.make(op, 500), args.burst)
            for _ in range(args.rounds):
                for op in ops:
                    todo = calls.make(op, args.calls)
                    if args.profile == op:
                        prof = cProfile.Profile()
                        prof.enable()
                        await run(server, todo, args.burst)
                        prof.disable()
                        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
                        continue
                    results[op].append(await run(server, todo, args.burst) / len(todo) * 1e6)
            for op, per_call in results.items():
                if per_call:
                    print(f"{op:8s} best {min(per_call):6.2f} us/call  median {statistics.median(per_call):6.2f}"
                          f"  ({args.rounds} x {args.calls}, bursts of {args.burst})")
        finally:
            server.store.close()
            server.executor.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="create,setattr,rename,write,remove")
    p.add_argument("--calls", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--burst", type=int, default=8)
    p.add_argument("--async-export", action="store_true", help="an async export: no directory fsyncs")
    p.add_argument("--dir", default=None, help="where the scratch export goes (default: $TMPDIR)")
    p.add_argument("--profile", metavar="OP", help="print a cProfile of OP instead of timing it")
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
