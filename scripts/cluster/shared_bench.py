"""Figures for issue 16's closing note: what sharing state through PostgreSQL costs.

Two pysfsd heads export one plain directory (``--no-watch``: only the change log carries
changes between them) with ``--shared-state`` on a PostgreSQL started here; then:

1. propagation: a file created through head A, until head B's ``ext:/c`` value directory
   answers LOOKUP of it (p50, p99, max over ``--changes`` creates);
2. cost per CREATE: sequential CREATEs through one head, single-host (no
   ``--shared-state``) against shared mode: calls/s, and the head's own CPU (utime+stime
   from /proc) per call, plus PostgreSQL's (all its processes) in shared mode;
3. throughput: ``--clients`` client processes doing CREATEs, all on one head, against the
   same clients split over two heads.

    python scripts/cluster/shared_bench.py [--changes 200] [--creates 2000] [--clients 4] [--no-fsync]

On a plain directory both heads share one kernel, so this measures pysfsd and PostgreSQL,
not CephFS (whose MDS adds its own round trips to every create).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.benchmarks.load_generator.procfs import cpu_seconds
from scripts.benchmarks.load_generator.servers import Pysfsd
from scripts.cluster.postgres import Postgres
from tests.nfs3_helpers import OK, create_ok, look, lookup
from tests.rpc_client import RpcClient

def tree_cpu(pid: int) -> float:
    """CPU of a process and its children (PostgreSQL's backends), those alive now."""
    total = cpu_seconds(pid)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for kid in kids:
        try:
            total += cpu_seconds(int(kid))
        except OSError:
            pass
    return total


def head(export: Path, work: Path, url: str | None) -> Pysfsd:
    args = ("--no-watch", "--no-locks", "--no-register", "--shared-scan-seconds", "0")
    return Pysfsd(export, work, args=args + (("--shared-state", url) if url else ()))


def propagation(a: Pysfsd, b: Pysfsd, export: Path, count: int) -> list[float]:
    with RpcClient(a.port) as ra, RpcClient(b.port) as rb:
        return propagation_between(ra, rb, os.fsencode(export), count)


def propagation_between(ra: RpcClient, rb: RpcClient, export: bytes, count: int) -> list[float]:
    """Seconds until each of ``count`` files created through head A (client ``ra``) shows
    in head B's ``ext:/c`` (client ``rb``); the export holds a directory ``prop``."""
    delays = []
    root = ra.mount(export)
    d = look(ra, root, b"prop")
    create_ok(ra, d, b"seed.c")
    deadline = time.monotonic() + 10
    while lookup(rb, root, b"ext:")[0] != OK or lookup(rb, look(rb, root, b"ext:"), b"c")[0] != OK:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ext_c = look(rb, root, b"ext:", b"c")
    for i in range(count):
        name = b"p%05d.c" % i
        create_ok(ra, d, name)
        t0 = time.monotonic()
        while lookup(rb, ext_c, name)[0] != OK:
            if time.monotonic() - t0 > 10:
                raise RuntimeError(f"{name!r} never reached B")
        delays.append(time.monotonic() - t0)
    return delays


def creates(port: int, export: bytes, dirname: bytes, count: int) -> None:
    with RpcClient(port) as rpc:
        d = look(rpc, rpc.mount(export), dirname)
        for i in range(count):
            create_ok(rpc, d, b"f%06d.c" % i)


def timed(servers: list[Pysfsd], pg: Postgres | None, jobs: list[tuple[int, bytes, bytes, int]]) -> tuple[float, float, float]:
    """(seconds, heads' CPU s, PostgreSQL's CPU s) for running ``jobs`` in parallel processes."""
    cpu0 = [cpu_seconds(s.pid or 0) for s in servers]
    pg0 = tree_cpu(pg._proc.pid) if pg and pg._proc else 0.0
    t0 = time.monotonic()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        pool.starmap(creates, jobs)
    elapsed = time.monotonic() - t0
    cpu = sum(cpu_seconds(s.pid or 0) - c for s, c in zip(servers, cpu0))
    pg_cpu = (tree_cpu(pg._proc.pid) - pg0) if pg and pg._proc else 0.0
    return elapsed, cpu, pg_cpu


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--creates", type=int, default=2000, help="CREATEs per run (split over clients)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--no-fsync", action="store_true",
                    help="PostgreSQL with fsync and synchronous_commit off (what the commit wait costs)")
    opts = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pysfsd-shared-bench-"))
    export = base / "export"
    export.mkdir()
    with Postgres.started(durable=not opts.no_fsync) as pg:
        # 1. propagation
        (export / "prop").mkdir()
        with head(export, base / "a", pg.url) as a, head(export, base / "b", pg.url) as b:
            delays = propagation(a, b, export, opts.changes)
        print(f"propagation A -> B's ext:/c ({len(delays)} creates): p50 {statistics.median(delays) * 1e3:.1f} ms, "
              f"p99 {pct(delays, 0.99) * 1e3:.1f} ms, max {max(delays) * 1e3:.1f} ms")

        # 2. cost per CREATE, one client, one head
        n = opts.creates
        for rnd, (label, url) in enumerate([("single host", None), ("shared", pg.url)] * 2):
            tag = f"{label.replace(' ', '-')}-{rnd}".encode()
            (export / tag.decode()).mkdir()
            with head(export, base / f"one-{rnd}", url) as s:
                sec, cpu, pg_cpu = timed([s], pg if url else None, [(s.port, os.fsencode(export), tag, n)])
            print(f"CREATE, 1 client, 1 head, {label:11}: {n / sec:7.0f} calls/s, head CPU {cpu / n * 1e6:6.0f} us/call"
                  f" ({n / cpu if cpu else 0:6.0f} calls per CPU-s)"
                  + (f", PostgreSQL CPU {pg_cpu / n * 1e6:.0f} us/call" if url else ""))

        # 3. clients on one head vs split over two
        k = opts.clients
        per = n // k
        for label, split in (("1 head ", False), ("2 heads", True)):
            tag = f"tp-{split}"
            dirs = [f"{tag}-{i}".encode() for i in range(k)]
            for d in dirs:
                (export / d.decode()).mkdir()
            with head(export, base / f"{tag}-a", pg.url) as a, head(export, base / f"{tag}-b", pg.url) as b:
                servers = [a, b]
                jobs = [((b if split and i % 2 else a).port, os.fsencode(export), d, per) for i, d in enumerate(dirs)]
                sec, cpu, pg_cpu = timed(servers, pg, jobs)
            print(f"CREATE, {k} clients, {label} (shared): {per * k / sec:7.0f} calls/s, heads' CPU "
                  f"{cpu / (per * k) * 1e6:6.0f} us/call, PostgreSQL CPU {pg_cpu / (per * k) * 1e6:.0f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
