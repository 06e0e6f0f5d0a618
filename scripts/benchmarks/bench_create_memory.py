"""A server's memory per process as the files it created grow in number; not a test.

    python scripts/benchmarks/bench_create_memory.py --tree base=/tmp/base --tree new=. \\
        [--steps 10000,100000] [--rest 20] [--after 7] [--late 40] [--clients 8] [--rounds 1]
        [--options rw,no_root_squash,insecure,async] [--snapshots DIR] [--json FILE]

Per round and tree (order reversed every other round): start ``python -m nfsd`` from the
tree (default ``--workers``) on an empty export of ``--clients`` directories, wait
``--rest`` seconds after ``index ready`` and read every process's memory: VmRSS / PSS / USS
(``smaps_rollup``), RssAnon / RssFile (``status``) and, per kind of mapping, the resident
MiB (``smaps``: ``[heap]``, other anonymous mappings, LMDB's ``data.mdb``, other files).
Then CREATE files (GUARDED, one connection per directory, one call at a time each) until
the total reaches each of ``--steps`` in turn, and read again ``--after`` seconds (and
``--late`` seconds, past the quiet spell's heap trim) after each step.  Prints the figures
per step, and each step's CREATEs per second and per server CPU-second.  ``async`` in
``--options`` spares the fsync of each CREATE's directory (else about 100 a second).
``--snapshots DIR`` runs the server with ``PYSFSD_TRACEMALLOC=DIR`` and sends SIGUSR2 to
each worker at every reading (nfsd/memtrace.py; tracing costs CPU: the rates are then
not comparable).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "load_generator"))
sys.path.insert(0, str(HERE))
from bench_rest_memory import ROLES, by_role  # noqa: E402
from bench_scan_memory import children  # noqa: E402
from servers import Pysfsd, from_tree  # noqa: E402

from nfsd.rpc.client import RpcClient  # noqa: E402
from protocol import mount3, nfs3  # noqa: E402
from protocol.rpc import AUTH_SYS, Credentials  # noqa: E402

ROOT = Credentials(AUTH_SYS, 0, 0, (), b"bench")
_NO_CHANGE = (nfs3.time_how.DONT_CHANGE, None)
_SATTR = nfs3.sattr3.cls(0o644, None, None, None, _NO_CHANGE, _NO_CHANGE)


def status_mib(pid: int) -> dict[str, float]:
    """RssAnon and RssFile in MiB (``/proc/PID/status``): the heap against LMDB's map."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def mappings(pid: int) -> dict[str, float]:
    """Resident MiB by kind of mapping (``/proc/PID/smaps``): ``[heap]`` (glibc's main
    arena), anonymous mappings of 64 MiB (glibc's per-thread arenas), other anonymous ones
    (pymalloc's arenas, large blocks, thread stacks), and file mappings by file name (LMDB's
    maps are the ``*.mdb`` files)."""
    out: dict[str, float] = {}
    label = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else ""
                if name == "[heap]":
                    label = "heap"
                elif not name:
                    label = "anon 64M" if end - start >= 60 << 20 else "anon"
                elif name.startswith("["):
                    label = name
                else:
                    label = os.path.basename(name) if name.endswith(".mdb") else "other files"
            elif head[0] == "Rss:":
                out[label] = round(out.get(label, 0.0) + int(head[1]) / 1024, 1)
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.1}


