"""Directory listings with stable cookies.

A cookie is a 64-bit hash of the entry's name, and a listing is served in cookie order, so
a client resuming from a cookie gets exactly the entries whose hash is greater: entries that
exist for the whole listing appear exactly once, however the directory changes in between.
Cookies are the same after a restart, and a hard link's names get distinct cookies (the
fileid would not do).  Cookies 1 and 2 are ``.`` and ``..``.

Sorted listings are cached per directory and reused while the directory's mtime and ctime
are unchanged and old enough that a same-tick change could not hide behind them.

A page after the first (a cookie past ``..``) is served from the cached listing even when
the directory changed since: the first page of every listing takes a current one, and the
cache only ever replaces a listing by a newer one, so the cached listing was read no
earlier than any listing still being paged through began, and holds every entry that
exists for the whole of it.  Entries created since are not shown and entries removed since
are skipped by READDIRPLUS (READDIR still names them), as a listing may do for changes made
while it runs.  A directory that keeps changing is so read once per listing, not once per
page: under constant creates, listing 100k entries with the Linux client (which then asks
for about one page of its cache per call) took 400 s to 1300 s when every page read and
sorted the directory again.
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
_STALE = object()  # the key of a listing known to be out of date


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


def build_listing(entries: Iterable[tuple[bytes, int]], key: Hashable, read_ns: int | None = None) -> Listing:
    """``read_ns``: when the directory began to be read (default: now)."""
    read_ns = time.time_ns() if read_ns is None else read_ns
    rows = sorted((name_cookie(n), n, ino) for n, ino in entries)
    return Listing([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], key, read_ns)


def _still_valid(cached: Listing, key: Hashable, mtime_ns: int, ctime_ns: int, exact: bool) -> bool:
    return cached.key == key and (exact or cached.built_ns - max(mtime_ns, ctime_ns) > _TRUST_AFTER_NS)


class ListingCache:
    def __init__(self, max_dirs: int = 32) -> None:
        self.max_dirs = max_dirs
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Listing] = OrderedDict()

    def get(self, dir_id: Hashable, mtime_ns: int, ctime_ns: int,
            load: Callable[[], Iterable[tuple[bytes, int]]], exact: Hashable = None,
            resume: bool = False) -> Listing:
        """The listing of the directory ``dir_id`` (its handle: a reused inode number is
        another directory), rebuilt when it may have changed.  ``exact``, when given,
        identifies the content itself (a query directory's results), so a listing with the
        same ``exact`` is reused however recent its mtime.  ``resume``: a page after the
        first of a real directory, which any cached listing serves (see the module
        docstring)."""
        key = (dir_id, mtime_ns, ctime_ns) if exact is None else (dir_id, exact)
        with self._lock:
            cached = self._cache.get(dir_id)
        if cached is not None and ((resume and exact is None)
                                   or _still_valid(cached, key, mtime_ns, ctime_ns, exact is not None)):
            return cached
        read_ns = time.time_ns()  # before load(): the listing is as of when reading began
        listing = build_listing(load(), key, read_ns)
        with self._lock:
            newer = self._cache.get(dir_id)
            if newer is not None and newer.built_ns > listing.built_ns:
                return listing  # another thread read it later: keep the newest in the cache
            self._cache[dir_id] = listing
            self._cache.move_to_end(dir_id)
            while len(self._cache) > self.max_dirs:
                self._cache.popitem(last=False)
        return listing

    def is_fresh(self, dir_id: Hashable, mtime_ns: int, ctime_ns: int, resume: bool = False) -> bool:
        """Whether ``get`` would answer a real directory with these times from the cache,
        without reading and sorting it again."""
        with self._lock:
            cached = self._cache.get(dir_id)
        return cached is not None and (resume or _still_valid(cached, (dir_id, mtime_ns, ctime_ns),
                                                               mtime_ns, ctime_ns, False))

    def invalidate(self, dir_id: Hashable) -> None:
        """The directory changed: its listing no longer serves first pages, only the later
        pages of listings already begun (see the module docstring)."""
        with self._lock:
            cached = self._cache.get(dir_id)
            if cached is not None:
                cached.key = _STALE
