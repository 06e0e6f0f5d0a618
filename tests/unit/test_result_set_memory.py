"""A large value directory is built column by column (nfsd/index/hits.py,
nfsd/query/result_set.py): its peak memory per result stays far below one tuple and its
objects per result (a million results peaked at 540 MB at 1M files when each was a tuple)."""
from __future__ import annotations

import hashlib
import tracemalloc

from nfsd.index.hits import HitColumns
from nfsd.index.search import FileRef
from nfsd.query.result_set import ResultSet

N = 100_000
PATH_LEN = len(b"dir000/file000000.txt")
# What building may hold per result at its peak: the columns twice (before and after the
# sort: inode, cookie, lengths, the path) and the sort's one int (36 bytes) and list slot.
# One (cookie, name, inode, path) tuple alone is 72 bytes, its ints and name bytes as much again.
BOUND = 2 * (8 + 8 + 4 + 2 + PATH_LEN) + 44 + 24


def _paths() -> list[bytes]:
    return [b"dir%03d/file%06d.txt" % (i % 500, i) for i in range(N)]


def test_building_from_refs_holds_no_object_per_result() -> None:
    refs = [FileRef(i + 2, p) for i, p in enumerate(_paths())]
    tracemalloc.start()
    try:
        rs = ResultSet.of_refs(refs)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rs) == N and rs.get(b"file000007.txt") == FileRef(9, b"dir007/file000007.txt")
    assert peak / N < BOUND, (peak / N, BOUND)
    assert held / N < 8 + 8 + 8 + 4 + 2 + PATH_LEN + 8, held / N  # what stays: the compact set


def test_building_from_query_columns_holds_no_object_per_result() -> None:
    """As a fault does: the index appends each hit to columns, the set is made from them."""
    hits = [(i + 2, b"dir%03d" % (i % 500), b"file%06d.txt" % i) for i in range(N)]
    hashes = [hashlib.blake2b(name, digest_size=8).digest() for _, _, name in hits]
    tracemalloc.start()
    try:
        cols = HitColumns()
        for (ino, parent, name), h in zip(hits, hashes):
            cols.add(ino.to_bytes(8, "big"), parent, name, h)
        rs = ResultSet.of_hits(cols)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rs) == N and rs.get(b"file099999.txt") == FileRef(N + 1, b"dir499/file099999.txt")
    assert dict(rs.items()) == dict(ResultSet.of_refs(FileRef(i, p + b"/" + n) for i, p, n in hits).items())
    assert peak / N < BOUND, (peak / N, BOUND)
