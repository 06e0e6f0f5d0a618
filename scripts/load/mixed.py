#!/usr/bin/env python3
"""Mixed NFSv3 load: many clients, many calls in flight, every reply checked, memory watched.

N TCP connections (clients) each keep M calls in flight, drawing each next operation from a
weighted mix of metadata (GETATTR, LOOKUP, ACCESS, READDIRPLUS of 1000 entries, CREATE+REMOVE,
SETATTR, RENAME+LOOKUP) and data (READ 4 KiB and 64 KiB compared with the file on the host,
WRITE+COMMIT+READ back) over the load generator's fixture tree, for ``--seconds``.  Every
``--interval`` it prints ops/s (total and per op), p50/p99 latency and the server's VmRSS; a
client with no reply for ``--stall`` seconds is a stalled client.  At the end: totals, errors,
memory first/last/max and whether it stayed flat.  Exits 1 on any error, stall, unanswered
call, server traceback or memory growth beyond ``--max-growth``.

    python scripts/load/mixed.py                          # 64 x 32 for 300 s, own server
    python scripts/load/mixed.py --clients 16 --depth 8 --seconds 15 --interval 5
    python scripts/load/mixed.py --port 2049 --pid PID --export /srv/x   # a running pysfsd
    python scripts/load/mixed.py --mix getattr=1,write_verify=1

A running server must export ``--export`` to 127.0.0.1 with ``no_root_squash`` (the generator
calls as root and chmods the files it made).  Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadcli import doc_parser  # noqa: E402  (first: it sets the import paths)

from driver import CRED, HOST  # noqa: E402
from engine import LoadReport, LoadRun, LoadSettings, server_memory_now  # noqa: E402
from loadgen import discover, prepare_process  # noqa: E402
from mixops import MIX_DIR, MixHandles, SlotContext, build_mix_fixture, parse_mix, slot_file_name  # noqa: E402
from protocol import nfs3  # noqa: E402
from protocol.nfs3 import NFS3, nfsstat3  # noqa: E402
from nfsd.rpc.client import connect  # noqa: E402
from servers import Pysfsd  # noqa: E402
from nfsd.workers import default_count  # noqa: E402
from checked_ops import ConnContext  # noqa: E402
from workload import BIG_NAME, Handles, build_fixture  # noqa: E402

DEFAULT_ROOT = Path("/tmp/load/mixed")


async def lookup_mix_handles(port: int, root: bytes, clients: int, depth: int) -> MixHandles:
    """LOOKUP EXPORT/mix and every slot's file, pipelined on one connection."""
    conn = await connect(HOST, port, NFS3, CRED)
    try:
        async def lookup(dir_fh: bytes, name: bytes) -> bytes:
            status, body = await conn.call(3, nfs3.LOOKUP3args(nfs3.diropargs3(nfs3.nfs_fh3(dir_fh), name)))
            if status != 0:
                raise RuntimeError(f"LOOKUP {name.decode()}: {nfsstat3.values(status).name}")
            return body.object.data
        mix_dir = await lookup(root, MIX_DIR)
        keys = [(c, s) for c in range(clients) for s in range(depth)]
        found = await asyncio.gather(*(lookup(mix_dir, slot_file_name(c, s, False)) for c, s in keys))
    finally:
        conn.close()
    return MixHandles(mix_dir, dict(zip(keys, found)))


def slot_contexts(handles: Handles, mix: MixHandles, big: bytes, clients: int):
    """The context factory: one ConnContext per connection, shared by its slots."""
    per_conn: dict[int, ConnContext] = {}

    def make(conn: int, slot: int) -> SlotContext:
        if conn not in per_conn:
            per_conn[conn] = ConnContext(handles, 0, conn, clients)
        return SlotContext(per_conn[conn], conn, slot, big=big, mix=mix)
    return make


def server_tracebacks(log: Path | None) -> int:
    if log is None or not log.exists():
        return 0
    return log.read_text(errors="replace").count("Traceback")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser(__doc__)
    parser.add_argument("--clients", type=int, default=64, help="TCP connections (default 64)")
    parser.add_argument("--depth", type=int, default=32, help="calls in flight per connection (default 32)")
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the run (default 300)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per printed line (default 10)")
    parser.add_argument("--stall", type=float, default=10.0,
                        help="a client with no reply for this long is stalled (default 10 s)")
    parser.add_argument("--warmup", type=float,
                        help="the memory baseline is the first sample after this many seconds (default: a "
                             "fifth of the run, at least 30 s: bounded caches fill up first)")
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="VmRSS growth over the baseline that fails the run (default 0.10; <0: not checked)")
    parser.add_argument("--mix", default="default", help="op=weight,... (default: every op but churn)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help=f"export ROOT/export and server state (default {DEFAULT_ROOT})")
    parser.add_argument("--port", type=int, default=0, help="load a server already on this port (NFS and MOUNT)")
    parser.add_argument("--workers", type=int, default=default_count(), metavar="N",
                        help="the server's --workers (default %(default)s: its own default, the usable cores "
                             "or PYSFSD_WORKERS); its memory is every process's summed, PSS beside it")
    parser.add_argument("--pid", type=int, help="that server's pid, for its memory")
    parser.add_argument("--export", type=Path, help="that server's export (default ROOT/export)")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--jsonl", type=Path, help="append each interval here as a JSON line, as it ends")
    args = parser.parse_args(argv)
    try:
        args.weights = parse_mix(args.mix)
    except ValueError as exc:
        parser.error(str(exc))
    if min(args.clients, args.depth) < 1 or args.seconds <= 0 or args.interval <= 0:
        parser.error("--clients, --depth, --seconds and --interval must be positive")
    args.export = (args.export or args.root / "export").resolve()
    if args.warmup is None:
        args.warmup = max(30.0, args.seconds / 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_process()
    build_fixture(args.export, args.clients)
    build_mix_fixture(args.export, args.clients, args.depth)
    with contextlib.ExitStack() as stack:
        log = None
        if args.port:
            port, pid = args.port, args.pid
        else:
            server = stack.enter_context(Pysfsd(args.export, args.root / "run", workers=args.workers))
            port, pid, log = server.port, server.pid, server.log_path
            print(f"pysfsd: pid {pid}, 127.0.0.1:{port}, export {args.export}, log {log}", flush=True)
        target, warnings = discover("pysfsd", port, port, args.export, args.clients, pid)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        mix = asyncio.run(lookup_mix_handles(port, target.handles.root, args.clients, args.depth))
        big = (args.export / BIG_NAME.decode()).read_bytes()
        settings = LoadSettings(args.clients, args.depth, args.interval, args.stall, args.warmup,
                                None if args.max_growth < 0 else args.max_growth)
        run = LoadRun(port, slot_contexts(target.handles, mix, big, args.clients), args.weights,
                      settings, pid=pid, jsonl=args.jsonl)
        if pid:
            print(f"server memory at rest: {server_memory_now(pid)}", flush=True)
        print(f"mixed load: {args.clients} clients x {args.depth} in flight for {args.seconds:g} s, "
              f"mix {','.join(f'{k}={v}' for k, v in args.weights.items())}", flush=True)
        report: LoadReport = asyncio.run(run.run(args.seconds))
    tracebacks = server_tracebacks(log)  # the server has stopped: its shutdown counts too
    if tracebacks:
        report.reasons[f"server log: {tracebacks} tracebacks ({log})"] = tracebacks
        report.errors += tracebacks
    run.print_summary(report)
    if args.json:
        args.json.write_text(report.to_json() + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
