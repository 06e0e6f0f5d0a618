"""Server CPU per call by thread, and LMDB write transactions per call, under the load
generator's pipelined load on a server started by hand; prints figures, not a test.

    python scripts/benchmarks/bench_call_threads.py --port P --pid PID --root ROOT --state STATE \\
        [--ops create,remove,rename] [--seconds 3]

``ROOT``: the load generator's ``--root`` (the server exports ``ROOT/pysfsd``, a fixture
``workload.build_fixture`` made); ``STATE``: the server's ``--state-dir``.  One loadgen run
of ``--ops`` in order (REMOVE removes what CREATE made in the same run); every thread of
the server's processes is read from /proc (``schedstat``: CPU in ns, times put on a CPU;
``stat``: user and system ticks; ``io``: read and write system calls) when each op's run
ends, and the handle table's environment's ``last_txnid`` with it.  Per op: ops/s and per
server CPU-second (loadgen's), then per thread µs of CPU per call, user and system, reads,
writes and runs per call, and LMDB write transactions per call (every writer of that
environment: both workers' group commits and the index's flushes).  Compare trees by
starting one server from each and alternating runs.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import lmdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scan_memory import children  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
Threads = dict[tuple[int, int, str], tuple[int, ...]]


def threads(pid: int) -> Threads:
    """(process, thread, name) -> (utime ticks, stime ticks, read calls, write calls, CPU ns, runs)."""
    out: Threads = {}
    for p in [pid, *children(pid)]:
        for task in glob.glob(f"/proc/{p}/task/*"):
            try:
                stat = Path(task, "stat").read_text().rsplit(")", 1)[1].split()
                io = dict(line.split(": ") for line in Path(task, "io").read_text().splitlines())
                sched = Path(task, "schedstat").read_text().split()
                name = Path(task, "comm").read_text().strip()
            except OSError:
                continue
            out[(p, int(task.rsplit("/", 1)[1]), name)] = (int(stat[11]), int(stat[12]), int(io["syscr"]),
                                                          int(io["syscw"]), int(sched[0]), int(sched[2]))
    return out


def transactions(state: Path) -> int:
    """The handle table environment's last write transaction id."""
    found = [p for p in glob.glob(str(state / "*")) if os.path.exists(os.path.join(p, "data.mdb"))]
    env = lmdb.open(found[0], readonly=True, lock=True, max_dbs=128)
    try:
        return int(env.info()["last_txnid"])
    finally:
        env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's (parent) process")
    ap.add_argument("--root", type=Path, required=True, help="loadgen's --root (the export is ROOT/pysfsd)")
    ap.add_argument("--state", type=Path, required=True, help="the server's --state-dir")
    ap.add_argument("--ops", default="create,remove,rename")
    ap.add_argument("--seconds", default="3")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile(suffix=".json") as js:
        run = subprocess.Popen([sys.executable, "-u", str(HERE / "load_generator" / "loadgen.py"), "--servers",
                                "pysfsd", "--pysfsd-port", str(args.port), "--pysfsd-pid", str(args.pid), "--root",
                                str(args.root), "--ops", args.ops, "--seconds", args.seconds, "--json", js.name],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert run.stdout is not None
        seen = [(threads(args.pid), transactions(args.state))]
        for line in run.stdout:
            if re.search(r"\[\d+/\d+\]", line):  # an op's run ended
                seen.append((threads(args.pid), transactions(args.state)))
        if run.wait():
            raise SystemExit(f"loadgen failed ({run.returncode})")
        results = json.loads(Path(js.name).read_text())["results"]["pysfsd"]
    for (name, res), (before, txn0), (after, txn1) in zip(results.items(), seen, seen[1:]):
        calls = res["ops"]
        print(f"{name}: {res['ops_per_s']:,.0f} ops/s, {res['ops_per_server_cpu'] or 0:,.0f} per server CPU-second, "
              f"{calls} calls, LMDB write transactions per call {(txn1 - txn0) / calls:.3f}")
        total = 0
        for key in sorted(after):
            if key not in before:
                continue
            d = [b - a for a, b in zip(before[key], after[key])]
            if d[4] < 1_000_000:  # under 1 ms of CPU in the run: left out
                continue
            total += d[4]
            print(f"  {key[0]:>7} {key[1]:>7} {key[2]:<15} {d[4] / 1e3 / calls:6.1f} µs/call "
                  f"(user {d[0] / TICK * 1e6 / calls:5.1f}, system {d[1] / TICK * 1e6 / calls:5.1f})  "
                  f"reads {d[2] / calls:.2f} writes {d[3] / calls:.2f} runs {d[5] / calls:.2f}")
        print(f"  every thread: {total / 1e3 / calls:.1f} µs/call")


if __name__ == "__main__":
    main()
