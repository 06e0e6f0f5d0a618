"""Directory listings with stable cookies.

A cookie is a 64-bit hash of the entry's name, and a listing is served in cookie order, so
a client resuming from a cookie gets exactly the entries whose hash is greater: entries that
exist for the whole listing appear exactly once, however the directory changes in between.
Cookies are the same after a restart, and a hard link's names get distinct cookies (the
fileid would not do).  Cookies 1 and 2 are ``.`` and ``..``.

Sorted listings are cached per directory and reused while the directory's mtime and ctime
are unchanged and old enough that a same-tick change could not hide behind them.
"""
from __future__ import annotations

import bisect
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable

DOT_COOKIE, DOTDOT_COOKIE, FIRST_NAME_COOKIE = 1, 2, 3
_TRUST_AFTER_NS = 50_000_000  # a listing is reusable only if built 50 ms after the last change


def name_cookie(name: bytes) -> int:
    h = int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big")
    return h if h >= FIRST_NAME_COOKIE else h + FIRST_NAME_COOKIE


def cookie_verifier(fh: bytes) -> bytes:
    """Per-directory verifier: cookies never go stale, so it only has to be ours."""
    return hashlib.blake2b(fh, digest_size=8, person=b"pysfsd-ck").digest()


@dataclass
class Listing:
    cookies: list[int]
    names: list[bytes]
    inos: list[int]
    key: Hashable
    built_ns: int

    def start_index(self, cookie: int) -> int:
        """Index of the first named entry after ``cookie``."""
        if cookie < FIRST_NAME_COOKIE:
            return 0
        return bisect.bisect_right(self.cookies, cookie)


def build_listing(entries: Iterable[tuple[bytes, int]], key: Hashable) -> Listing:
    rows = sorted((name_cookie(n), n, ino) for n, ino in entries)
    return Listing([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], key,
                   time.time_ns())


class ListingCache:
    def __init__(self, max_dirs: int = 32) -> None:
        self.max_dirs = max_dirs
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, Listing] = OrderedDict()

    def get(self, ino: int, mtime_ns: int, ctime_ns: int,
            load: Callable[[], Iterable[tuple[bytes, int]]], exact: Hashable = None) -> Listing:
        """The listing of directory ``ino``, rebuilt when it may have changed.  ``exact``,
        when given, identifies the content itself (a query directory's results), so a
        listing with the same ``exact`` is reused however recent its mtime."""
        key = (ino, mtime_ns, ctime_ns) if exact is None else (ino, exact)
        with self._lock:
            cached = self._cache.get(ino)
        if (cached is not None and cached.key == key
                and (exact is not None or cached.built_ns - max(mtime_ns, ctime_ns) > _TRUST_AFTER_NS)):
            return cached
        listing = build_listing(load(), key)
        with self._lock:
            self._cache[ino] = listing
            self._cache.move_to_end(ino)
            while len(self._cache) > self.max_dirs:
                self._cache.popitem(last=False)
        return listing

    def invalidate(self, ino: int) -> None:
        with self._lock:
            self._cache.pop(ino, None)
