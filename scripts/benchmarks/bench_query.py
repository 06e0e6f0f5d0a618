#!/usr/bin/env python3
"""The query engine alone: CPU time of each query form over the index of a large tree.

Indexes the tree of ``bench_semantic`` (``--files`` sparse files; the stat tier only, which
is all these queries use) and runs plain, OR, NOT, range, glob and date queries of equal
result counts through ``Index.query`` (the directory fault's search: postings read, paths
placed), printing the best of ``--repeat`` runs in CPU ms and the postings read, so the
forms compare at equal result counts.  (``bench_semantic`` times whole NFS listings.)

    python3 scripts/benchmarks/bench_query.py --files 1000000 --keep /tmp/qbench1m
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_semantic import QUERIES, make_tree, rss_mb  # noqa: E402
from nfsd.app import store_path  # noqa: E402
from nfsd.index import Index  # noqa: E402
from nfsd.index.search import Plan  # noqa: E402
from nfsd.query.names import parse_query_path  # noqa: E402
from nfsd.state.store import Store  # noqa: E402


def big_faults(store: Store, index: Index, root: str) -> None:
    """Fault three query directories of nearly every file, as listings would (the results,
    with every entry's attributes and handle), printing RSS after each; then ``name:``."""
    from nfsd.fs.localfs import LocalFS
    from nfsd.query.names import Query
    from nfsd.query.language import parse_term
    from nfsd.fs.semantic import SemanticFS
    fs = SemanticFS(LocalFS(root, store.export_id(root), store), index)
    fs.ready.set()
    print(f"before: RSS {rss_mb():.0f}", flush=True)
    for field, expr in ((b"ext", b"txt"), (b"ext", b"!c"), (b"size", b">=100")):
        v = fs._placeholder(Query(fs.local.root_ino, ((field, parse_term(field, expr)),)))
        c = time.process_time()
        n = sum(1 for _ in fs.scandir(v))
        print(f"{field.decode()}:/{expr.decode()}: {n} results faulted in {time.process_time() - c:.1f} s CPU;"
              f" result cache {fs._cache_bytes >> 20} MB estimated; RSS {rss_mb():.0f}", flush=True)
    # the field directory of every name: as many values as files (nfsd/query/value_set.py)
    import resource
    v = fs._placeholder(Query(fs.local.root_ino, (), b"name"))
    c = time.process_time()
    n = len(fs._fault(v).names)
    print(f"name: {n} values faulted in {time.process_time() - c:.1f} s CPU; RSS {rss_mb():.0f};"
          f" peak of the process so far (the faults above included) "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} MB", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--keep", type=Path, help="build the tree here once and reuse it")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--big", action="store_true",
                   help="then run the faults of three directories of nearly every file, printing RSS"
                        " (the result cache is bounded in bytes)")
    a = p.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="pysfsd-bench-query-"))
    export = work / "export"
    state = Path(tempfile.mkdtemp(prefix="pysfsd-bench-query-state-"))
    try:
        if not export.exists():
            export.mkdir(parents=True)
            make_tree(export, a.files)
        root = str(export)
        store = Store(store_path(str(state), [root]))
        index = Index(store.env, root, store.export_id(root))
        t, c = time.perf_counter(), time.process_time()
        stats = index.scan(False, stat_only=True)
        wall = time.perf_counter() - t
        print(f"stat pass: {stats.seen} files in {wall:.1f} s wall, {time.process_time() - c:.1f} s CPU "
              f"({stats.seen / wall:.0f} files/s); RSS {rss_mb():.0f}", flush=True)
        for label, path in QUERIES:
            real, terms, open_field, _ = parse_query_path(b"/".join(path))
            best, plan = float("inf"), Plan()
            for _ in range(a.repeat):
                plan = Plan()
                c = time.process_time()
                if open_field is not None:
                    n = len(index.value_counts(open_field, index.root_ino, terms, plan))
                else:
                    n = len(index.query_plan(index.root_ino, terms, plan))
                best = min(best, time.process_time() - c)
            print(f"{label:<12} {b'/'.join(path).decode():<32} {best * 1000:8.1f} ms CPU  {n:>7} results"
                  f"  {plan.postings_read:>8} postings read", flush=True)
        if a.big:
            big_faults(store, index, root)
        index.close()
        store.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
