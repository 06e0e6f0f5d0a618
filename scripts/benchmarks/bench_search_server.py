#!/usr/bin/env python3
"""The search for a handle of a file moved behind the server's back, through a real server
(``--workers 1``): client A's GETATTR of that handle (retrying JUKEBOX every ``--retry`` s;
``--linux``: every 5 s, as the Linux client does, NFS_JUKEBOX_RETRY_TIME: the time to the
answer as its user would see it; since the ``heldsearch`` branch a call is held until the
walk answers it, up to 10 s, so it needs no retry) while client B, on another connection, sends GETATTRs back to back: B's latency while A's
handle is searched for (p50, p99, max: what every other client of the worker waits), A's
answer and time, and the server's CPU meanwhile (B's calls included).

The handle is taken, the server stopped, the file moved to the directory a depth-first walk
reaches last (``bench_search_walk.last_walked``), the server started again.  Trees are
compared in the same run, interleaved (each run with ``PYTHONPATH`` and cwd = the tree).

    python scripts/benchmarks/bench_search_server.py --export /tmp/bench-search-walk \\
        --trees base=/tmp/base,new=. --rounds 3

Build the export first with bench_search_walk.py (its ``--dirs``/``--files``).  Loopback.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE), str(HERE / "load_generator")]

from bench_search_walk import last_walked  # noqa: E402
from procfs import cpu_seconds  # noqa: E402
from protocol import nfs3  # noqa: E402
from protocol.nfs3 import nfsstat3  # noqa: E402
from tests.rpc_client import RpcClient, fh  # noqa: E402

_LISTENING = re.compile(r"pysfsd: listening on [\d.]+:(\d+)")


def start(tree: str, export: str, state: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "nfsd", "--export", f'"{export}" *(rw,no_root_squash,insecure)',
           "--bind", "127.0.0.1", "--port", "0", "--state-dir", state, "--no-register", "--workers", "1"]
    p = subprocess.Popen(cmd, cwd=tree, env=dict(os.environ, PYTHONPATH=tree), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    port = 0
    for line in p.stdout:
        m = _LISTENING.match(line)
        port = int(m.group(1)) if m and not port else port
        if line.startswith("pysfsd: index ready"):
            threading.Thread(target=p.stdout.read, daemon=True).start()
            return p, port
    p.kill()
    p.wait()
    raise RuntimeError("the server did not start")


def stop(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def getattr_status(rpc: RpcClient, h: bytes) -> int:
    return rpc.nfs(1, nfs3.GETATTR3args.cls(fh(h)))[0]


def lookup(rpc: RpcClient, d: bytes, name: bytes) -> bytes:
    status, ok = rpc.nfs(3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(d), name)))
    assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
    return ok.object.data


def one(tree: str, export: str, retry: float) -> dict[str, object]:
    state = tempfile.mkdtemp(prefix="bench-search-state-")
    src = os.path.join(export, "src", "moving")
    open(src, "w").close()
    far = os.path.join(last_walked(export), "moved")
    p, port = start(tree, export, state)
    try:
        with RpcClient(port) as rpc:
            h = lookup(rpc, lookup(rpc, rpc.mount(os.fsencode(export)), b"src"), b"moving")
        stop(p)
        os.rename(src, far)
        p, port = start(tree, export, state)
        lat: list[float] = []
        done = threading.Event()
        with RpcClient(port) as a, RpcClient(port) as b:
            root = b.mount(os.fsencode(export))

            def other() -> None:
                while not done.is_set():
                    t = time.perf_counter()
                    getattr_status(b, root)
                    lat.append(time.perf_counter() - t)
            th = threading.Thread(target=other)
            th.start()
            time.sleep(0.2)
            n0, c0, t0, jukebox = len(lat), cpu_seconds(p.pid), time.perf_counter(), 0
            while (status := getattr_status(a, h)) == nfsstat3.NFS3ERR_JUKEBOX:
                jukebox += 1
                time.sleep(retry)
            wall, used = time.perf_counter() - t0, cpu_seconds(p.pid) - c0
            done.set()
            th.join()
        during = sorted(lat[n0:]) or [0.0]
    finally:
        stop(p)
        for path in (src, far):
            if os.path.exists(path):
                os.unlink(path)
        shutil.rmtree(state, ignore_errors=True)

    def q(f: float) -> float:
        return during[min(len(during) - 1, int(f * len(during)))] * 1e3
    return {"answer": nfsstat3.values(status).name, "answer_s": wall, "jukebox": jukebox, "server_cpu_s": used,
            "b_calls": len(during), "b_p50_ms": q(0.5), "b_p99_ms": q(0.99), "b_max_ms": during[-1] * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", default="/tmp/bench-search-walk")
    ap.add_argument("--trees", default=f"new={HERE.parents[1]}", help="name=path,...")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--retry", type=float, default=0.1, help="seconds between client A's tries")
    ap.add_argument("--linux", action="store_true", help="retry JUKEBOX after 5 s, as the Linux client")
    args = ap.parse_args()
    if args.linux:
        args.retry = 5.0
    trees = {k: os.path.abspath(v) for k, v in (t.split("=", 1) for t in args.trees.split(","))}
    results: dict[str, list[dict[str, object]]] = {}
    for r in range(args.rounds):
        for name, tree in trees.items():
            res = one(tree, args.export, args.retry)
            print(f"round {r} {name:6} " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in res.items()), flush=True)
            results.setdefault(name, []).append(res)
    print("\nmedians:")
    for name, rs in results.items():
        med = {k: statistics.median(float(x[k]) for x in rs)  # type: ignore[arg-type]
               for k in ("answer_s", "jukebox", "server_cpu_s", "b_calls", "b_p50_ms", "b_p99_ms", "b_max_ms")}
        print(f"  {name:6} " + "  ".join(f"{k} {v:.3g}" for k, v in med.items()),
              sorted({str(x["answer"]) for x in rs}))


if __name__ == "__main__":
    main()
