"""The index's own CPU per noted new file and per removed file (``Index.flush``); prints figures.

    python scripts/benchmarks/bench_index_flush.py [--files N] [--rounds R] [--dir DIR] [--created] [--new-dir]
        [--written] [--removed] [--batch B]

No server: an ``Index`` over a fresh export in ``DIR``; per round, N empty files are created
and noted (``note_entry``, as the watcher or a CREATE does), one flush applies them, then they
are removed and noted, and one flush tombstones them.  The flush's thread CPU time per file
is reported (rounds after the first, whose files take no freed inode numbers).  Rounds after
the first create on the numbers the previous round freed (on ext4 with a journal, at once):
the reused-tombstone path of a CREATE after removals.  Compare trees alternated with
``PYTHONPATH=TREE`` (it comes before this script's own tree).  ``--created`` notes the new
files as the server's CREATE does (``Index.note_created``), ``--removed`` the removals as
its REMOVE does (``Index.note_removed``: no ``lstat``).  ``--written``: each new file is
then written a line as the VM's ``echo "line N" > f`` does (a WRITE's ``note_ino``), so
the flush runs the content transducers (libmagic's type sniff) on it.  ``--batch B``: a
flush after every B new files rather than one per round: what applying a new file's notes
in larger or smaller batches (a flush deferred until a quiet moment, or one per call) would
cost per file.  Process CPU (every thread: the content extraction runs in a pool).  Not a
test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # after PYTHONPATH: another tree can be measured

import lmdb  # noqa: E402

from nfsd.index.index import Index  # noqa: E402


def flush_cpu(idx: Index) -> float:
    """CPU seconds of one flush: the process's (every thread; ``time.process_time``
    counts in nanoseconds, not /proc's 10 ms ticks), the content extraction's pool too."""
    start = time.process_time()
    idx.flush()
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=3000, help="files created (then removed) per round")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--dir", default="/tmp", help="where the export and the index go")
    p.add_argument("--created", action="store_true",
                   help="note the new files as a CREATE does (Index.note_created, with the creation's fstat)")
    p.add_argument("--new-dir", action="store_true",
                   help="each round's files go into a directory made in that round (noted as the watcher notes "
                        "a new directory) before the flush: MKDIR then CREATEs, as the load generator does")
    p.add_argument("--written", action="store_true",
                   help='write "line N" into each new file and note it as a WRITE does (its content is read)')
    p.add_argument("--removed", action="store_true",
                   help="note the removals as the server's own REMOVE does (Index.note_removed: no lstat)")
    p.add_argument("--batch", type=int, default=0,
                   help="flush after every this many new files (default: one flush per round)")
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="bench-index-flush-", dir=args.dir)
    export = os.path.join(base, "export")
    d = os.path.join(export, "d").encode()
    os.makedirs(d)
    env = lmdb.open(os.path.join(base, "state"), max_dbs=128, map_size=1 << 30, sync=False)
    idx = Index(env, export, 1)
    try:
        idx.scan(progress=False)
        d_ino = os.stat(d).st_ino
        made: list[float] = []
        removed: list[float] = []
        export_ino = os.stat(export).st_ino
        for k in range(args.rounds):
            names = [b"f%d-%d" % (k, i) for i in range(args.files)]
            if args.new_dir:
                d = os.path.join(export, "d%d" % k).encode()
                os.mkdir(d)
                d_ino = os.stat(d).st_ino
                idx.note_entry(export_ino, os.path.basename(d))
                idx.note_dir(d_ino)
            batch = args.batch or args.files
            spent = 0.0
            for i, n in enumerate(names, 1):
                fd = os.open(os.path.join(d, n), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
                st = os.fstat(fd)
                if args.created:
                    idx.note_created(d_ino, n, st)
                else:
                    idx.note_entry(d_ino, n)
                if args.written:
                    os.pwrite(fd, b"line %d\n" % i, 0)
                    idx.note_ino(st.st_ino)
                os.close(fd)
                if i % batch == 0 or i == len(names):
                    spent += flush_cpu(idx)
            made.append(1e6 * spent / args.files)
            for n in names:
                os.unlink(os.path.join(d, n))
                if args.removed:
                    idx.note_removed(d_ino, n)
                else:
                    idx.note_entry(d_ino, n)
            removed.append(1e6 * flush_cpu(idx) / args.files)
        made, removed = made[1:] or made, removed[1:] or removed
        print(f"{args.files} files x {args.rounds} rounds in {args.dir}, new files noted as "
              f"{'created (note_created)' if args.created else 'entries (note_entry)'}"
              f"{', in a new directory per round' if args.new_dir else ''}"
              f"{', each written a line' if args.written else ''}"
              f"{f', a flush every {args.batch} new files' if args.batch else ''}"
              f"{', removals noted as removed (note_removed)' if args.removed else ''}; "
              "flush CPU per file (µs), rounds after the first")
        print(f"  new file      median {statistics.median(made):5.1f} min {min(made):5.1f}")
        print(f"  removed file  median {statistics.median(removed):5.1f} min {min(removed):5.1f}")
    finally:
        idx.close()
        env.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
