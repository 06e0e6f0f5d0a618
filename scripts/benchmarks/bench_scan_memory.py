"""Memory a server keeps after its first scan, per process, and the scan's cost; prints JSON.

    python scripts/benchmarks/bench_scan_memory.py --tree DIR --export EXPORT [--rest 8]

Starts ``python -m nfsd`` from the tree ``DIR`` (a base worktree or this one; the load
generator's ``Pysfsd`` and ``from_tree``) on ``EXPORT`` with a fresh state directory, waits for ``index ready`` (its seconds,
and the primary's CPU seconds until then), waits ``--rest`` seconds more (past the quiet
worker's heap trim), and reads ``/proc/PID/smaps_rollup`` of the parent, the primary (the
first child forked) and a follower: RSS, PSS, anonymous and USS in MiB.  Run base and new
trees alternately on the same export.  Not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "load_generator"))
from procfs import cpu_seconds  # noqa: E402
from servers import Pysfsd, from_tree  # noqa: E402

FIELDS = ("Rss:", "Pss:", "Anonymous:", "Private_Clean:", "Private_Dirty:")


def memory(pid: int) -> dict[str, float]:
    """MiB of the process's resident set, by kind."""
    d: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, *value = line.split()
            if key in FIELDS:
                d[key[:-1]] = round(int(value[0]) / 1024, 1)
    d["USS"] = round(d.pop("Private_Clean") + d.pop("Private_Dirty"), 1)
    return d


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(x) for x in f.read().split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True, help="source tree to run the server from")
    ap.add_argument("--export", required=True)
    ap.add_argument("--rest", type=float, default=8.0, help="seconds after index ready")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scan-memory-") as work:
        start = time.monotonic()
        with from_tree(Path(args.tree)), Pysfsd(Path(args.export), Path(work)) as server:
            assert server.pid is not None
            ready = time.monotonic() - start
            line = next((ln for ln in server.log_path.read_text().splitlines() if "index ready" in ln), "")
            kids = children(server.pid)
            cpu = cpu_seconds(kids[0])
            time.sleep(args.rest)
            kids = children(server.pid)
            out = {"tree": args.tree, "export": args.export, "ready_s": round(ready, 2), "primary_cpu_s": cpu,
                   "line": line.strip(), "parent": memory(server.pid), "primary": memory(kids[0]),
                   "follower": memory(kids[1]) if len(kids) > 1 else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
