"""A field directory's values, compact and in cookie order, so ``ls name:`` at a million files
does not hold a million-entry dict (or three).

``name:`` at 1M files has a million values: as a dict of entry name -> value, another of
value -> count, a listing of (name, fileid) tuples and the sorted listing made from it, the
fault held ~250 MB and peaked over 400.  ``ValueSet`` keeps each value in ~24 bytes beside
its entry name (cookie, count, where its name lies in one bytes blob), sorted by cookie
like a ``ResultSet`` (nfsd/query/result_set.py): the listing *is* the set (fileids made when
a page asks), a name is found by hashing and bisecting, and a value's count by its name.
"""
from __future__ import annotations

import hashlib
import itertools
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ..nfs3.dirlist import FIRST_NAME_COOKIE, ByPosition, Listing, find_named
from .names import value_name


class ValueSet:
    """Values by entry name (``value_name``), read-only and dict-like (``get``, ``in``,
    ``len``, ``items``), iterated in cookie order; ``count(value)``: its number of files."""

    __slots__ = ("cookies", "counts", "_starts", "_blob", "_values", "digest")

    def __init__(self, pairs: Iterable[tuple[bytes, int]]) -> None:
        """``pairs``: (value, number of files holding it), each value once."""
        blake2b, from_bytes = hashlib.blake2b, int.from_bytes
        names: list[bytes] = []
        cookies, counts = array("Q"), array("Q")
        escaped: dict[int, bytes] = {}
        for value, count in pairs:
            name = value_name(value)
            if name != value:
                escaped[len(names)] = value
            names.append(name)
            c = from_bytes(blake2b(name, digest_size=8).digest(), "big")  # name_cookie, inlined
            cookies.append(c if c >= FIRST_NAME_COOKIE else c + FIRST_NAME_COOKIE)
            counts.append(count)
        order = sorted(range(len(names)), key=cookies.__getitem__)
        self.cookies = array("Q", (cookies[i] for i in order))  # no list of a million ints beside
        self.counts = array("Q", (counts[i] for i in order))
        del cookies, counts
        self._starts = array("Q", itertools.accumulate((len(names[i]) for i in order), initial=0))
        self._blob = b"".join([names[i] for i in order])
        if escaped:
            where = {i: k for k, i in enumerate(order) if i in escaped}
            self._values = {where[i]: v for i, v in escaped.items()}
        else:
            self._values = {}
        h = hashlib.blake2b(self.cookies.tobytes(), digest_size=8)
        h.update(self._blob)
        self.digest = int.from_bytes(h.digest(), "big")

    # -- one value ------------------------------------------------------------------------
    def name(self, i: int) -> bytes:
        return self._blob[self._starts[i]:self._starts[i + 1]]

    def value(self, i: int) -> bytes:
        found = self._values.get(i)
        return found if found is not None else self.name(i)

    def find(self, name: bytes) -> int:
        """The index of the entry ``name``, or -1."""
        return find_named(self.cookies, name, self.name)

    def count(self, value: bytes) -> int | None:
        """How many files hold ``value`` (None: not a value here)."""
        i = self.find(value_name(value))
        return self.counts[i] if i >= 0 else None

    # -- as a mapping ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cookies)

    def get(self, name: bytes, default: Any = None) -> Any:
        i = self.find(name)
        return self.value(i) if i >= 0 else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, bytes) and self.find(name) >= 0

    def __iter__(self) -> Iterator[bytes]:
        return (self.name(i) for i in range(len(self)))

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return ((self.name(i), self.value(i)) for i in range(len(self)))

    def values(self) -> Iterator[bytes]:
        return (self.value(i) for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        """Memory held (the arrays, the blob, the escaped values)."""
        return 24 * len(self) + len(self._blob) + 120 * len(self._values) + 400

    def listing(self, fileid: Callable[[bytes], int]) -> "ValueListing":
        """The directory listing these values are, in cookie order (nfsd/nfs3/dirlist.py);
        ``fileid`` makes a value directory's fileid from its value, when a page asks."""
        n, value = len(self), self.value
        return ValueListing(self.cookies, ByPosition(n, self.name), ByPosition(n, lambda i: fileid(value(i))),  # type: ignore[arg-type]
                            None, 0, self.nbytes)


@dataclass
class ValueListing(Listing):
    """A listing that is a value set."""

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        names, fileids = self.names, self.inos
        return ((names[i], fileids[i]) for i in range(len(names)))


class ValueCounts:
    """``Results.counts`` of a field directory: value -> its number of files, by look-up."""

    __slots__ = ("_v",)

    def __init__(self, values: ValueSet) -> None:
        self._v = values

    def get(self, value: bytes, default: Any = None) -> Any:
        found = self._v.count(value)
        return default if found is None else found

    def __len__(self) -> int:
        return len(self._v)
