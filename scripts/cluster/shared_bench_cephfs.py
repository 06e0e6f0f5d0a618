"""The propagation and CREATE figures of ``shared_bench.py``, over CephFS (issue 16).

A CephFS micro cluster, PostgreSQL, and heads A and B in lab hosts (network and mount
namespaces, each head with its own ceph-fuse mount at the same path), a client in a third
host; everything started here (root, the Debian packages; about a minute).  Prints:

1. propagation: a file created through A until B's ``ext:/c`` answers LOOKUP of it;
2. sequential CREATEs through one head on CephFS, single-host mode (no ``--shared-state``)
   against shared mode: calls/s and the head's CPU per call.

    python scripts/cluster/shared_bench_cephfs.py [--changes 100] [--creates 500]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.cluster.ceph import CephCluster
from scripts.cluster.netns import Lab
from scripts.cluster.postgres import Postgres
from scripts.cluster.shared_bench import cpu_seconds, pct, propagation_between
from tests.cluster.test_two_heads import connect, start_head
from tests.nfs3_helpers import create_ok, look


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--creates", type=int, default=500)
    opts = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pysfsd-cephfs-bench-"))
    with Lab() as lab, CephCluster.started(lab.add("ceph", 10)) as ceph, Postgres.started() as pg:
        a, b, client = lab.add("bench-a"), lab.add("bench-b"), lab.add("bench-client")
        mnt = f"{ceph.dir}/mnt-bench"
        for h in (a, b):
            ceph.mount(h, mnt)
        export = f"{mnt}/export"
        Path(a.path(mnt), "export", "prop").mkdir(parents=True)
        heads = [start_head(a, export, base / "a", "--shared-state", pg.url, "--shared-scan-seconds", "0"),
                 start_head(b, export, base / "b", "--shared-state", pg.url, "--shared-scan-seconds", "0")]
        with connect(client, a.address) as ra, connect(client, b.address) as rb:
            delays = propagation_between(ra, rb, os.fsencode(export), opts.changes)
        print(f"CephFS: propagation A -> B's ext:/c ({len(delays)} creates): p50 "
              f"{statistics.median(delays) * 1e3:.1f} ms, p99 {pct(delays, 0.99) * 1e3:.1f} ms, "
              f"max {max(delays) * 1e3:.1f} ms")
        for p in heads:
            p.kill()
            p.wait()

        n = opts.creates
        for rnd, (label, args) in enumerate([("single host", ()),
                                             ("shared", ("--shared-state", pg.url, "--shared-scan-seconds", "0"))] * 2):
            tag = f"c{rnd}"
            Path(a.path(export), tag).mkdir()
            p = start_head(a, export, base / f"one-{rnd}", *args)
            with connect(client, a.address) as rpc:
                dd = look(rpc, rpc.mount(os.fsencode(export)), tag.encode())
                c0, t0 = cpu_seconds(p.pid), time.monotonic()
                for i in range(n):
                    create_ok(rpc, dd, b"f%06d.c" % i)
                sec, cpu = time.monotonic() - t0, cpu_seconds(p.pid) - c0
            p.kill()
            p.wait()
            print(f"CephFS: CREATE, 1 client, 1 head, {label:11}: {n / sec:6.0f} calls/s, "
                  f"head CPU {cpu / n * 1e6:5.0f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
