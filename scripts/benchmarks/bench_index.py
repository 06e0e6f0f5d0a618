"""Index benchmarks on synthetic trees (made under /tmp, removed afterwards); prints figures.

    python scripts/benchmarks/bench_index.py [--files N] [--text-files N] [--million N] [--skip-million]

* build rate, stat tier only (name, ext, owner, group, size, mtime), N empty files;
* build rate with every built-in transducer, N small text files (libmagic + words);
* a 1M-file index (stat tier, directories of 1000 files): how long creating the files and
  indexing them take, resident memory after indexing, and the latency of first queries
  (each measured in a fresh process opening the index, so no result is cached).

Targets: >= 20k files/s stat-only; < 50 ms first query; < 300 MB resident.  Each index is
built in a child process, so its memory figures are its own.  Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sized

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

EXTS = ["txt", "c", "h", "py", "md"]
PER_DIR = 1000
RARE_EVERY = 1000  # one file in this many has the extension "rare"


def make_empty_tree(root: Path, files: int) -> float:
    """``files`` empty files in directories of PER_DIR; returns seconds taken."""
    start = time.perf_counter()
    flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
    for d in range((files + PER_DIR - 1) // PER_DIR):
        path = root / f"d{d:04d}"
        path.mkdir(parents=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(min(PER_DIR, files - d * PER_DIR)):
                ext = "rare" if i % RARE_EVERY == 7 else EXTS[i % len(EXTS)]
                os.close(os.open(f"f{i}.{ext}", flags, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
    return time.perf_counter() - start


def make_text_tree(root: Path, files: int) -> float:
    start = time.perf_counter()
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(20_000)] + "the file system index semantic query".split()
    for d in range((files + PER_DIR - 1) // PER_DIR):
        path = root / f"t{d:04d}"
        path.mkdir(parents=True)
        for i in range(min(PER_DIR, files - d * PER_DIR)):
            (path / f"n{i}.txt").write_text(" ".join(rng.choices(vocabulary, k=rng.randint(20, 120))) + "\n")
    return time.perf_counter() - start


def memory() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile in KiB (RssFile: LMDB's mapped pages in the page cache)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


# -- child processes ------------------------------------------------------------------------
def child_build(tree: str, state: str, stat_only: bool) -> dict[str, object]:
    import lmdb

    from nfsd.index import Index
    from nfsd.index.transducers.builtin import StatFields
    env = lmdb.open(state, max_dbs=128, map_size=1 << 40, sync=False, metasync=False)
    idx = Index(env, tree, 1, transducers=[StatFields()] if stat_only else None)
    first = idx.scan(progress=False)
    mem = memory()
    again = idx.scan(progress=False)
    idx.close()
    env.close()
    return {"first": first._asdict() | {"rate": first.rate}, "again": again._asdict() | {"rate": again.rate},
            "memory_kib": mem}


def child_query(tree: str, state: str) -> dict[str, object]:
    import lmdb

    from nfsd.index import Index
    from nfsd.index.transducers.builtin import StatFields
    t0 = time.perf_counter()
    env = lmdb.open(state, max_dbs=128, map_size=1 << 40, sync=False, metasync=False)
    idx = Index(env, tree, 1, transducers=[StatFields()])
    opened = time.perf_counter() - t0
    scope = idx.ino_of(b"d0500")
    assert scope is not None
    year = idx.values(b"mtime", idx.root_ino)[0]
    cases: list[tuple[str, Callable[[], Sized]]] = [
        ("ext:/rare (whole index)", lambda: idx.query(idx.root_ino, [(b"ext", b"rare")])),
        ("ext:/rare/size:/empty/mtime:/Y (rare + two 1M-posting terms)",
         lambda: idx.query(idx.root_ino, [(b"ext", b"rare"), (b"size", b"empty"), (b"mtime", year)])),
        ("d0500/ext:/txt (scoped, 1M-file index)", lambda: idx.query(scope, [(b"ext", b"txt")])),
        ("d0500/ext: (values in scope)", lambda: idx.values(b"ext", scope)),
        ("ext: (values, whole index)", lambda: idx.values(b"ext", idx.root_ino)),
    ]
    results = {}
    for label, run in cases:
        start = time.perf_counter()
        found = run()
        results[label] = {"ms": round((time.perf_counter() - start) * 1000, 2), "results": len(found)}
    idx.close()
    env.close()
    return {"open_ms": round(opened * 1000, 1), "queries": results}


def in_child(kind: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.splitlines()[-1])


# -- the report -------------------------------------------------------------------------------
def build_report(label: str, r: dict[str, Any]) -> None:
    f, a, m = r["first"], r["again"], r["memory_kib"]
    print(f"  {label}: {f['seen']} files in {f['seconds']:.1f} s = {f['rate']:,.0f} files/s "
          f"(failed {f['failed']}); unchanged rescan {a['rate']:,.0f} files/s")
    print(f"    memory after indexing: VmHWM {m['VmHWM'] / 1024:.0f} MB, VmRSS {m['VmRSS'] / 1024:.0f} MB "
          f"(anonymous {m['RssAnon'] / 1024:.0f} MB, LMDB map pages {m['RssFile'] / 1024:.0f} MB)")


def du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir()) / 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--text-files", type=int, default=100_000)
    p.add_argument("--million", type=int, default=1_000_000)
    p.add_argument("--skip-million", action="store_true")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            print(json.dumps(child_build(rest[0], rest[1], rest[2] == "stat")))
        else:
            print(json.dumps(child_query(rest[0], rest[1])))
        return

    work = Path(tempfile.mkdtemp(prefix="pysfsd-bench-", dir="/tmp"))
    try:
        print(f"stat tier only, {args.files:,} empty files:")
        made = make_empty_tree(work / "stat", args.files)
        print(f"  created in {made:.1f} s")
        build_report("index", in_child("build", str(work / "stat"), str(work / "state-stat"), "stat"))
        shutil.rmtree(work / "stat")

        print(f"all built-in transducers, {args.text_files:,} small text files:")
        made = make_text_tree(work / "text", args.text_files)
        print(f"  created in {made:.1f} s")
        build_report("index", in_child("build", str(work / "text"), str(work / "state-text"), "all"))
        print(f"  LMDB size {du(work / 'state-text'):.0f} MB")
        shutil.rmtree(work / "text")

        if not args.skip_million:
            print(f"{args.million:,} empty files, stat tier:")
            made = make_empty_tree(work / "big", args.million)
            print(f"  created in {made:.1f} s")
            build_report("index", in_child("build", str(work / "big"), str(work / "state-big"), "stat"))
            print(f"  LMDB size {du(work / 'state-big'):.0f} MB")
            r = in_child("query", str(work / "big"), str(work / "state-big"))
            print(f"  first queries, fresh process (opening the index: {r['open_ms']} ms):")
            for label, q in r["queries"].items():
                print(f"    {label}: {q['ms']} ms, {q['results']} results")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
