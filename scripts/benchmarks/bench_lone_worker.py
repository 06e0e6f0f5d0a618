#!/usr/bin/env python3
"""Lone calls (one connection, one call at a time: the Linux kernel client's shape) on each
worker of ``--workers 2``, against one worker.

The kernel client's one connection lands on either worker.  This holds ``--pins``
connections open on the *other* worker (each opened, answered one NULL call, and kept if
/proc shows that worker holds it), so the connection-balancing acceptor gives the load
generator's connection to the worker measured; it then runs
``scripts/benchmarks/load_generator/loadgen.py --procs 1 --connections 1 --depth 1`` against
the running server (``--pysfsd-port``/``--pysfsd-pid``) and checks, from the CPU each process
used, that the worker measured did the work.  Rounds alternate one worker, the primary
(worker 0) and the follower (worker 1) on the same two servers, and print ops/s and ops per
server CPU-second (every process of the server summed: what a follower makes the primary
do, such as applying its index notes, counts).

    python scripts/benchmarks/bench_lone_worker.py --rounds 3 --seconds 4 --ops create,remove,setattr,getattr

Loopback only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE / "load_generator")]

from procfs import connection_holder  # noqa: E402
from servers import Pysfsd  # noqa: E402
from nfsd.rpc.client import RpcClient  # noqa: E402

NFS_PROGRAM, NFS_V3 = 100003, 3
CASES = ("one", "primary", "follower")
_WORKER_PIDS = re.compile(rb"pysfsd: (\d+) workers: pids ([\d ]+)")


def worker_pids(server: Pysfsd) -> list[int]:
    """The workers' pids in slot order (worker 0, the primary, first), from the start-up line."""
    found = _WORKER_PIDS.search(server.log_path.read_bytes())
    if found is None:
        raise RuntimeError(f"no workers line in {server.log_path}")
    return [int(p) for p in found[2].split()]


def pin(port: int, on: int, pids: list[int], count: int, attempts: int = 40) -> list[RpcClient]:
    """``count`` connections held by worker pid ``on`` (the others opened on the way are closed)."""
    kept: list[RpcClient] = []
    for _ in range(attempts):
        client = RpcClient(port)
        client.raw_call(NFS_PROGRAM, NFS_V3, 0, cred=None)  # answered: accepted by a worker
        if connection_holder(port, client.sock.getsockname()[1], pids) == on:
            kept.append(client)
            if len(kept) == count:
                time.sleep(1.2)  # the workers publish their connection counts once a second
                return kept
        else:
            client.close()
    for client in kept:
        client.close()
    raise RuntimeError(f"could not pin {count} connections on pid {on}")


def run_loadgen(root: Path, server: Pysfsd, args: argparse.Namespace, ops: list[str], out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "load_generator" / "loadgen.py"), "--root", str(root), "--servers", "pysfsd",
           "--pysfsd-port", str(server.port), "--pysfsd-pid", str(server.pid), "--procs", "1",
           "--connections", "1", "--depth", "1", "--seconds", str(args.seconds), "--ops", ",".join(ops),
           "--json", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["results"]["pysfsd"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default="create,remove,setattr,getattr")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pins", type=int, default=3, help="connections held on the worker not measured")
    parser.add_argument("--attempts", type=int, default=4,
                        help="runs of an operation the wrong worker served, before it is left out of a round")
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench-lone-worker"))
    args = parser.parse_args(argv)
    ops = args.ops.split(",")
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {c: {op: [] for op in ops} for c in CASES}
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, workers in (("one", 1), ("two", 2)):
            root = args.root / name
            (root / "pysfsd").mkdir(parents=True, exist_ok=True)
            servers[name] = (root, stack.enter_context(Pysfsd(root / "pysfsd", root / "run", workers=workers)))
        two_root, two = servers["two"]
        pids = worker_pids(two)
        print(f"one worker: pid {servers['one'][1].pid}; two workers: parent {two.pid}, primary {pids[0]}, "
              f"follower {pids[1]}", flush=True)
        for round_number in range(args.rounds):
            for case in CASES:
                root, server = servers["one"] if case == "one" else servers["two"]
                results: dict = {}
                todo = list(ops)
                for attempt in range(args.attempts):
                    pins: list[RpcClient] = []
                    if case != "one":
                        pins = pin(two.port, pids[1] if case == "primary" else pids[0], pids, args.pins)
                    # REMOVE removes what CREATE made in the same run: run it again with CREATE
                    runs = [op for op in ops if op in todo or (op == "create" and "remove" in todo)]
                    try:
                        got = run_loadgen(root, server, args, runs, root / f"round{round_number}-{case}.json")
                    finally:
                        for client in pins:
                            client.close()
                    for op in todo:
                        if not got[op]["ops_per_s"]:
                            continue
                        split = got[op].get("server_cpu_pct_by_process") or []
                        # the acceptor defers to the less busy worker for 2 ms only: on a busy
                        # machine the pinned one may take the connection after all; run it again
                        if case == "one" or (len(split) == 3 and split[1 if case == "primary" else 2] > split[
                                2 if case == "primary" else 1]):
                            results[op] = got[op]
                    todo = [op for op in todo if op not in results]
                    if not todo:
                        break
                for op in todo:
                    print(f"round {round_number + 1} {case:9} {op:9} the other worker served it in "
                          f"{args.attempts} attempts: left out", flush=True)
                for op in results:
                    r = results[op]
                    figures[case][op].append((r["ops_per_s"], r["ops_per_server_cpu"] or 0.0))
                    split = r.get("server_cpu_pct_by_process") or []
                    where = "" if case == "one" else f"  CPU parent/w0/w1 {' / '.join(f'{c:.0f}%' for c in split)}"
                    print(f"round {round_number + 1} {case:9} {op:9} {r['ops_per_s']:>8,.0f} ops/s "
                          f"{r['ops_per_server_cpu'] or 0:>8,.0f} per CPU-s{where}", flush=True)
    print("\nmedians: ops/s | ops per server CPU-second")
    print(f"{'operation':10}" + "".join(f"{c:>22}" for c in CASES) + f"{'follower/primary':>18}{'follower/one':>14}")
    for op in ops:
        med = {c: tuple(sorted(x[i] for x in figures[c][op])[len(figures[c][op]) // 2] if figures[c][op] else 0.0
                        for i in (0, 1)) for c in CASES}
        cells = "".join(f"{f'{med[c][0]:,.0f} | {med[c][1]:,.0f}':>22}" for c in CASES)
        ratio_p = med["follower"][1] / med["primary"][1] if med["primary"][1] else 0.0
        ratio_o = med["follower"][1] / med["one"][1] if med["one"][1] else 0.0
        print(f"{op:10}{cells}{ratio_p:>18.2f}{ratio_o:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
