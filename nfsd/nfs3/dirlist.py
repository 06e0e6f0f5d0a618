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
from typing import Any, Callable, Hashable, Iterable, Protocol, Sequence

DOT_COOKIE, DOTDOT_COOKIE, FIRST_NAME_COOKIE = 1, 2, 3
DEFAULT_LISTING_BYTES = 64 << 20  # cached listings, all directories together (the newest aside)
_LISTING_ENTRY = 130      # bytes per entry of a real directory's listing beyond its name
_LISTING_OVERHEAD = 400   # bytes per listing (so empty ones are bounded too)
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
    nbytes: int = 0  # memory held, estimated (``ListingCache`` bounds the sum)

    def start_index(self, cookie: int) -> int:
        """Index of the first named entry after ``cookie``."""
        if cookie < FIRST_NAME_COOKIE:
            return 0
        return bisect.bisect_right(self.cookies, cookie)


def find_named(cookies: Sequence[int], name: bytes, name_at: Callable[[int], bytes]) -> int:
    """The position of entry ``name`` in a listing sorted by cookie (``name_at(i)``: entry
    i's name), or -1: a bisection by its cookie, then the entries sharing it."""
    cookie = name_cookie(name)
    i = bisect.bisect_left(cookies, cookie)
    while i < len(cookies) and cookies[i] == cookie:
        if name_at(i) == name:
            return i
        i += 1
    return -1


class ByPosition(Sequence[Any]):
    """A listing's column made when a page asks: ``make(i)`` for entry ``i`` of ``n``
    (a query directory's names or fileids, never all held at once)."""

    def __init__(self, n: int, make: Callable[[int], Any]) -> None:
        self._n, self._make = n, make

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._make(k) for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._make(i)


def build_listing(entries: Iterable[tuple[bytes, int]], key: Hashable, read_ns: int | None = None) -> Listing:
    """``read_ns``: when the directory began to be read (default: now).  ``entries`` may be
    a listing already in cookie order (a query directory's results, nfsd/query/result_set.py):
    it is used as it is, not copied."""
    read_ns = time.time_ns() if read_ns is None else read_ns
    if isinstance(entries, Listing):
        entries.key, entries.built_ns = key, read_ns
        return entries
    rows = sorted((name_cookie(n), n, ino) for n, ino in entries)
    names = [r[1] for r in rows]
    return Listing([r[0] for r in rows], names, [r[2] for r in rows], key, read_ns,
                   _LISTING_OVERHEAD + len(rows) * _LISTING_ENTRY + sum(map(len, names)))


def _still_valid(cached: Listing, key: Hashable, mtime_ns: int, ctime_ns: int, exact: bool) -> bool:
    return cached.key == key and (exact or cached.built_ns - max(mtime_ns, ctime_ns) > _TRUST_AFTER_NS)