def reading(pid: int) -> dict[str, Any]:
    seen: dict[str, Any] = by_role(pid)
    kids = children(pid)
    for role, p in zip(ROLES, (pid, *kids)):
        seen[role].update(status_mib(p))
        seen[role]["maps"] = mappings(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the server and its workers."""
    total = 0.0
    for p in (pid, *children(pid)):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def creator(port: int, export: str, index: int, start: int, stop: int, errors: list[str]) -> None:
    """CREATEs ``f<start>`` .. ``f<stop - 1>`` in directory ``d<index>``, one call at a time."""
    with RpcClient(port, cred=ROOT, timeout=60.0) as rpc:
        status, ok = rpc.call(mount3.MOUNT3, 1, export.encode())
        root = nfs3.nfs_fh3.cls(bytes(ok.fhandle))
        status, res = rpc.call(nfs3.NFS3, 3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(root, b"d%d" % index)))
        if status:
            errors.append(f"LOOKUP d{index}: {status}")
            return
        where = nfs3.nfs_fh3.cls(bytes(res.object.data))
        how = (nfs3.createmode3.GUARDED, _SATTR)
        for n in range(start, stop):
            args = nfs3.CREATE3args.cls(nfs3.diropargs3.cls(where, b"f%d" % n), how)
            status, _ = rpc.call(nfs3.NFS3, 8, args)
            if status:
                errors.append(f"CREATE d{index}/f{n}: {status}")
                return


def create_until(port: int, export: Path, clients: int, done: int, total: int) -> None:
    per = [(total - done) // clients + (i < (total - done) % clients) for i in range(clients)]
    errors: list[str] = []
    threads = [threading.Thread(target=creator, args=(port, str(export), i, done + sum(per[:i]),
                                                      done + sum(per[:i + 1]), errors))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("; ".join(errors[:5]))


def snapshot(pid: int) -> None:
    for kid in children(pid):
        os.kill(kid, signal.SIGUSR2)
    time.sleep(3.0)


def one_round(name: str, tree: Path, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    export = root / f"{name}-export"
    shutil.rmtree(export, ignore_errors=True)
    for i in range(args.clients):
        (export / f"d{i}").mkdir(parents=True)
    if args.snapshots:
        os.environ["PYSFSD_TRACEMALLOC"] = str(args.snapshots / name)
    try:
        with from_tree(tree), Pysfsd(export, root / f"{name}-run", options=args.options) as server:
            assert server.pid is not None
            time.sleep(args.rest)
            seen: dict[str, Any] = {"rest": reading(server.pid)}
            if args.snapshots:
                snapshot(server.pid)
            done = 0
            for step in args.steps:
                cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
                create_until(server.port, export, args.clients, done, step)
                elapsed, cpu = time.monotonic() - t0, cpu_seconds(server.pid) - cpu0
                time.sleep(args.after)
                seen[str(step)] = reading(server.pid)
                if args.late:
                    time.sleep(max(0.0, args.late - args.after))
                    seen[f"{step}+late"] = reading(server.pid)
                seen[str(step)]["rate"] = round((step - done) / elapsed)
                seen[str(step)]["per_cpu"] = round((step - done) / cpu) if cpu else 0
                if args.snapshots:
                    snapshot(server.pid)
                done = step
                print(f"{name} {step}: {seen[str(step)]['sum']} {seen[str(step)]['rate']}/s "
                      f"{seen[str(step)]['per_cpu']}/cpu-s; primary's mappings "
                      f"{seen[str(step)]['primary']['maps']}", file=sys.stderr)
    finally:
        os.environ.pop("PYSFSD_TRACEMALLOC", None)
        shutil.rmtree(export, ignore_errors=True)
    return seen


def report(runs: dict[str, list[dict[str, Any]]], steps: list[int]) -> None:
    kinds = ("Rss", "Pss", "USS", "RssAnon", "RssFile")
    for name, rounds in runs.items():
        print(f"{name}: {len(rounds)} round(s), medians, MiB VmRSS / PSS / USS / RssAnon / RssFile")
        for point in ("rest", *(p for s in steps for p in (str(s), f"{s}+late"))):
            if point not in rounds[0]:
                continue
            cells = []
            for role in (*ROLES, "sum"):
                if role not in rounds[0][point]:
                    continue
                figures = "/".join(f"{statistics.median([r[point][role].get(k, 0.0) for r in rounds]):.1f}"
                                   for k in kinds if k in rounds[0][point][role])
                cells.append(f"{role} {figures}")
            extra = ""
            if point in map(str, steps):
                rate = statistics.median([r[point]["rate"] for r in rounds])
                per_cpu = statistics.median([r[point]["per_cpu"] for r in rounds])
                extra = f"  ({rate:,.0f} CREATE/s, {per_cpu:,.0f} per server CPU-s)"
            print(f"  {point:>7}: " + "  ".join(cells) + extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--root", type=Path, help="exports and state (default: a temporary directory)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--rest", type=float, default=20.0, help="seconds idle after index ready")
    ap.add_argument("--after", type=float, default=7.0, help="seconds idle after each step, then a reading")
    ap.add_argument("--late", type=float, default=0.0,
                    help="also read this many seconds after each step (past the quiet spell's trim)")
    ap.add_argument("--steps", default="10000,100000", help="cumulative numbers of files created")
    ap.add_argument("--clients", type=int, default=8, help="connections creating at once")
    ap.add_argument("--snapshots", type=Path, help="PYSFSD_TRACEMALLOC directory (SIGUSR2 at each reading)")
    ap.add_argument("--options", default="rw,no_root_squash,insecure",
                    help="the export's options (add async: no fsync per CREATE, far more of them)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    trees = [(n, Path(p).resolve()) for n, _, p in (t.partition("=") for t in args.tree)]
    with tempfile.TemporaryDirectory(prefix="bench-create-memory-") as scratch:
        root = (args.root or Path(scratch)).resolve()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
        for i in range(args.rounds):
            for name, tree in (trees if i % 2 == 0 else trees[::-1]):
                runs[name].append(one_round(name, tree, root, args))
    report(runs, args.steps)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
