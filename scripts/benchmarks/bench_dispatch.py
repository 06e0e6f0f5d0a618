"""Micro-benchmark of the per-call path every NFS procedure shares, in one process.

A whole server (``NfsServer``: dispatcher, export guard, acting as the caller, duplicate-
request cache, handlers, LocalFS on a scratch export) is built but not started: call records
are handed straight to ``Dispatcher.dispatch`` in pipelined bursts of ``--burst`` calls, as
the TCP transport does, so the figures are the server's own CPU per call without the
network, the event loop or a client sharing the machine.  Steadier than the load generator
on a busy machine, for comparing trees: run it with ``PYTHONPATH`` set to another checkout.

    python scripts/benchmarks/bench_dispatch.py [--calls N] [--rounds R] [--ops null,getattr,setattr]
    python scripts/benchmarks/bench_dispatch.py --profile setattr   # cProfile of one op
    python scripts/benchmarks/bench_dispatch.py --ops setattr --shared-drc  # the workers' DRC
    python scripts/benchmarks/bench_dispatch.py --ops create,remove --async-export --burst 1 --evict 8
    BENCH_SORT=cumtime BENCH_TOP=60 python scripts/benchmarks/bench_dispatch.py --ops create,remove \
        --async-export --profile remove   # (the ops before it run unprofiled)

``create`` and ``remove`` give each call a name of its own (the VM's create_1000 and
remove_3000, a lone call each), CREATE then REMOVE of the same names: run ``create`` first.
On a ``sync`` export their replies wait for the directory fsync, which this harness does not
run: hence ``--async-export``.  A run stops at a failed call (``check_reply``): a failure
would be timed as a cheap call.

Prints microseconds per call (the best of ``--rounds`` rounds, and the median).  Not a test:
figures depend on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from nfsd.app import GC_THRESHOLDS, NfsServer, ServerConfig  # noqa: E402
from nfsd.rpc.client import CallEncoder  # noqa: E402
from protocol import nfs3  # noqa: E402
from protocol.nfs3 import NFS3  # noqa: E402
from protocol.rpc import AUTH_SYS, Credentials  # noqa: E402

CLIENT = ("127.0.0.1", 900)
_NO_CHANGE = (nfs3.time_how.DONT_CHANGE, None)


def _sattr(mode: int | None) -> Any:
    return nfs3.sattr3(mode, None, None, None, _NO_CHANGE, _NO_CHANGE)


def build_records(encoder: CallEncoder, root: bytes, file_fh: bytes, names: int = 0) -> dict[str, list[bytes]]:
    """Call records (without the record mark) per operation; calls alternate between two
    argument sets where the operation changes something (as the load generator's do).
    ``create`` and ``remove`` (``names`` of each: each call its own new name, as the VM's
    create_1000 and remove_3000 send them) are consumed in order, not cycled: run ``create``
    before ``remove``, which removes what it made."""
    fh = nfs3.nfs_fh3(file_fh)
    wheres = [nfs3.diropargs3(nfs3.nfs_fh3(root), b"n%d" % i) for i in range(names)]
    how = (nfs3.createmode3.UNCHECKED, nfs3.sattr3(0o644, None, None, None, _NO_CHANGE, _NO_CHANGE))

    def rec(proc: int, args: Any) -> bytes:
        return encoder.record(proc, args)[4:]
    return {
        "null": [rec(0, None)],
        "getattr": [rec(1, nfs3.GETATTR3args(fh))],
        "access": [rec(4, nfs3.ACCESS3args(fh, 0x3F))],
        "setattr": [rec(2, nfs3.SETATTR3args(fh, _sattr(mode), None)) for mode in (0o600, 0o644)],
        "lookup": [rec(3, nfs3.LOOKUP3args(nfs3.diropargs3(nfs3.nfs_fh3(root), b"file")))],
        # A name that is not there: the VM's create phase looks each new name up first.
        "lookupmiss": [rec(3, nfs3.LOOKUP3args(nfs3.diropargs3(nfs3.nfs_fh3(root), b"absent")))],
        "create": [rec(8, nfs3.CREATE3args(where, how)) for where in wheres],
        "remove": [rec(12, nfs3.REMOVE3args(where)) for where in wheres],
    }

CONSUMED = ("create", "remove")  # each record served once, in order (``build_records``)
EXPECTED_STATUS = {"lookupmiss": 2}  # NFS3ERR_NOENT: the answer that op is timed for (else NFS3_OK)


def with_xid(record: bytes, xid: int) -> bytes:
    return xid.to_bytes(4, "big") + record[4:]


def run(server: NfsServer, records: list[bytes], calls: int, burst: int, first_xid: int,
        evict: bytearray | None = None, first: int = 0, status: int = 0) -> float:
    """Seconds of this process's CPU for ``calls`` calls served in bursts of ``burst``
    (``evict``: each burst cold, see ``run_cold``), from record ``first`` on; each answered
    with NFS status ``status``."""
    d = server.dispatcher
    dispatch, begin, end = d.dispatch, d.begin_burst, d.end_burst
    # Distinct xids, as a client sends them (the DRC keeps one entry per call), made up front.
    todo = [with_xid(records[(first + i) % len(records)], first_xid + i) for i in range(calls)]
    if evict is not None:
        return run_cold(dispatch, begin, end, todo, burst, evict, status)
    start = time.process_time()
    for i in range(0, calls, burst):
        begin()
        for record in todo[i:i + burst]:
            reply = dispatch(record, CLIENT, 4)
        if end() is not None:
            raise RuntimeError("a burst's replies were held")
    elapsed = time.process_time() - start
    check_reply(reply, status)
    return elapsed


def check_reply(reply: Any, status: int = 0) -> None:
    """A failed call would be timed as a cheap one: the last reply of a burst or run must be
    an accepted call whose NFS status (after the 4 bytes reserved for the record mark and an
    empty AUTH_NONE verifier) is ``status`` (NFS3_OK; NULL's reply ends before it)."""
    if not isinstance(reply, (bytes, bytearray)):
        raise RuntimeError(f"call answered {reply!r} (offloaded or dropped)")
    if reply[24:28] != bytes(4) or reply[28:32] not in (b"", status.to_bytes(4, "big")):
        raise RuntimeError(f"call failed: {bytes(reply[:32]).hex()}")


def run_cold(dispatch: Callable[..., Any], begin: Callable[[], None], end: Callable[[], Any],
             todo: list[bytes], burst: int, evict: bytearray, status: int = 0) -> float:
    """As ``run``, but every burst served cold: before it, every cache line of ``evict``
    (larger than the CPU's caches) is read, as another process running during a lone
    client's think time leaves the caches; the burst alone is timed (wall clock, in
    process: no sleep in it).  The median burst's seconds times the bursts: what the code a
    call runs through costs when none of it is cached, which the hot figure hides."""
    times = []
    clock = time.perf_counter
    for i in range(0, len(todo), burst):
        bytes(evict[::64])  # (a read of each 64-byte line; the copy is small and cache-hot)
        start = clock()
        begin()
        for record in todo[i:i + burst]:
            reply = dispatch(record, CLIENT, 4)
        end()
        times.append(clock() - start)
        check_reply(reply, status)
    return statistics.median(times) * len(times)


@contextlib.contextmanager
def bench_server(prefix: str, uid: int = 0, names: int = 0, options: str = "",
                 where: str | None = None) -> Iterator[tuple[NfsServer, dict[str, list[bytes]]]]:
    """A whole ``NfsServer`` on a scratch export holding one 4 KiB file (owned by ``uid``,
    the callers' uid, so that SETATTR as them is allowed), not started, and each operation's
    call records as that caller (``build_records``); shared with bench_transport.py."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=where) as tmp:
        export = os.path.join(tmp, "export")
        os.mkdir(export)
        with open(os.path.join(export, "file"), "wb") as f:
            f.write(b"x" * 4096)
        if uid and os.geteuid() == 0:  # the caller's own file (SETATTR needs ownership)
            os.chown(os.path.join(export, "file"), uid, uid)
            os.chmod(export, 0o755)
            os.chmod(tmp, 0o755)
        server = NfsServer(ServerConfig([f'"{export}" *(rw,no_root_squash,insecure{options})'],
                                        state_dir=os.path.join(tmp, "state"), watch=False, locks=False))
        gc.set_threshold(*GC_THRESHOLDS)  # as the server sets it (NfsServer.start)
        try:
            fs = next(iter(server.exports.values()))
            root = fs.local.root.fh
            file_fh = fs.local.lookup(fs.local.root, b"file").fh
            cred = Credentials(AUTH_SYS, uid, uid, (), b"bench")
            yield server, build_records(CallEncoder(NFS3, cred), root, file_fh, names)
        finally:
            server.store.close()
            server.executor.shutdown()


async def main_async(args: argparse.Namespace) -> int:
    ops = args.ops.split(",")
    if args.profile:  # the ops before it run unmeasured (``remove`` needs ``create``'s files)
        ops = ops[:ops.index(args.profile) + 1] if args.profile in ops else [args.profile]
    names = 2000 + args.calls * (1 if args.profile else args.rounds) if set(ops) & set(CONSUMED) else 0
    with bench_server("bench-dispatch-", args.uid, names, ",async" if args.async_export else "",
                      args.dir) as (server, records):
        if args.shared_drc:  # as worker 0 of two: the duplicate-request cache --workers uses
            from nfsd.rpc.shared_drc import SharedDuplicateRequestCache
            drc = SharedDuplicateRequestCache.create(2)
            drc.attach(0)
            server.dispatcher.drc = drc
        evict = bytearray(args.evict << 20) if args.evict else None
        xid = 1
        for op in ops:
            step = 1 if op in CONSUMED else 0  # (consumed records: each round goes on from the last)
            status = EXPECTED_STATUS.get(op, 0)
            run(server, records[op], 2000, args.burst, xid, status=status)  # warm caches (and the code's first runs)
            xid += 2000
            if args.profile and op != args.profile:
                run(server, records[op], args.calls, args.burst, xid, first=2000 * step, status=status)
                xid += args.calls
                continue
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                run(server, records[op], args.calls, args.burst, xid, first=2000 * step, status=status)
                prof.disable()
                pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "tottime")).print_stats(int(os.environ.get("BENCH_TOP", "25")))
                continue
            per_call = []
            for r in range(args.rounds):
                first = (2000 + r * args.calls) * step
                per_call.append(run(server, records[op], args.calls, args.burst, xid, evict, first, status)
                                / args.calls * 1e6)
                xid += args.calls
            print(f"{op:10s} best {min(per_call):6.2f} us/call  median {statistics.median(per_call):6.2f}"
                  f"  ({args.rounds} x {args.calls} calls, bursts of {args.burst}, uid {args.uid}"
                  f"{f', cold: {args.evict} MiB read before each burst' if evict else ''})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="null,getattr,access,setattr,lookup",
                   help="comma-separated; also lookupmiss, create and remove (remove after create)")
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--burst", type=int, default=8)
    p.add_argument("--uid", type=int, default=0, help="the callers' uid and gid (0: root, not squashed)")
    p.add_argument("--profile", metavar="OP", help="print a cProfile of OP instead of timing")
    p.add_argument("--evict", type=int, default=0, metavar="MIB",
                   help="serve each burst cold: read MIB MiB of other memory before it (median burst)")
    p.add_argument("--async-export", action="store_true",
                   help="an async export (CREATE and REMOVE on a sync one hold their replies for the fsync)")
    p.add_argument("--dir", help="where the scratch export and state go (default: the temporary "
                   "directory); e.g. a journaled loop ext4: a CREATE on this machine's ext4 root (no "
                   "journal) spends 100-600 us in the inode allocator, which hides its Python (tmpfs has "
                   "no inode generations: another CREATE path)")
    p.add_argument("--shared-drc", action="store_true",
                   help="the duplicate-request cache of --workers N (nfsd/rpc/shared_drc.py)")
    args = p.parse_args(argv)
    run_loop: Callable[..., Any] = asyncio.run
    return run_loop(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