class ListingCache:
    """Sorted listings by directory: at most ``max_dirs``, holding at most ``max_bytes``
    together (their estimated size, ``Listing.nbytes``) beyond the newest, which is being
    paged.  A real directory's listing takes ~130 bytes an entry (three lists of Python
    objects), a query directory's is its result set (~30 bytes a result beside its path),
    which this keeps alive: 32 listings of a million entries each must not stay resident."""

    def __init__(self, max_dirs: int = 32, max_bytes: int = DEFAULT_LISTING_BYTES) -> None:
        self.max_dirs = max_dirs
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Listing] = OrderedDict()
        self.nbytes = 0

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
            old = self._cache.pop(dir_id, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._cache[dir_id] = listing
            self.nbytes += listing.nbytes
            while len(self._cache) > self.max_dirs or (self.nbytes > self.max_bytes and len(self._cache) > 1):
                self.nbytes -= self._cache.popitem(last=False)[1].nbytes
        return listing

    def is_fresh(self, dir_id: Hashable, mtime_ns: int, ctime_ns: int, resume: bool = False) -> bool:
        """Whether ``get`` would answer a real directory with these times from the cache,
        without reading and sorting it again."""
        with self._lock:
            cached = self._cache.get(dir_id)
        return cached is not None and (resume or _still_valid(cached, (dir_id, mtime_ns, ctime_ns),
                                                               mtime_ns, ctime_ns, False))

    def peek(self, dir_id: Hashable) -> Listing | None:
        """The cached listing of the directory, current or not."""
        with self._lock:
            return self._cache.get(dir_id)

    def invalidate(self, dir_id: Hashable) -> None:
        """The directory changed: its listing no longer serves first pages, only the later
        pages of listings already begun (see the module docstring)."""
        if dir_id not in self._cache:
            return  # no listing kept: no lock taken (a dict's membership test is atomic)
        with self._lock:
            cached = self._cache.get(dir_id)
            if cached is not None:
                cached.key = _STALE


# -- encoded entries ------------------------------------------------------------------------

DEFAULT_MAX_AGE = 1.0            # seconds an entry's attributes are trusted without an event
DEFAULT_MAX_BYTES = 32 << 20     # encoded entries kept, all directories together
_ENTRY_OVERHEAD = 120            # bytes per entry beyond its encoding (lists, dict slot, ints)
_DIR_OVERHEAD = 800              # bytes per cached directory (so empty ones are bounded too)


class EncodedDir:
    """One real directory's entries, each kept as its encoded READDIRPLUS list item (name,
    cookie, fattr3, handle) until an event says it changed.  Built for one ``Listing``
    (same order); ``ends``/``dir_ends`` are running totals of the reply bytes and of the
    ``dircount`` bytes, so a page's end is a bisection, not a walk."""

    __slots__ = ("key", "listing", "items", "pos", "ends", "dir_ends", "missing", "expires", "version",
                 "nbytes", "pages", "dir_fh")

    def __init__(self, key: tuple[int, int], listing: Listing, dir_fh: bytes,
                 item_size: Callable[[bytes], int], expires: float) -> None:
        self.key = key
        self.listing = listing
        self.dir_fh = dir_fh
        names = listing.names
        self.items: list[bytes | None] = [None] * len(names)
        self.pos = {name: i for i, name in enumerate(names)}
        ends, dir_ends, total, dir_total = [], [], 0, 0
        for name in names:
            total += item_size(name)
            dir_total += 24 + len(name)
            ends.append(total)
            dir_ends.append(dir_total)
        self.ends, self.dir_ends = ends, dir_ends
        self.missing = len(names)
        self.expires = expires
        self.version = 0  # bumped by every invalidation: a fill racing with one is not kept
        self.nbytes = _DIR_OVERHEAD + len(names) * _ENTRY_OVERHEAD
        self.pages: dict[tuple[int, int], bytes] = {}

    def page_end(self, start: int, budget: int, dircount: int) -> int:
        """Index past the last entry from ``start`` whose item fits both budgets."""
        base = self.ends[start - 1] if start else 0
        dir_base = self.dir_ends[start - 1] if start else 0
        return min(bisect.bisect_right(self.ends, base + budget, lo=start),
                   bisect.bisect_right(self.dir_ends, dir_base + dircount, lo=start))

    def forget(self, i: int) -> int:
        """Drop entry ``i``'s item; returns the bytes freed."""
        self.version += 1
        item = self.items[i]
        freed = 0
        if item is not None:
            self.items[i] = None
            self.missing += 1
            freed = len(item)
        if self.pages:
            freed += sum(len(p) for p in self.pages.values())
            self.pages.clear()
        self.nbytes -= freed
        return freed


class EntryCache:
    """Encoded READDIRPLUS entries of real directories, all exports together, kept until
    the directory watcher (nfsd/fs/watch.py) or the server's own change says an entry changed,
    and never longer than ``max_age`` seconds: inotify does not see every change (a write
    through a hard link in another directory, an mmap write, another host on a shared file
    system), as Ganesha bounds its attribute cache with Attr_Expiration_Time.  Bounded by
    ``max_bytes`` (least recently listed directories go first).

    The items are the same for every caller: whether one may list the directory and stat
    its entries is checked per call before they are used (nfsd/exports/guard.py,
    ``Nfs3Service``); query directories, whose listings depend on the caller, never come
    here.  An export is cached only while its directories are watched (``enable``)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, max_age: float = DEFAULT_MAX_AGE) -> None:
        self.max_bytes, self.max_age = max_bytes, max_age
        self._lock = threading.Lock()
        self._dirs: OrderedDict[tuple[int, int], EncodedDir] = OrderedDict()
        self._parent_of: dict[tuple[int, int], tuple[int, bytes]] = {}  # cached dir -> its entry
        self._enabled: set[int] = set()
        self.nbytes = 0
        self.hits = self.fills = 0

    # -- which exports ------------------------------------------------------------------
    def enable(self, export_id: int) -> None:
        if self.max_age > 0 and self.max_bytes > 0:
            self._enabled.add(export_id)

    def disable(self, export_id: int) -> None:
        self._enabled.discard(export_id)
        self.clear(export_id)

    def enabled(self, export_id: int) -> bool:
        return export_id in self._enabled

    # -- use ----------------------------------------------------------------------------
    def get(self, export_id: int, d_ino: int, dir_fh: bytes, parent: tuple[int, bytes] | None,
            listing: Listing, item_size: Callable[[bytes], int]) -> EncodedDir:
        """The encoded entries for ``listing`` of this directory: the cached ones when built
        for the same listing and still young; else new ones, keeping every item of the old
        whose name still names the same inode (a create in a big directory encodes one
        entry, not all).  ``parent``: (parent inode, name) of the directory, whose own entry
        there changes with it."""
        key = (export_id, d_ino)
        now = time.monotonic()
        with self._lock:
            enc = self._dirs.get(key)
            if enc is not None and enc.listing is listing and enc.expires > now and enc.dir_fh == dir_fh:
                self._dirs.move_to_end(key)
                self.hits += 1
                return enc
            seen = enc.version if enc is not None else 0
        fresh = EncodedDir(key, listing, dir_fh, item_size, now + self.max_age)
        reuse = enc is not None and enc.expires > now and enc.dir_fh == dir_fh
        if reuse:
            old_items, old_pos, old_inos = enc.items, enc.pos, enc.listing.inos  # type: ignore[union-attr]  # reuse implies enc is not None
            inos, items = listing.inos, fresh.items
            for i, name in enumerate(listing.names):
                j = old_pos.get(name)
                if j is not None and old_inos[j] == inos[i]:
                    item = old_items[j]
                    if item is not None:
                        items[i] = item
                        fresh.nbytes += len(item)
                        fresh.missing -= 1
        with self._lock:
            if reuse and enc.version != seen:  # type: ignore[union-attr]  # reuse implies enc is not None
                # an entry changed while the items were copied: start from nothing
                fresh = EncodedDir(key, listing, dir_fh, item_size, now + self.max_age)
            old = self._dirs.pop(key, None)
            if old is not None:
                old.version += 1  # fills still running for it must not count
                self.nbytes -= old.nbytes
            self._dirs[key] = fresh
            self.nbytes += fresh.nbytes
            if parent is not None:
                self._parent_of[key] = parent
            self._drop_expired(now, fresh)
            self._evict()
            return fresh

    def fill(self, enc: EncodedDir, i: int, item: bytes, version: int) -> None:
        """Keep entry ``i``'s item, encoded from attributes read while ``enc.version`` was
        ``version`` (a change noted since then means it may be stale: not kept)."""
        with self._lock:
            if enc.version != version or enc.items[i] is not None or self._dirs.get(enc.key) is not enc:
                return
            enc.items[i] = item
            enc.missing -= 1
            enc.nbytes += len(item)
            self.nbytes += len(item)
            self.fills += 1
            self._evict()

    def page(self, enc: EncodedDir, start: int, end: int) -> bytes:
        """Items ``start:end`` (every one present) as one bytes, remembered while nothing in
        the directory changes: the listing of an unchanged directory is one lookup."""
        page = enc.pages.get((start, end))
        if page is None:
            page = b"".join(enc.items[start:end])  # type: ignore[arg-type]  # filled: no None left in the page
            with self._lock:
                if len(enc.pages) < 4 and self._dirs.get(enc.key) is enc:
                    enc.pages[(start, end)] = page
                    enc.nbytes += len(page)
                    self.nbytes += len(page)
                    self._evict()
        return page

    def complete(self, export_id: int, d_ino: int, listing: Listing | None) -> bool:
        """Whether a whole listing of this directory is ready to be served from kept items
        (cheap enough to serve on the event loop)."""
        with self._lock:
            enc = self._dirs.get((export_id, d_ino))
        return (enc is not None and listing is not None and enc.listing is listing and enc.missing == 0
                and enc.expires > time.monotonic() and export_id in self._enabled)

    # -- invalidation -------------------------------------------------------------------
    def changed(self, export_id: int, d_ino: int, name: bytes | None = None) -> None:
        """Entry ``name`` of directory ``d_ino`` changed (None: the directory itself changed
        in a way its listing shows, e.g. an entry was added); so did the directory's own
        entry in its parent (its mtime)."""
        key = (export_id, d_ino)
        if key not in self._dirs and key not in self._parent_of:
            return  # nothing of it kept (the common case of a change): no lock taken
        with self._lock:
            enc = self._dirs.get(key)
            if enc is not None and name is not None:
                i = enc.pos.get(name)
                if i is not None:
                    self.nbytes -= enc.forget(i)
            parent = self._parent_of.get(key)
            if parent is not None:
                penc = self._dirs.get((export_id, parent[0]))
                if penc is not None:
                    i = penc.pos.get(parent[1])
                    if i is not None:
                        self.nbytes -= penc.forget(i)

    def clear(self, export_id: int | None = None) -> None:
        """Forget everything (of one export): an inotify queue overflow, a rescan."""
        with self._lock:
            for key in [k for k in self._dirs if export_id is None or k[0] == export_id]:
                self.nbytes -= self._dirs.pop(key).nbytes
                self._parent_of.pop(key, None)

    def _drop_expired(self, now: float, fresh: EncodedDir) -> None:
        """Forget the least recently listed directories whose entries have expired: ``get``
        neither serves nor reuses those, so they were dead weight kept until ``max_bytes``
        pushed them out.  A load that copies a tree in, lists it and removes it, again and
        again (the soak's kernel client), left every removed directory's entries and
        listing behind: anonymous memory grew for hours, up to ``max_bytes`` of estimate
        and the listings beside it.  The walk stops at the first young directory (the order
        is of last use: an expired one a hit moved behind it goes when the walk reaches it,
        at most ``max_age`` later).  Costs nothing on a hit."""
        dirs = self._dirs
        while dirs:
            key, enc = next(iter(dirs.items()))
            if enc.expires > now or enc is fresh:
                return
            del dirs[key]
            self._dropped(key, enc)

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes and self._dirs:
            self._dropped(*self._dirs.popitem(last=False))

    def _dropped(self, key: tuple[int, int], enc: EncodedDir) -> None:
        enc.version += 1  # a ``get`` copying its items meanwhile must not keep them
        self.nbytes -= enc.nbytes
        self._parent_of.pop(key, None)

    def stats(self) -> dict[str, float]:
        """Directories, entries and bytes held; bytes per cached entry."""
        with self._lock:
            entries = sum(len(e.items) - e.missing for e in self._dirs.values())
            return {"dirs": len(self._dirs), "entries": entries, "bytes": self.nbytes,
                    "bytes_per_entry": self.nbytes / entries if entries else 0.0,
                    "hits": self.hits, "fills": self.fills}


class ForgetsEntries(Protocol):
    """What forgets a changed entry: an ``EntryCache``, or the primary's
    ``PublishedEntryCache`` (nfsd/nfs3/entry_events.py), which tells the followers too."""

    def changed(self, export_id: int, d_ino: int, name: bytes | None = None) -> None: ...


class NotingIndex:
    """The index as the directory watcher sees it: every entry it notes is also forgotten
    by the entry cache (the watcher knows only ``note_entry``, ``note_create_event``,
    ``note_delete_event`` and ``note_dir``)."""

    def __init__(self, index: Any, cache: ForgetsEntries, export_id: int) -> None:
        self._index, self._cache, self._export_id = index, cache, export_id

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        self._cache.changed(self._export_id, dir_ino, name)
        self._index.note_entry(dir_ino, name)

    def note_create_event(self, dir_ino: int, name: bytes) -> None:
        self._cache.changed(self._export_id, dir_ino, name)
        self._index.note_create_event(dir_ino, name)

    def note_delete_event(self, dir_ino: int, name: bytes) -> None:
        self._cache.changed(self._export_id, dir_ino, name)
        self._index.note_delete_event(dir_ino, name)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._index, item)
