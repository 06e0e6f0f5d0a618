#!/usr/bin/env python3
"""How long one slice of the search for an unplaced handle holds the event loop, in CPU
time (which the other benchmarks' noise moves least): a walk of the export for a made-up
inode, in process, each slice's thread CPU time (p50, p90, max), the part of it spent
recording the directories met in the handle table, the longest gap a 1 ms ticker saw, the
walk's CPU and wall time.  Trees are compared in the same run, interleaved (each in a child
process with ``PYTHONPATH`` = the tree and a fresh state directory).  ``slices_cpu_s`` is the
slices' own CPU (``cpu_s`` adds the ticker's); ``--shared``: the handle table as several
workers share it (the server's default), so generations are read from the store.

    python scripts/benchmarks/bench_search_slices.py --export /tmp/bench-search-walk \\
        --trees base=/tmp/base,new=. --rounds 3

Build the export first with bench_search_walk.py (its ``--dirs``/``--files``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def child(export: str, shared: bool = False) -> dict[str, float]:
    from nfsd.fs.handles import pack_real
    from nfsd.fs.localfs import LocalFS
    from nfsd.nfs3.errors import NfsError
    from nfsd.state.store import Store

    state = tempfile.mkdtemp(prefix="bench-search-slices-")
    store = Store(state)
    fs = LocalFS(export, 1, store)
    fs.sole_writer = not shared  # (as ``--workers`` N > 1, the default, sets it)
    s = fs._searches
    slices: list[float] = []
    repairs: list[float] = []
    real_slice, real_repair = s._slice, s._repair

    def timed_slice(w: object) -> None:
        t = time.thread_time()
        real_slice(w)  # type: ignore[arg-type]
        slices.append(time.thread_time() - t)

    def timed_repair(dirs: list[tuple[int, int, bytes]]) -> None:
        t = time.thread_time()
        real_repair(dirs)
        repairs.append(time.thread_time() - t)
    s._slice, s._repair = timed_slice, timed_repair  # type: ignore[method-assign]
    gaps: list[float] = []

    async def run() -> tuple[float, float]:
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
        tick = asyncio.ensure_future(ticker())
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            fs.node(pack_real(1, 10**9 + 7, 0))
            raise RuntimeError("answered within one slice: use a bigger export")
        except NfsError as exc:
            ready = getattr(exc, "ready", None)
        if ready is None:
            raise RuntimeError("this tree does not hold calls")
        while not ready.done():
            await asyncio.sleep(0.01)
        stop.set()
        await tick
        return time.process_time() - c0, time.perf_counter() - w0
    cpu, wall = asyncio.run(run())
    fs.close()
    store.close()
    shutil.rmtree(state, ignore_errors=True)
    ss = sorted(slices)
    return {"slices": len(ss), "slice_p50_ms": ss[len(ss) // 2] * 1e3, "slice_p90_ms": ss[int(len(ss) * 0.9)] * 1e3,
            "slice_max_ms": ss[-1] * 1e3, "repair_ms": sum(repairs) * 1e3,
            "slices_cpu_s": sum(ss), "tick_gap_max_ms": max(gaps) * 1e3,
            "cpu_s": cpu, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", default="/tmp/bench-search-walk")
    ap.add_argument("--trees", default=f"new={os.getcwd()}", help="name=path,... (PYTHONPATH of each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shared", action="store_true",
                    help="the handle table shared with other workers (the server's default of 2)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.export, args.shared)))
        return
    trees = {k: os.path.abspath(v) for k, v in (t.split("=", 1) for t in args.trees.split(","))}
    for r in range(args.rounds):
        for name, tree in trees.items():
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--export", args.export]
                                 + ["--shared"] * args.shared,
                                 cwd=tree, env=dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True)
            if out.returncode:
                print(f"round {r} {name}: failed\n{out.stderr[-2000:]}", flush=True)
                continue
            res = json.loads(out.stdout.splitlines()[-1])
            print(f"round {r} {name:6} " + "  ".join(f"{k} {v:.3g}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
