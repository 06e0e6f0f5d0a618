"""A query's results as columns, filled while the index is read.

A million results held as a list of (ino, path, hash, name) tuples cost ~280 bytes each
(a tuple and four bytes objects) before the compact result set (nfsd/query/result_set.py)
was made from them: 540 MB at the peak of one ``ext:/txt`` at 1M files.  ``HitColumns``
keeps ~30 bytes plus the path per result from the start: the inos and the names' hashes as
8-byte big-endian runs (as LMDB holds them), every path in one buffer, each path's length
and its last component's.  No per-result object outlives the step that appends it.
"""
from __future__ import annotations

import hashlib
import sys
from array import array
from typing import Callable, Iterator

_BIG_ENDIAN = sys.byteorder == "big"


class HitColumns:
    """Hits appended in any order: ``add`` (from ``places``) or ``append`` (a ``Hit`` tuple)."""

    __slots__ = ("inos", "hashes", "blob", "lens", "nlens", "_every")

    def __init__(self, every: Callable[[], object] | None = None) -> None:
        """``every``: called each 65,536 results added (the index drops the pages its walk
        mapped: they count in the RSS too)."""
        self._every = every
        self.inos = bytearray()  # 8 bytes big-endian per result
        self.hashes = bytearray()  # blake2b-64 of the entry name, big-endian (``name_cookie``)
        self.blob = bytearray()  # the paths, end to end
        self.lens = array("I")  # each path's length
        self.nlens = array("H")  # its last component's (the entry name's)

    def add(self, ino8: bytes, parent: bytes, name: bytes, hash8: bytes) -> None:
        """The result ``parent/name`` (``name`` alone when ``parent`` is empty)."""
        self.inos += ino8
        self.hashes += hash8
        blob = self.blob
        if parent:
            blob += parent
            blob += b"/"
            self.lens.append(len(parent) + 1 + len(name))
        else:
            self.lens.append(len(name))
        blob += name
        nlens = self.nlens
        nlens.append(len(name))
        if not len(nlens) & 0xFFFF and self._every is not None:
            self._every()

    def append(self, hit: tuple[bytes, ...]) -> None:
        """A ``Hit``: (ino8, path[, hash8, name])."""
        path = hit[1]
        if len(hit) > 3:
            hash8, name = hit[2], hit[3]
        else:
            name = path.rpartition(b"/")[2]
            hash8 = hashlib.blake2b(name, digest_size=8).digest()
        self.inos += hit[0]
        self.hashes += hash8
        self.blob += path
        self.lens.append(len(path))
        self.nlens.append(len(name))

    def __len__(self) -> int:
        return len(self.lens)

    def __iter__(self) -> Iterator[tuple[bytes, bytes, bytes, bytes]]:
        """(ino8, path, hash8, name) of each, made when asked (a filter's few)."""
        blob, inos, hashes, nlens = bytes(self.blob), bytes(self.inos), bytes(self.hashes), self.nlens
        at = 0
        for i, n in enumerate(self.lens):
            path = blob[at:at + n]
            at += n
            yield inos[8 * i:8 * i + 8], path, hashes[8 * i:8 * i + 8], path[n - nlens[i]:]

    def numbers(self) -> tuple[array, array]:
        """The inos and name hashes as machine integers (``array('Q')``), no per-row call."""
        inos, hashes = array("Q", self.inos), array("Q", self.hashes)
        if not _BIG_ENDIAN:
            inos.byteswap()
            hashes.byteswap()
        return inos, hashes
