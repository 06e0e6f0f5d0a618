#!/usr/bin/env python3
"""Heap steps: does a worker's heap grow with the most large records ever in flight at once?

``tune_malloc`` (nfsd/cli/main.py) keeps freed memory in the heap, so a worker's ``[heap]``
should be a high-water mark: it steps up when more 1 MiB WRITE records (or READ replies)
are live at once than ever before, and a repeat of a load already seen adds nothing.  This
starts one pysfsd, runs the load generator against it with ``--ops`` (default write1m,
then read1m) at each ``--depths`` in turn (1 connection; each depth twice, then the
largest once more at the smallest), and prints each worker's ``[heap]`` (resident KiB,
from smaps) and the summed RssAnon after every run.

    python scripts/load/heapsteps.py
    python scripts/load/heapsteps.py --ops write1m --depths 1,4,16,32 --seconds 3
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadcli import REPO, doc_parser  # noqa: E402  (first: it sets the import paths)

from driver import server_pids  # noqa: E402
from engine import server_memory_now  # noqa: E402
from servers import Pysfsd  # noqa: E402

LOADGEN = REPO / "scripts" / "benchmarks" / "load_generator" / "loadgen.py"
DEFAULT_ROOT = Path("/tmp/load/heapsteps")


def heap_kib(pid: int) -> int:
    """Resident KiB of the process's ``[heap]`` mapping (0 if it has none or is gone)."""
    rss, inside = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    inside = line.rstrip().endswith("[heap]")
                elif inside and first == "Rss:":
                    rss += int(line.split()[1])
    except OSError:
        return 0
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser(__doc__)
    parser.add_argument("--ops", default="write1m,read1m", help="load generator operations, one after the other")
    parser.add_argument("--depths", default="1,2,4,8,16,32", help="calls in flight on the one connection")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per run (default 3)")
    parser.add_argument("--workers", type=int, help="the server's --workers (default: its own)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"work directory (default {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    root = args.root.resolve()
    export = root / "pysfsd"
    export.mkdir(parents=True, exist_ok=True)
    with Pysfsd(export, root / "run", workers=args.workers) as server:
        assert server.pid is not None
        pid = server.pid
        workers = server_pids(pid)[1:] or [pid]
        print(f"pysfsd pid {pid}, workers {workers}\n{'op':>8} {'depth':>5} {'ops/s':>8}  "
              + "  ".join(f"heap {w:>7}" for w in workers) + "  summed anon MiB", flush=True)
        for op in args.ops.split(","):
            for depth in [d for d in depths for _ in (0, 1)] + [max(depths), min(depths)]:
                results = root / "loadgen.json"
                results.unlink(missing_ok=True)
                run = subprocess.run(
                    [sys.executable, str(LOADGEN), "--servers", "pysfsd", "--pysfsd-port", str(server.port),
                     "--pysfsd-pid", str(pid), "--root", str(root), "--ops", op, "--connections", "1",
                     "--depth", str(depth), "--procs", "1", "--seconds", str(args.seconds), "--json", str(results)],
                    capture_output=True, text=True, cwd=REPO)
                rate = "failed"
                if run.returncode == 0 and results.exists():
                    rate = f"{json.loads(results.read_text())['results']['pysfsd'][op]['ops_per_s']:,.0f}"
                memory = server_memory_now(pid)
                print(f"{op:>8} {depth:>5} {rate:>8}  " + "  ".join(f"{heap_kib(w):>12}" for w in workers)
                      + f"  {memory.anon if memory else float('nan'):.1f}", flush=True)
                if run.returncode != 0:
                    print(run.stdout[-2000:], run.stderr[-2000:], sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
