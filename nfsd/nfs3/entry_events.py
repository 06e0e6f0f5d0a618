"""The entry cache's invalidations with several workers (``--workers N``): one watcher.

Each worker keeps its own entry cache (nfsd/nfs3/dirlist.py), which must forget an entry
when it changes behind it: through another worker, or behind the server's back.  Only the
primary watches the trees (inotify); every entry change its watcher sees is also written
to a ring in shared memory (a memfd the parent creates), and a follower reads the ring up
to its end just before it uses its cache (``FollowerEntryCache.get``/``complete``), so a
follower that lists nothing pays nothing: no inotify instance, no wake-up, no system call
per change.  (Before, every worker watched the tree: each change was queued by the kernel
to every worker's inotify instance and parsed by every worker, about a fifth of the CPU
of two workers under SETATTR load.)

The primary publishes a directory's changes only once some follower has cached that
directory (a byte per bucket of directories, set by the follower before it reads the
directory it caches, never cleared): a follower's cache forgets nothing of a directory it
never cached (``EntryCache.changed``), so publishing the others' changes only cost the
primary a slot per event and every follower a replay per change at its next listing.

The ring has one writer (the primary's event loop) and is read without a lock: a slot
carries its sequence number, written last, and the reader checks it before and after
copying the slot (seqlock-style; x86's store order keeps the writer's order).  A reader
that fell more than ``LAG`` changes behind, or finds a slot already reused, forgets the
whole cache instead (cheaper than replaying thousands of changes, and never wrong).
"""
from __future__ import annotations

import mmap
import os
import struct
import threading
from typing import Any

from .dirlist import EntryCache

SLOTS = 8192
LAG = 2048          # a follower this far behind forgets everything instead of replaying
_HEAD = struct.Struct("=Q")                 # changes written so far
_WANTED = 8                                 # header byte: set once a follower caches entries
_SLOT = struct.Struct("=QIQBB")             # sequence + 1, export id, directory inode, kind, name length
SLOT_SIZE = 288                             # _SLOT + a name of up to 255 bytes, rounded
WANT_BUCKETS = 8192                         # after the slots: a byte per bucket of directories cached
_SEQ = struct.Struct("=Q")
ENTRY, DIRECTORY, CLEAR, CLEAR_ALL = 0, 1, 2, 3


