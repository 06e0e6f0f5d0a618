#!/usr/bin/env python3
"""What making one namespace change durable costs on a file system; prints figures.

    python scripts/benchmarks/bench_metadata_sync.py [--dir DIR] [--count N] [--rounds R]

A ``sync`` export fsyncs the directories a CREATE/REMOVE/RENAME changed before the reply
(docs/design.rst, "Directory changes are durable when acknowledged"); NFS-Ganesha's VFS
back end does not.  For a client making one call at a time nothing can be grouped, so each
change waits for a flush of its own.  The obvious alternative is an intent log: append a
record of the change to a journal file and ``fdatasync`` it, replaying it after a crash.
This measures both in ``DIR`` (default: a new directory under /tmp), interleaved, so the
choice rests on a figure: per change, the wall time of

* ``create``: ``open(O_CREAT)`` + ``close`` alone (what Ganesha pays),
* ``create + fsync(dir)``: what a ``sync`` export paid before it fsynced the new inode too,
* ``create + fsync(dir) + fsync(file)``: what it pays now (``LocalFS.fsync_new``: without a
  journal the directory's fsync does not write the new inode),
* ``create + log fdatasync``: a 64-byte record written in place into a journal written
  once beforehand (no block to allocate, no unwritten extent to convert: only the data
  block and the device's cache flush are left to wait for),

then removes the files.  The median of the rounds is printed.  Not a test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

JOURNAL_BYTES = 1 << 20
RECORD = b"x" * 64


def timed_creates(directory: str, count: int, after_each: Callable[[int, int], None]) -> float:
    """Microseconds per create of ``count`` new files, ``after_each(i, fd)`` included (``fd``:
    the new file's, open read-only)."""
    start = time.perf_counter()
    for i in range(count):
        fd = os.open(os.path.join(directory, f"f{i}"), os.O_CREAT | os.O_RDONLY, 0o644)
        after_each(i, fd)
        os.close(fd)
    elapsed = time.perf_counter() - start
    for i in range(count):
        os.unlink(os.path.join(directory, f"f{i}"))
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where to create (default: a new directory under /tmp)")
    parser.add_argument("--count", type=int, default=300, help="creates per round and way")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="metadata-sync-")
    directory = os.path.join(base, "d")
    os.makedirs(directory, exist_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    journal = os.open(os.path.join(base, "journal"), os.O_CREAT | os.O_RDWR, 0o600)
    os.pwrite(journal, bytes(JOURNAL_BYTES), 0)
    os.fsync(journal)
    os.fsync(dir_fd)

    def log_record(i: int, fd: int) -> None:
        os.pwrite(journal, RECORD, i * len(RECORD) % JOURNAL_BYTES)
        os.fdatasync(journal)

    def dir_then_file(i: int, fd: int) -> None:
        os.fsync(dir_fd)
        os.fsync(fd)

    def file_then_dir(i: int, fd: int) -> None:
        os.fsync(fd)
        os.fsync(dir_fd)

    ways: dict[str, Callable[[int, int], None]] = {
        "create": lambda i, fd: None,
        "create + fsync(dir)": lambda i, fd: os.fsync(dir_fd),
        "create + fsync(dir) + fsync(file)": dir_then_file,
        "create + fsync(file) + fsync(dir)": file_then_dir,
        "create + log fdatasync": log_record,
    }
    results: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for _ in range(args.rounds):
            for name, after_each in ways.items():
                results[name].append(timed_creates(directory, args.count, after_each))
    finally:
        os.close(dir_fd)
        os.close(journal)
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{args.count} creates x {args.rounds} rounds in {base}; median (min-max) us per create")
    for name, values in results.items():
        print(f"  {name:34} {statistics.median(values):8.1f}  ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
