"""Memory a server keeps after its first scan, per process, and the scan's cost; prints JSON.

    python scripts/benchmarks/bench_scan_memory.py --tree DIR --export EXPORT [--rest 8]

Starts ``python -m nfsd`` from the tree ``DIR`` (``PYTHONPATH``: a base worktree or this
one) on ``EXPORT`` with a fresh state directory, waits for ``index ready`` (its seconds,
and the primary's CPU seconds until then), waits ``--rest`` seconds more (past the quiet
worker's heap trim), and reads ``/proc/PID/smaps_rollup`` of the parent, the primary (the
first child forked) and a follower: RSS, PSS, anonymous and USS in MiB.  Run base and new
trees alternately on the same export.  Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "load_generator"))
from procfs import cpu_seconds  # noqa: E402

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
    state = tempfile.mkdtemp(prefix="bench-scan-memory-")
    env = dict(os.environ, PYTHONPATH=args.tree)
    start = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "nfsd", "--export", args.export, "--state-dir", state,
                               "--port", "0", "--no-register", "--bind", "127.0.0.1"],
                              cwd=args.tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        line = next((ln for ln in server.stdout if "index ready" in ln), "")
        ready = time.monotonic() - start
        kids = children(server.pid)
        cpu = cpu_seconds(kids[0])
        time.sleep(args.rest)
        kids = children(server.pid)
        out = {"tree": args.tree, "export": args.export, "ready_s": round(ready, 2), "primary_cpu_s": cpu,
               "line": line.strip(), "parent": memory(server.pid), "primary": memory(kids[0]),
               "follower": memory(kids[1]) if len(kids) > 1 else None}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