class EntryEvents:
    """The ring: ``publish`` in the primary, ``catch_up`` in the followers."""

    def __init__(self, fd: int, slots: int = SLOTS) -> None:
        self.fd, self.slots = fd, slots
        self._map: mmap.mmap | None = None
        self._wants = 0  # where the buckets begin (``attach``)

    @classmethod
    def create(cls, slots: int = SLOTS) -> "EntryEvents":
        fd = os.memfd_create("pysfsd-entry-events", 0)  # not CLOEXEC: only forks use it
        os.ftruncate(fd, 64 + slots * SLOT_SIZE + WANT_BUCKETS)
        return cls(fd, slots)

    def attach(self) -> None:
        self._map = mmap.mmap(self.fd, 64 + self.slots * SLOT_SIZE + WANT_BUCKETS, mmap.MAP_SHARED)
        self._wants = 64 + self.slots * SLOT_SIZE

    def _bucket(self, export_id: int, d_ino: int) -> int:
        return self._wants + ((d_ino ^ (export_id * 0x9E3779B1)) % WANT_BUCKETS)

    def head(self) -> int:
        assert self._map is not None
        return int(_HEAD.unpack_from(self._map, 0)[0])

    # -- the writer --------------------------------------------------------------------
    def publish(self, kind: int, export_id: int, d_ino: int = 0, name: bytes | None = None) -> None:
        """Called by the primary's event loop alone (its watcher, a lost-events rescan)."""
        m = self._map
        if m is None or not m[_WANTED]:
            return  # no follower has cached an entry yet: nothing to forget anywhere
        if kind <= DIRECTORY and not m[self._wants + ((d_ino ^ (export_id * 0x9E3779B1)) % WANT_BUCKETS)]:
            return  # (``_bucket`` inlined) no follower cached this directory: nothing of it to forget
        raw = name[:255] if name is not None else b""
        seq = _HEAD.unpack_from(m, 0)[0]
        at = 64 + (seq % self.slots) * SLOT_SIZE
        # sequence number 0 first (in the same write): a reader meanwhile skips the slot
        _SLOT.pack_into(m, at, 0, export_id, d_ino, kind, len(raw))
        m[at + _SLOT.size:at + _SLOT.size + len(raw)] = raw
        _SEQ.pack_into(m, at, seq + 1)
        _HEAD.pack_into(m, 0, seq + 1)

    def want(self, export_id: int, d_ino: int) -> None:
        """A follower is about to cache this directory's entries: from now on, publish its
        changes.  (Set before the follower reads the directory it caches, so a change it
        did not see is published.)"""
        m = self._map
        if m is None:
            return
        at = self._bucket(export_id, d_ino)
        if not m[at]:
            m[at] = 1
            m[_WANTED] = 1  # (after the bucket: the writer tests this one first)

    # -- a reader ----------------------------------------------------------------------
    def read(self, seq: int) -> tuple[int, int, int, bytes | None] | None:
        """Change number ``seq`` (kind, export, directory inode, name), None once reused."""
        m = self._map
        assert m is not None
        at = 64 + (seq % self.slots) * SLOT_SIZE
        mark, export_id, d_ino, kind, length = _SLOT.unpack_from(m, at)
        name = m[at + _SLOT.size:at + _SLOT.size + length] if kind == ENTRY else None
        if mark != seq + 1 or _SEQ.unpack_from(m, at)[0] != seq + 1:
            return None
        return kind, export_id, d_ino, name


class PublishedEntryCache:
    """The primary watcher's view of the entry cache: what it forgets, the followers'
    caches forget too (what ``NotingIndex`` and a lost-events rescan call)."""

    def __init__(self, cache: EntryCache, events: EntryEvents) -> None:
        self._cache, self._events = cache, events

    def changed(self, export_id: int, d_ino: int, name: bytes | None = None) -> None:
        self._cache.changed(export_id, d_ino, name)
        self._events.publish(ENTRY if name is not None else DIRECTORY, export_id, d_ino, name)

    def clear(self, export_id: int | None = None) -> None:
        self._cache.clear(export_id)
        self._events.publish(CLEAR if export_id is not None else CLEAR_ALL, export_id or 0)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._cache, item)


class FollowerEntryCache(EntryCache):
    """A follower's entry cache: before each use, the primary's watcher's changes since
    the last use are applied."""

    def __init__(self, events: EntryEvents, max_bytes: int, max_age: float) -> None:
        super().__init__(max_bytes, max_age)
        self.events = events
        self._seen = events.head()
        self._catching = threading.Lock()

    def catch_up(self) -> None:
        events = self.events
        head = events.head()
        if head == self._seen:
            return
        with self._catching:
            seq = self._seen
            if head - seq > LAG:
                seq = head
                super().clear()
            while seq < head:
                change = events.read(seq)
                if change is None:  # overwritten meanwhile: we fell behind
                    super().clear()
                    seq = events.head()
                    break
                kind, export_id, d_ino, name = change
                if kind == ENTRY or kind == DIRECTORY:
                    super().changed(export_id, d_ino, name)
                else:
                    super().clear(export_id if kind == CLEAR else None)
                seq += 1
            self._seen = seq

    def get(self, export_id: int, d_ino: int, *args: Any, **kwargs: Any) -> Any:
        self.events.want(export_id, d_ino)
        self.catch_up()
        return super().get(export_id, d_ino, *args, **kwargs)

    def complete(self, export_id: int, d_ino: int, listing: Any) -> bool:
        self.catch_up()
        return super().complete(export_id, d_ino, listing)
