#!/usr/bin/env python3
"""The search for a handle the handle table cannot place (a file moved behind the server's
back, or a made-up inode number), in process, on an event loop: how long the loop stalls
(the longest gap a 1 ms ticker saw: every other client of the worker waits that long), the
time until the handle is answered (the asker retries JUKEBOX every ``--retry`` s; the
Linux client waits 5 s), the CPU it took, and the answer.

Trees are compared in the same run, interleaved: each round runs every tree in a child
process (``PYTHONPATH`` = the tree, its own fresh state directory) on the same export.

    python scripts/benchmarks/bench_search_walk.py --trees base=/tmp/base,new=. \\
        --export /tmp/bench-walk --dirs 20000 --files 5 --rounds 3
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def build(export: str, dirs: int, files: int) -> None:
    """``dirs`` directories 3 deep, ``files`` empty files in each (kept between runs)."""
    mark = os.path.join(export, f".built-{dirs}-{files}")
    if os.path.exists(mark):
        return
    shutil.rmtree(export, ignore_errors=True)
    for i in range(dirs):
        d = os.path.join(export, f"a{i % 50:02}", f"b{i // 50 % 40:02}", f"c{i}")
        os.makedirs(d)
        for j in range(files):
            open(os.path.join(d, f"f{j}"), "w").close()
    os.makedirs(os.path.join(export, "src"))
    open(mark, "w").close()


def last_walked(export: str) -> str:
    """The directory a depth-first walk that visits a directory's subdirectories last-listed
    first (both trees' walks) reaches last: the first listed, at every level."""
    d = export
    while True:
        with os.scandir(d) as it:
            first = next((e.path for e in it if e.is_dir(follow_symlinks=False) and e.name != "src"), None)
        if first is None:
            return d
        d = first


async def child(export: str, case: str, retry: float) -> dict[str, object]:
    from nfsd.fs.handles import pack_real
    from nfsd.fs.localfs import LocalFS
    from nfsd.nfs3.errors import NfsError
    from nfsd.state.store import Store
    from protocol.nfs3 import nfsstat3

    state = tempfile.mkdtemp(prefix="bench-walk-state-")
    store = Store(state)
    first = LocalFS(export, 1, store)
    src = first.lookup(first.root, b"src")
    made = first.create_file(src, b"moving", 0o644, True)
    fh = made.fh if case == "moved" else pack_real(1, 10**12 + 7, 0)
    store.end_burst()
    first.close()
    far = os.path.join(last_walked(export), "moved")
    os.rename(os.path.join(export, "src", "moving"), far)
    fs = LocalFS(export, 1, store)  # a restart: nothing in memory
    done = False
    stall = 0.0

    async def ticker() -> None:
        nonlocal stall
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - t - 0.001)

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    cpu0, t0, jukebox = time.process_time(), time.perf_counter(), 0
    while True:
        try:
            fs.node(fh)
            answer = "found"
            break
        except NfsError as err:
            if err.status != nfsstat3.NFS3ERR_JUKEBOX:
                answer = nfsstat3.values(err.status).name
                break
            jukebox += 1
            await asyncio.sleep(retry)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done = True
    await tick
    os.rename(far, os.path.join(export, "src", "moving"))
    os.unlink(os.path.join(export, "src", "moving"))
    fs.close()
    store.close()
    shutil.rmtree(state)
    return {"stall_ms": stall * 1e3, "answer_s": wall, "cpu_s": cpu, "jukebox": jukebox, "answer": answer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", default=f"new={os.getcwd()}", help="name=path,... (PYTHONPATH of each)")
    ap.add_argument("--export", default="/tmp/bench-search-walk")
    ap.add_argument("--dirs", type=int, default=20000)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="moved,made-up")
    ap.add_argument("--retry", type=float, default=0.1, help="seconds between the asker's tries")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        print(json.dumps(asyncio.run(child(args.export, args.child, args.retry))))
        return
    build(args.export, args.dirs, args.files)
    trees = dict(t.split("=", 1) for t in args.trees.split(","))
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for case in args.cases.split(","):
            for name, path in trees.items():
                env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case,
                                      "--export", args.export, "--retry", str(args.retry)],
                                     cwd=path, env=env, capture_output=True, text=True, check=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"round {r} {case:8} {name:6} {res}", flush=True)
                results.setdefault((case, name), []).append(res)
    print(f"\nmedians, {args.dirs} dirs x {args.files} files:")
    for (case, name), rs in results.items():
        med = {k: statistics.median(float(x[k]) for x in rs) for k in ("stall_ms", "answer_s", "cpu_s", "jukebox")}
        answers = sorted({str(x["answer"]) for x in rs})
        print(f"  {case:8} {name:6} stall {med['stall_ms']:8.1f} ms  answer {med['answer_s']:6.3f} s  "
              f"cpu {med['cpu_s']:6.3f} s  jukebox {med['jukebox']:4.0f}  {answers}")


if __name__ == "__main__":
    main()
