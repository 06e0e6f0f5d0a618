"""CPU per burst commit of the handle table (``Store.end_burst``); prints figures.

    python scripts/benchmarks/bench_burst_commit.py [--places N] [--bursts B] [--rounds R] [--dir DIR]

No server: a ``Store`` holding N places, then bursts of 1, 2 and 4 writes, each ended by
``end_burst`` with no journal (as a worker of ``--workers 2`` commits under a pipelined load,
where a burst is one or two calls): tombstones (a REMOVE's ``mark_deleted``) and new places
(a CREATE's ``put_objects``).  The calling thread's CPU per burst, best of R rounds of B
bursts.  Compare trees alternated with ``PYTHONPATH=TREE`` (it comes before this script's
own tree).  Not a test.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # after PYTHONPATH: another tree can be measured

import nfsd  # noqa: E402
from nfsd.state.store import Store  # noqa: E402

EXPORT = 1


def per_burst(store: Store, bursts: int, size: int, write: str, first: int) -> float:
    """µs of thread CPU per burst of ``size`` writes of kind ``write`` on inodes from ``first``."""
    ino = first
    start = time.thread_time()
    for _ in range(bursts):
        store.begin_burst()
        for _ in range(size):
            if write == "tombstone":
                store.mark_deleted(EXPORT, ino, later=True)
            else:
                store.put_objects(EXPORT, [(ino, 7, 1, b"new-%d" % ino)], later=True, must_fit=True)
            ino += 1
        store.end_burst()
    return (time.thread_time() - start) / bursts * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--places", type=int, default=100_000, help="places in the table first")
    p.add_argument("--bursts", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    where = tempfile.mkdtemp(prefix="bench-burst-commit-", dir=args.dir)
    store = Store(str(Path(where) / "state"))
    try:
        store.put_objects(EXPORT, [(i, 7, 1, b"file-%d" % i) for i in range(args.places)])
        print(f"{nfsd.__file__}: {args.places} places, best of {args.rounds} x {args.bursts} bursts, "
              "µs of CPU per burst")
        fresh = 1 << 40  # new places on numbers the table does not hold
        for write in ("tombstone", "new place"):
            figures = []
            for size in (1, 2, 4):
                best = float("inf")
                for r in range(args.rounds):
                    if write == "tombstone":  # the table's places, each round its own
                        first = (r * size * args.bursts) % max(1, args.places - size * args.bursts)
                    else:
                        first, fresh = fresh, fresh + size * args.bursts
                    best = min(best, per_burst(store, args.bursts, size, write, first))
                figures.append(f"{size}: {best:5.2f}")
            print(f"  {write:10s}  " + "   ".join(figures))
    finally:
        store.close()
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
