"""A server's memory per process at rest and after a load, trees side by side; not a test.

    python scripts/benchmarks/bench_rest_memory.py --tree base=/tmp/base --tree new=. \\
        [--rounds 3] [--rest 20] [--seconds 2] [--after 7] [--ops getattr,lookup,create,readdirplus]
        [--export DIR --seconds 0]

Per round and tree (the trees' order reversed every other round, so neither always runs
first on a machine other work shares): start ``python -m nfsd`` from the tree with its
default ``--workers`` on the load generator's fixture (``ROOT/pysfsd``, fresh state each
time), wait for ``index ready`` and ``--rest`` seconds (past the first quiet spell, when a
worker trims its heap and closes what only extraction holds), read every process's
``smaps_rollup``; then run ``loadgen.py --pysfsd-port`` against it (``--ops``, ``--seconds``
each: ops/s and ops per server CPU-second), and read the memory again 1 second and
``--after`` seconds later.  Prints, per tree, the medians over the rounds: VmRSS / PSS / USS
in MiB of the parent, the primary, a follower and their sum at each point, then each op's
ops/s and ops per server CPU-second.  ``--json FILE`` keeps every round.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "load_generator"))
sys.path.insert(0, str(HERE))
from bench_scan_memory import children, memory  # noqa: E402
from servers import Pysfsd, from_tree  # noqa: E402
from workload import build_fixture  # noqa: E402

ROLES = ("parent", "primary", "follower")
POINTS = ("rest", "load+1s", "load+after")
KINDS = ("Rss", "Pss", "USS")


def by_role(pid: int) -> dict[str, dict[str, float]]:
    """MiB by kind of the parent, the primary (the first worker forked) and a follower."""
    kids = children(pid)
    out = {"parent": memory(pid)}
    if kids:
        out["primary"] = memory(kids[0])
    if len(kids) > 1:
        out["follower"] = memory(kids[1])
    out["sum"] = {k: round(sum(m[k] for m in out.values()), 1) for k in KINDS}
    return out


def load(root: Path, port: int, pid: int, ops: str, seconds: float) -> dict[str, Any]:
    """One loadgen run against the server: its per-op results (``loadgen.py --json``)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        done = subprocess.run([sys.executable, str(HERE / "load_generator" / "loadgen.py"), "--servers", "pysfsd",
                        "--pysfsd-port", str(port), "--pysfsd-pid", str(pid), "--root", str(root),
                        "--ops", ops, "--seconds", str(seconds), "--json", out.name],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"loadgen failed ({done.returncode}):\n{done.stderr[-4000:]}")
        results: dict[str, Any] = json.loads(Path(out.name).read_text())["results"]["pysfsd"]
        return results


def one_round(name: str, tree: Path, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    export = args.export or root / "pysfsd"
    with from_tree(tree), Pysfsd(export, root / f"{name}-run") as server:
        assert server.pid is not None
        time.sleep(args.rest)
        seen: dict[str, Any] = {"rest": by_role(server.pid)}
        if args.seconds > 0:
            seen["ops"] = load(root, server.port, server.pid, args.ops, args.seconds)
            time.sleep(1.0)
            seen["load+1s"] = by_role(server.pid)
            time.sleep(max(0.0, args.after - 1.0))
            seen["load+after"] = by_role(server.pid)
    return seen


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else float("nan")


def report(runs: dict[str, list[dict[str, Any]]], after: float) -> None:
    for name, rounds in runs.items():
        print(f"{name}: {len(rounds)} round(s), medians, MiB VmRSS / PSS / USS")
        for point in POINTS:
            if point not in rounds[0]:
                continue
            label = point.replace("after", f"{after:g}s")
            cells = []
            for role in (*ROLES, "sum"):
                if role not in rounds[0][point]:
                    continue
                figures = "/".join(f"{median([r[point][role][k] for r in rounds]):.1f}" for k in KINDS)
                cells.append(f"{role} {figures}")
            print(f"  {label:>11}: " + "  ".join(cells))
        if "ops" in rounds[0]:
            for op in rounds[0]["ops"]:
                rate = median([r["ops"][op]["ops_per_s"] for r in rounds])
                per_cpu = median([r["ops"][op]["ops_per_server_cpu"] or 0.0 for r in rounds])
                print(f"  {op:>11}: {rate:,.0f} ops/s, {per_cpu:,.0f} ops per server CPU-second")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                    help="a source tree to run the server from (repeat: base and new)")
    ap.add_argument("--root", type=Path, help="fixture and state (default: a temporary directory)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rest", type=float, default=20.0, help="seconds idle after index ready")
    ap.add_argument("--seconds", type=float, default=2.0, help="loadgen seconds per op (0: no load)")
    ap.add_argument("--after", type=float, default=7.0, help="seconds after the load, last reading")
    ap.add_argument("--ops", default="getattr,lookup,create,readdirplus")
    ap.add_argument("--export", type=Path, help="serve this tree instead of loadgen's fixture (at rest only: "
                                                 "give --seconds 0)")
    ap.add_argument("--json", type=Path, help="also save every round here")
    args = ap.parse_args()
    if args.export and args.seconds > 0:
        ap.error("--export measures at rest only: give --seconds 0 (the load runs on loadgen's fixture)")
    trees = [(n, Path(p).resolve()) for n, _, p in (t.partition("=") for t in args.tree)]
    with tempfile.TemporaryDirectory(prefix="bench-rest-memory-") as scratch:
        root = (args.root or Path(scratch)).resolve()
        if not args.export:
            build_fixture(root / "pysfsd", 8)   # loadgen's: 8 connections' write files
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
        for i in range(args.rounds):
            for name, tree in (trees if i % 2 == 0 else trees[::-1]):
                runs[name].append(one_round(name, tree, root, args))
                print(f"round {i + 1} {name}: at rest {runs[name][-1]['rest']['sum']}", file=sys.stderr)
    report(runs, args.after)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
