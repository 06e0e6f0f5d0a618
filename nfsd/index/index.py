"""The semantic index of one export: the API the NFS layer and the commands use.

Threads: queries read LMDB snapshots and take no lock.  Writers (``scan``, ``flush``) take
the index lock; a scan lets go of it between batches and while it reads files, so a flush
(and so a query directory's fault) never waits for a whole scan.  ``note_*`` only queue work,
under a small lock of their own, and are safe from any thread, the event loop's included.

``version`` moves whenever a committed change can alter an answer: a posting added or
removed, or a file or directory moved (paths change).  Callers cache results on it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from time import monotonic_ns
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import AbstractSet, Callable, Iterator, NamedTuple, Sequence, cast

import lmdb

from . import fsread
from ..fs import tags as user_tags
from .transducers.builtin import default_transducers
from .extract import Extractor
from .fields import BUILTIN_FIELDS
from .hits import HitColumns
from .progress import Progress
from .residency import MapTrimmer
from .scanner import ContentPass, Reconciler, ScanStats
from .search import FileRef, Plan, Search
from .space import SpaceWatch
from .tables import NO_XVER, Tables
from .transducers.interface import Transducer, declared_fields

log = logging.getLogger("pysfsd.index")

WALK_MAPPED_MAX = 32 << 20     # mapped index pages a walk over a whole field leaves resident
TOMB_TTL_NS = 3600 * 10**9     # a vanished file's content tier is kept this long...
PURGE_EVERY = 600.0            # ...and flushes look for expired ones this often
_NONE_REMOVED: frozenset[tuple[int, bytes]] = frozenset()
MAX_NOTED_ENTRIES = 100_000    # beyond that, noted entries collapse into directory rescans
EXTRACT_THREADS = min(4, os.cpu_count() or 1)
# A burst of changes (a create storm, an untar) is applied in one batch once it calms down
# rather than by the periodic flush while calls keep coming: a flush thread holding the GIL
# makes the event loop wait up to the switch interval (5 ms) after each of its system calls,
# which halved the namespace calls' rate.  ``maintain`` defers while at least BUSY_NOTES came
# since its last call, for at most DEFER_SECONDS and DEFER_NOTES; queries do not wait for it
# (a query directory applies the queue before answering, see nfsd/fs/semantic.py).
BUSY_NOTES = 500
DEFER_SECONDS = 5.0
DEFER_NOTES = 20_000  # (about 0.4 s of work for the flush that takes them, perhaps a query's)
MAX_FRESH = DEFER_NOTES  # created entries queued with their stat at most (``note_created``)


class CreatedStat(tuple):
    """What the index reads of a new file's creation ``fstat`` while it waits in the queue
    (``Index.note_created``): the ``os.stat_result`` fields it uses, in a plain tuple of
    about 280 bytes against 620 (a create storm queues up to ``MAX_FRESH`` of them)."""

    __slots__ = ()
    st_mode = property(itemgetter(0))
    st_ino = property(itemgetter(1))
    st_dev = property(itemgetter(2))
    st_nlink = property(itemgetter(3))
    st_uid = property(itemgetter(4))
    st_gid = property(itemgetter(5))
    st_size = property(itemgetter(6))
    st_mtime_ns = property(itemgetter(7))
    st_ctime_ns = property(itemgetter(8))

    @staticmethod
    def of(st: os.stat_result) -> "CreatedStat":
        # (the first seven are ``os.stat_result``'s own sequence: one C slice)
        return _new_tuple(CreatedStat, st[:7] + (st.st_mtime_ns, st.st_ctime_ns))


_new_tuple = tuple.__new__


def entry_name(name: bytes) -> bool:
    """Whether a note may name this entry: one path component, not ``.`` or ``..``."""
    return bool(name) and b"/" not in name and name not in (b".", b"..")


class IndexClosed(Exception):
    pass


class FlushRecord(NamedTuple):
    """What the last flush that applied notes did: the version before and after it, and the
    notes applied.  A caller that knows its own note was the only one can update a cached
    answer instead of running its query again (nfsd/fs/tag_dirs.py)."""

    before: int
    after: int
    entries: set[tuple[int, bytes]]
    inos: set[int]
    dirs: set[int]


class Index:
    """The index of one export, stored in named databases ``idx<export_id>:*`` of ``env``
    (see ``tables``).  ``transducers`` default to the built-in ones."""

    def __init__(self, env: lmdb.Environment, export_root: str, export_id: int, *,
                 transducers: Sequence[Transducer] | None = None) -> None:
        chosen = list(transducers) if transducers is not None else default_transducers()
        self._extractor = Extractor(chosen)
        self._compact_created = self._built_in_only(self._extractor)
        # an index that routes or counts its notes (a subclass's own ``note_entry``) takes a
        # created entry as a plain note (``note_created``): decided once, not per CREATE
        self._notes_created = type(self).note_entry is Index.note_entry
        self._chosen = chosen
        # the first index of a tree can take the stat tier alone first (``scan(stat_only=True)``):
        # its records are marked "content tier not extracted yet" (NO_XVER), which the full
        # scan after it (or ``pysfsd check``) sees
        self._stat_extractor = Extractor([t for t in chosen if t.tier == "stat"])
        self._stat_extractor.xver = NO_XVER
        self.root_path = os.path.realpath(export_root)
        self._root_fd = os.open(self.root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self._root_fd)
        self.root_ino: int = st.st_ino
        self._dev = st.st_dev
        self._tables = Tables(env, export_id)
        self._trimmer = MapTrimmer(env)
        began = time.monotonic()
        if self._tables.reset_if_stale(self.root_ino, self._trimmer.trim_over):  # an older layout, migrated
            log.info("index of %s brought up to the current layout in %.1f s", self.root_path,
                     time.monotonic() - began)
        self._search = Search(self._tables, self.root_ino)
        with env.begin() as txn:
            self.version: int = self._tables.version(txn)
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._notes_lock = threading.Lock()
        self._entries: set[tuple[int, bytes]] = set()
        self._inos: set[int] = set()
        self._dirs: set[int] = set()
        # queued entries the server itself just created, empty, with the creation's ``fstat``
        # (``note_created``): while no other note names them, the flush adds them from that
        # stat, and the watcher recognises the inotify echo of their creation (``is_fresh``)
        self._fresh: dict[tuple[int, bytes], os.stat_result | CreatedStat] = {}
        # queued entries noted by nothing but one inotify IN_CREATE (``note_create_event``):
        # maybe the echo of another worker's creation, whose note comes later
        self._echoes: set[tuple[int, bytes]] = set()
        # queued entries noted by nothing but inotify IN_DELETE events (``note_delete_event``):
        # maybe the echo of another worker's removal, whose note comes after it
        self._deletes: set[tuple[int, bytes]] = set()
        # when each queued entry was last noted (``time.monotonic_ns``, the same clock in
        # every process): another worker's removal note tells whether a queued note came
        # before its removal (``queue_removed``)
        self._noted_at: dict[tuple[int, bytes], int] = {}
        # queued entries the server itself just removed (``note_removed``): while no other note
        # names them, the flush takes them for gone without an ``lstat``, and the watcher
        # recognises the inotify echo of their removal (``is_removed``)
        self._removed: set[tuple[int, bytes]] = set()
        self._first_note_at = 0.0  # when the queue became non-empty (0: it is empty)
        self._applying = False  # a flush took the queued notes and has not committed them yet
        self._queued_at_maintain = 0  # how many notes waited at ``maintain``'s last call
        self._pool = ThreadPoolExecutor(max_workers=EXTRACT_THREADS, thread_name_prefix="pysfsd-extract")
        self._closed = False
        self._last_purge = time.monotonic()
        self._space = SpaceWatch(env.path(), self.root_path)
        self._rescan_due = False  # a scan was cut short by a full store
        # told the (ino, parent, name) that no longer hold their inode (removed or moved), after
        # the commit that recorded it: the server drops such handle-table entries, so
        # ``pysfsd check`` finds none left over by changes made behind its back
        self.on_vanished: Callable[[list[tuple[int, int, bytes]]], None] | None = None
        # told the inodes it forgot for good (``purge_tombs``): the handle table's tombstones
        # of them go, so removals alone do not grow it without end
        self.on_purged: Callable[[list[int]], None] | None = None
        self.user_values = user_tags.FallbackStore(env, export_id)  # declared tags, xattr-less files
        self._user_fields = user_tags.UserFieldReader(self.user_values)
        self._forced: set[int] = set()
        self.last_flush: FlushRecord | None = None
        # notes waiting elsewhere, taken in by every flush (other workers': index/writer_channel.py)
        self.before_flush: Callable[[], None] | None = None

    # -- keeping it current --------------------------------------------------------------
    def is_new(self) -> bool:
        """Whether no file was ever indexed (the first scan of this tree is due)."""
        with self._tables.env.begin() as txn:
            return int(txn.stat(self._tables.files)["entries"]) <= 1

    def content_passes(self) -> list[ContentPass]:
        """The passes of a first index's content tier, after its stat pass (``scan(part=)``):
        the transducers that do not declare their fields (user ones) first, then those that
        read few files (by their names), then those that read every file (``broad``: type,
        text).  A field is ready once no later pass may give it (``ready_after``)."""
        content = [t for t in self._chosen if t.tier == "content"]
        declared = [t for t in content if declared_fields(t) is not None]
        groups = [g for g in ([t for t in content if declared_fields(t) is None],
                              [t for t in declared if not getattr(t, "broad", False)],
                              [t for t in declared if getattr(t, "broad", False)]) if g]
        passes = []
        for i, group in enumerate(groups):
            later = frozenset().union(*(declared_fields(t) or () for g in groups[i + 1:] for t in g))
            mine = frozenset().union(*(declared_fields(t) or () for t in group))
            label = "content: " + ", ".join(t.name for t in group) + f", pass {i + 1} of {len(groups)}"
            passes.append(ContentPass(group, i == 0, i == len(groups) - 1, mine - later, label, later,
                                      any(declared_fields(t) is None for t in group)))
        return passes

    def ready_after(self, part: ContentPass) -> frozenset[bytes]:
        """The fields complete once ``part`` is done: those it declares that no later pass
        gives, and after a pass of transducers that declare nothing (run first), every field
        now in the index that no later pass gives."""
        if not part.undeclared:
            return part.ready
        return part.ready | (frozenset(self.fields()) - part.later)

    def scan(self, progress: bool | None = None, stat_only: bool = False, total: int | None = None,
             part: ContentPass | None = None) -> ScanStats:
        """Walk the whole export (never through a symlink): add new files, re-extract changed
        ones, drop vanished ones.  ``progress``: see ``Progress`` (``total``: the files
        expected, for an ETA).  ``stat_only``: the stat tier alone (name, ext, owner, group,
        size, mtime), for a first index that answers those fields soon; a full scan, or the
        ``content_passes``, must follow (only on a new index: on a built one it would drop
        the content tier).  ``part``: one of the ``content_passes``."""
        start, start_ns = time.monotonic(), time.time_ns()
        with self._scan_lock, self._lock:
            if self._closed:
                return ScanStats(0, 0, 0, 0, 0, 0, 0.0)
            what = " (stat fields)" if stat_only else f" ({part.label})" if part is not None else ""
            bar = Progress(progress, self.root_path + what, total)
            r = self._reconciler(yielding=True, extractor=self._stat_extractor if stat_only else None)
            r.part = part
            r.progress = lambda c: bar.update(c.seen)
            r.committed = self._trimmer.trim
            top = fsread.open_path(self._root_fd, b"")
            try:
                if top is None:
                    raise OSError(f"cannot open export {self.root_path}")
                r.walk(top, self.root_ino, full=True)
                r.bury()
                # what vanished before this scan began and was not met again is gone for good
                r.purged += r.w.purge_tombs(start_ns)
                r.commit()
                self._rescan_due = False
                self._space.succeeded()
            except IndexClosed:
                r.w.abort()
            except BaseException as exc:
                r.w.abort()
                if not self._space.failed(exc):
                    raise
                self._rescan_due = True  # what it did not reach waits for space (``maintain``)
            finally:
                if top is not None:
                    os.close(top)
                bar.close()
        stats = r.c.stats(time.monotonic() - start)
        if not stat_only:  # the stat pass of a first index is announced by the server, and
            # so is each content pass (the fields it made ready): one "indexed" line, at the end
            log.log(logging.DEBUG if part is not None and not part.last else logging.INFO, "indexed %s%s: %s",
                    self.root_path, f" ({part.label})" if part is not None else "", stats)
        return stats

    def build_first(self, progress: bool | None = None,
                    ready: Callable[[frozenset[bytes] | None, ScanStats], None] | None = None) -> ScanStats:
        """The first index of a tree, as the server builds it: the stat pass (name, ext,
        owner, group, size, mtime answer after it: tens of thousands of files a second),
        then each of the ``content_passes``, with the same progress line.  ``ready`` is told
        after each: None for the stat fields, else the fields that pass made complete.
        Returns the stat pass's counts over the time of all passes (and the failures of
        the content tier)."""
        first = self.scan(progress, stat_only=True)
        if ready is not None:
            ready(None, first)
        seconds, failed = first.seconds, first.failed
        for part in self.content_passes():
            stats = self.scan(progress, False, first.seen, part)
            seconds, failed = seconds + stats.seconds, max(failed, stats.failed)
            if ready is not None:
                ready(self.ready_after(part), stats)
        return first._replace(seconds=seconds, failed=failed)

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        """Something at DIR/name may have appeared, changed or vanished."""
        key = (dir_ino, name)
        if (key in self._entries and key not in self._fresh and key not in self._echoes
                and key not in self._removed and key not in self._deletes):
            # queued already (the inotify echo of the server's own change): no lock.  A flush
            # that takes the queue after this test reads the entry after the change
            self._noted_at[key] = monotonic_ns()  # (see ``queue_removed``)
            return
        if not entry_name(name):
            return
        self._queue_entry(key, None)

    def note_create_event(self, dir_ino: int, name: bytes) -> None:
        """inotify saw DIR/name (not a directory) created, not as this process's own
        creation (``is_fresh``): noted as ``note_entry`` does.  While nothing else names the
        entry it may be the echo of another worker's creation whose note, with the
        creation's stat, comes after it (``queue_created(late=True)``): that note then
        keeps its stat (the flush reads nothing) instead of finding the entry noted.  (One
        IN_CREATE is all an O_EXCL creation raises; any other event of the name since, or a
        second creation, has it read.)"""
        if entry_name(name):
            self._queue_entry((dir_ino, name), None, echo=True)

    def note_delete_event(self, dir_ino: int, name: bytes) -> None:
        """inotify saw DIR/name (not a directory) deleted, not as this process's own removal
        (``is_removed``): noted as ``note_entry`` does.  While nothing else names the entry
        it may be the echo of another worker's removal, whose note comes after it
        (``queue_removed``): that note then still has the flush take the name for gone."""
        if entry_name(name):
            self._queue_entry((dir_ino, name), None, deleted=True)

    def note_created(self, dir_ino: int, name: bytes, st: os.stat_result) -> None:
        """The server itself just created DIR/name, an empty regular file, and ``st`` is
        the creation's own ``fstat``.  Queued like ``note_entry``; until another note names
        the entry (or its inode), the flush adds it from ``st`` without reading it again
        (no ``lstat``, no user-field ``getxattr``: a new inode has none) and marks its
        record so the next look at it re-reads everything (``FLAG_UNREAD``).  An index that
        routes or counts its notes (another worker's, the writer of several) notes it as
        ``note_entry`` does."""
        if not self._notes_created:
            self.note_entry(dir_ino, name)
        else:
            self.queue_created(dir_ino, name, st)

    def note_removed(self, dir_ino: int, name: bytes) -> None:
        """The server itself just removed DIR/name, a non-directory (its ``unlink``
        succeeded).  Queued like ``note_entry``; until another note names the entry, the
        flush takes it for gone without reading it (an ``lstat`` that fails: in a large
        directory whose entry the open file kept in use, an ext4 look-up and an exception,
        about 4 µs), and the watcher drops the inotify IN_DELETE it raised (``is_removed``).
        An index that routes or counts its notes notes it as ``note_entry`` does."""
        if not self._notes_created:
            self.note_entry(dir_ino, name)
        elif entry_name(name):
            self._queue_entry((dir_ino, name), None, removed=True)

    def queue_removed(self, dir_ino: int, name: bytes, before_ns: int) -> None:
        """Another worker removed DIR/name, a non-directory, after ``before_ns``
        (``time.monotonic_ns``), and no flush has taken the queue since then
        (nfsd/index/writer_channel.py: the note's mark): queued as ``note_removed`` does,
        unless the entry is queued already by a note that came after ``before_ns`` other
        than a deletion (``note_delete_event``): that note may be of a re-creation since,
        which the flush must read.  A note of the entry coming after this one has it read
        too, as for ``note_removed``; so no flush reads the name after the removal before
        this note is queued, and every change since is either queued first or noted after."""
        if entry_name(name):
            self._queue_entry((dir_ino, name), None, unless_queued=True, removed=True, removed_after=before_ns)

    def queue_created(self, dir_ino: int, name: bytes, st: os.stat_result | CreatedStat,
                      late: bool = False) -> None:
        """Queue a created entry with its creation's stat (``note_created``'s work; an index
        that routes or counts its notes calls it itself: nfsd/index/writer_channel.py).
        ``late``: another worker's creation, whose note comes after the change, so whatever
        was noted of the entry meanwhile (the watcher's echo, or a later change) must not be
        undone: then it is read again, as any noted entry is."""
        if not entry_name(name):
            return
        if isinstance(st, CreatedStat):
            if not self._compact_created:  # a transducer may read more of the stat than it keeps
                Index.note_entry(self, dir_ino, name)
                return
        elif self._compact_created:
            st = CreatedStat.of(st)
        self._queue_entry((dir_ino, name), st, unless_queued=late)

    def _queue_entry(self, key: tuple[int, bytes], created: os.stat_result | CreatedStat | None,
                     unless_queued: bool = False, echo: bool = False, removed: bool = False,
                     deleted: bool = False, removed_after: int = 0) -> None:
        now = monotonic_ns()
        with self._notes_lock:
            echoes, deletes = self._echoes, self._deletes
            queued = key in self._entries
            if queued:
                if unless_queued:
                    if key not in deletes and self._noted_at.get(key, now) >= removed_after:
                        removed = False  # noted, perhaps since another worker's removal: read it
                    if key not in echoes:
                        created = None  # noted since the creation (another worker's, nfsd/index/writer_channel.py)
                echo = False  # (an IN_CREATE of a name queued already: a plain note)
            if echo:
                echoes.add(key)
            elif echoes:
                echoes.discard(key)  # named by a note (the creation's own, or a change: read it)
            if deleted:
                if not queued:
                    deletes.add(key)  # (queued by other notes already: it stays out)
            elif deletes:
                deletes.discard(key)
            if not self._first_note_at:
                self._first_note_at = time.monotonic()
            if created is not None and len(self._fresh) < MAX_FRESH:
                self._fresh[key] = created
            elif self._fresh:
                self._fresh.pop(key, None)  # changed since its creation: read it again
            if removed:
                self._removed.add(key)
            elif self._removed:
                self._removed.discard(key)  # named since the server removed it: read it
            self._entries.add(key)
            self._noted_at[key] = now
            if len(self._entries) > MAX_NOTED_ENTRIES:
                self._dirs.update(d for d, _ in self._entries)
                self._entries.clear()
                self._fresh.clear()
                echoes.clear()
                deletes.clear()
                self._noted_at.clear()
                self._removed.clear()

    def is_fresh(self, dir_ino: int, name: bytes) -> bool:
        """Whether DIR/name is queued as created by the server and unchanged since
        (``note_created``): an inotify IN_CREATE of it is the echo of that creation, which
        the watcher may drop.  No lock: a flush taking the queue meanwhile only makes the
        echo a plain note (read again at the next flush)."""
        return (dir_ino, name) in self._fresh

    def is_removed(self, dir_ino: int, name: bytes) -> bool:
        """Whether DIR/name is queued as removed by the server and named by nothing since
        (``note_removed``): an inotify IN_DELETE of it is the echo of that removal, which
        the watcher may drop.  No lock, as ``is_fresh``."""
        return (dir_ino, name) in self._removed

    def note_ino(self, ino: int, force: bool = False) -> None:
        """This file's content or attributes may have changed; ``force``: re-derive its stat
        tier even if its stat is the same (values set in the state store, nfsd/fs/tags.py)."""
        with self._notes_lock:
            if not self._first_note_at:
                self._first_note_at = time.monotonic()
            self._inos.add(ino)
            if force:
                self._forced.add(ino)

    def note_dir(self, dir_ino: int) -> None:
        """Re-list this directory (after an inotify overflow, or unknown changes)."""
        with self._notes_lock:
            if not self._first_note_at:
                self._first_note_at = time.monotonic()
            self._dirs.add(dir_ino)

    def has_notes(self) -> bool:
        """Whether changes are queued that a ``flush`` would apply, or being applied by one
        (in another thread: the queue is empty then, but ``version`` is not yet the one
        that shows them, and a query must wait for that flush; a ``flush`` does).  Cheap:
        no lock; a note queued while this runs was not yet acknowledged to anyone."""
        return bool(self._entries or self._inos or self._dirs or self._applying)

    def flush(self) -> bool:
        """Apply the queued notes now; True if what queries see changed.  While the store is
        full the notes stay queued (see ``space``)."""
        if self.before_flush is not None:
            self.before_flush()
        if self._space.blocked():
            return False
        with self._lock:
            with self._notes_lock:
                entries, inos, dirs = self._entries, self._inos, self._dirs
                self._entries, self._inos, self._dirs = set(), set(), set()
                fresh, self._fresh = self._fresh, {}
                if self._echoes:
                    self._echoes = set()
                if self._deletes:
                    self._deletes = set()
                if self._noted_at:
                    self._noted_at = {}
                removed, self._removed = self._removed, set()
                self._first_note_at = 0.0
                forced, self._forced = self._forced, set()
                self._applying = bool(entries or inos or dirs)
            try:
                return self._apply_taken(entries, inos, dirs, forced, fresh, removed)
            finally:
                self._applying = False

    def _apply_taken(self, entries: set[tuple[int, bytes]], inos: set[int], dirs: set[int],
                     forced: set[int], fresh: dict[tuple[int, bytes], os.stat_result | CreatedStat] | None = None,
                     removed: set[tuple[int, bytes]] | None = None) -> bool:
        """``flush``'s second half, under its lock: the notes it took, applied and committed."""
        purge = time.monotonic() - self._last_purge > PURGE_EVERY
        if self._closed or not (entries or inos or dirs or purge):
            return False
        before = self.version
        r = self._reconciler(yielding=False)
        r.force = forced
        try:
            self._apply_notes(r, entries, inos, dirs, fresh or {}, removed or _NONE_REMOVED)
            r.bury()
            if purge:
                r.purged += r.w.purge_tombs(time.time_ns() - TOMB_TTL_NS)
                self._last_purge = time.monotonic()
            r.commit()
        except BaseException as exc:
            r.w.abort()
            if not self._space.failed(exc):
                raise
            self._requeue(entries, inos, dirs)
            with self._notes_lock:
                self._forced |= forced
            return False
        self._space.succeeded()
        self.last_flush = FlushRecord(before, self.version, entries, inos, dirs)  # never changed again
        return self.version != before

    def _requeue(self, entries: set[tuple[int, bytes]], inos: set[int], dirs: set[int]) -> None:
        with self._notes_lock:
            self._entries |= entries
            self._inos |= inos
            self._dirs |= dirs

    def trim_map(self) -> bool:
        """Drop LMDB's mapped pages from the resident set if they are many (``residency``)."""
        return self._trimmer.trim_over()

    def release_idle(self) -> int:
        """On a quiet server, let go of what only extraction holds (libmagic's handles:
        ``Sniffer.release``; the next file extracted loads one again); how many."""
        return self._extractor.sniffer.release()

    def wrap_extractor(self, wrap: Callable[[Extractor], Extractor]) -> None:
        """Put a step around content extraction (a cluster head takes the values another head
        published instead of running transducers: nfsd/shared/content.py)."""
        self._extractor = wrap(self._extractor)
        self._compact_created = self._built_in_only(self._extractor)

    @staticmethod
    def _built_in_only(x: Extractor) -> bool:
        """Whether only built-in transducers see stats (they read no field ``CreatedStat``
        lacks): then a created file waits in the queue with the compact stat."""
        return bool(getattr(x, "_pure", False) and getattr(x, "_stat_pure", False))

    def idle(self) -> bool:
        """Whether ``maintain`` has nothing to do now but keep the map's pages in bounds: no
        note queued (``has_notes``: with workers, none a follower sent that waits), no rescan
        and no tombstone purge due.  The server's periodic flush then skips its thread hop."""
        return (not self.has_notes() and not self._rescan_due
                and time.monotonic() - self._last_purge <= PURGE_EVERY)

    def maintain(self) -> bool:
        """The server's periodic call: apply the queue, and redo a scan that a full store cut
        short once writes may go through again; keep the mapped pages in bounds."""
        self.trim_map()
        if self._burst_going_on():
            return False
        changed = self.flush()
        if self._rescan_due and not self._space.blocked():
            self.scan()
        return changed

    def _burst_going_on(self) -> bool:
        """Whether ``maintain`` should leave the queue for now (see BUSY_NOTES)."""
        queued = len(self._entries) + len(self._inos) + len(self._dirs)
        came = queued - self._queued_at_maintain
        self._queued_at_maintain = queued
        first = self._first_note_at
        if (came >= BUSY_NOTES and queued < DEFER_NOTES and first
                and time.monotonic() - first < DEFER_SECONDS):
            return True
        self._queued_at_maintain = 0  # the flush that follows takes them all
        return False

    def _apply_notes(self, r: Reconciler, entries: set[tuple[int, bytes]], inos: set[int], dirs: set[int],
                     fresh: dict[tuple[int, bytes], os.stat_result | CreatedStat],
                     removed: AbstractSet[tuple[int, bytes]]) -> None:
        by_dir: dict[int, set[bytes]] = {d: set() for d in dirs}
        txn = r.w.txn
        for ino in inos:
            rec = self._tables.file(txn, ino)
            if rec is not None and not rec.tomb and ino != self.root_ino:
                by_dir.setdefault(rec.parent, set()).add(rec.name)
        for d, name in entries:
            by_dir.setdefault(d, set()).add(name)
        # shallow directories first: a move noted there changes the paths of deeper ones
        depth = {d: self._depth(r, d) for d in by_dir}
        if fresh:
            # (a CreatedStat has every field of a stat the index reads: see ``note_created``)
            r.created = cast(dict[tuple[int, bytes], os.stat_result],
                             {k: st for k, st in fresh.items() if st.st_ino not in inos} if inos else fresh)
        for d in sorted(by_dir, key=depth.__getitem__):
            if d in r.listed:
                # listed by this flush already (a new directory met under its parent, whose
                # files were noted one by one as they were made in it): the listing came after
                # these notes were taken, so it reconciled every one of them
                continue
            path = r.relpath(d)
            fd = fsread.open_path(self._root_fd, path) if path is not None else None
            if fd is None:
                continue  # the directory itself moved or vanished: its own note handles it
            try:
                if os.fstat(fd).st_ino != d:
                    continue
                if d in dirs:
                    r.walk(fd, d, full=False)
                    continue
                for name in sorted(by_dir[d]):
                    if removed and (d, name) in removed:  # gone, as its ``lstat`` would say
                        self._gone(r, d, name)
                    else:
                        st = r.created.get((d, name)) if r.created else None  # (those of ``inos`` left out)
                        if st is None or not r.add_created(fd, d, name, st):
                            self._note_one(r, fd, d, name)
                    r.due()  # a create or remove storm's names: not all in one transaction
                r.run_jobs(fd)
            finally:
                os.close(fd)

    def _depth(self, r: Reconciler, d: int) -> int:
        path = r.relpath(d)
        return 1 << 30 if path is None else (path.count(b"/") + 1 if path else 0)

    @staticmethod
    def _gone(r: Reconciler, d: int, name: bytes) -> None:
        """Entry ``name`` of ``d`` no longer exists: what the index holds under it vanished
        (its entry in the listing goes at once: one look-up, not one here and one at the
        burial)."""
        known = r.w.pop_child(d, name)
        if known is not None:
            r.gone(d, name, known[0], unlisted=True)

    def _note_one(self, r: Reconciler, fd: int, d: int, name: bytes) -> None:
        st = fsread.lstat_at(fd, name)
        if st is None:
            self._gone(r, d, name)
            return
        if r.entry(fd, d, name, st):
            # extractions queued so far read their files through ``fd``: run them before the
            # walk below queues (and runs) the new directory's own
            r.run_jobs(fd)
            sub = fsread.open_dir_at(fd, name, st.st_ino)
            if sub is not None:
                try:
                    r.walk(sub, st.st_ino, full=False)
                finally:
                    os.close(sub)

    def _reconciler(self, yielding: bool, extractor: Extractor | None = None) -> Reconciler:
        def publish(version: int) -> None:
            self.version = version

        def stop() -> None:
            if self._closed:
                raise IndexClosed()

        r = Reconciler(self._tables, extractor or self._extractor, self._root_fd, self.root_ino, self._dev,
                       self._lock, yielding, publish, self._search.relpath, stop, self._pool,
                       self._user_fields)
        r.on_vanished, r.on_purged = self.on_vanished, self.on_purged
        return r

    # -- asking ----------------------------------------------------------------------------
    @property
    def stat_version(self) -> int:
        """The version answers over stat fields alone are valid for (``Tables.stat_version``):
        behind ``version`` while only content fields change."""
        with self._tables.env.begin() as txn:
            return self._tables.stat_version(txn)

    def fields(self) -> list[bytes]:
        return self._search.fields()

    def holds(self, field: bytes, value: bytes) -> bool:
        """Whether any file of the export holds ``field`` = ``value``."""
        return self._search.holds(field, value)

    def is_field(self, name: bytes) -> bool:
        return name in BUILTIN_FIELDS or name in user_tags.USER_FIELDS or self._search.has_values(name)

    def values(self, field: bytes, scope_ino: int, terms: Sequence[tuple[bytes, bytes]] = ()) -> list[bytes]:
        """Sorted distinct values of ``field`` among the files in scope matching all terms."""
        return self._search.values(field, scope_ino, terms)

    def value_counts(self, field: bytes, scope_ino: int, terms: Sequence[tuple[bytes, bytes]] = (),
                     plan: Plan | None = None) -> dict[bytes, int]:
        """value -> how many files in scope matching all terms hold it (a faceted summary)."""
        return self._search.value_counts(field, scope_ino, terms, plan)

    def value_count_items(self, field: bytes, scope_ino: int,
                          terms: Sequence[tuple[bytes, bytes]] = ()) -> Iterator[tuple[bytes, int]]:
        """``value_counts`` as pairs in value order, streamed when the whole field is asked
        (a field directory of a million values: nfsd/query/value_set.py); the pages the
        walk maps are dropped as it goes (``WALK_MAPPED_MAX``)."""
        for n, pair in enumerate(self._search.value_count_items(field, scope_ino, terms), 1):
            yield pair
            if not n & 0xFFFF:
                self._trimmer.trim_over(WALK_MAPPED_MAX)

    def query_plan(self, scope_ino: int, terms: Sequence[tuple[bytes, bytes]], plan: Plan) -> list[FileRef]:
        """``query``, recording what it did in ``plan`` (``pysfsd query --explain``)."""
        return self._search.query_plan(scope_ino, terms, plan)

    def values_of(self, field: bytes, inos: Sequence[int]) -> list[bytes]:
        """Sorted distinct values of ``field`` among the given files (a field directory as one
        caller sees it: the values of the files that caller may reach)."""
        return self._search.values_of(field, inos)

    def query(self, scope_ino: int, terms: Sequence[tuple[bytes, bytes]]) -> list[FileRef]:
        """Files (not directories) below ``scope_ino`` matching every term, sorted by path."""
        return self._search.query(scope_ino, terms)

    def query_rows(self, scope_ino: int, terms: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, bytes]]:
        """``query``'s (ino, path), unsorted: for callers that order them their own way."""
        return self._search.query_rows(scope_ino, terms)

    def query_hits(self, scope_ino: int, terms: Sequence[tuple[bytes, bytes]]) -> HitColumns:
        """``query``'s results as columns, unsorted: a value directory's (nfsd/query/result_set.py)."""
        cols = HitColumns(lambda: self._trimmer.trim_over(WALK_MAPPED_MAX))  # a walk of a million places
        return self._search.query_hits(scope_ino, terms, cols)

    def query_entries(self, scope_ino: int, terms: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, bytes, int, bytes]]:
        """``query``'s (cookie, entry name, ino, path), unsorted: a value directory's rows
        (nfsd/query/result_set.py)."""
        return self._search.query_entries(scope_ino, terms)

    def path_of(self, ino: int) -> bytes | None:
        return self._search.path_of(ino)

    def paths_of(self, ino: int) -> list[bytes]:
        """Every path of a file (hard links have several), ``path_of``'s first."""
        return self._search.paths_of(ino)

    def place_of(self, ino: int) -> tuple[int, int, bytes] | None:
        """(parent inode, generation, name) the index last saw this inode at: how a cluster
        head finds a file another head's handle names without searching (nfsd/shared)."""
        with self._tables.env.begin() as txn:
            rec = self._tables.file(txn, ino)
        return None if rec is None or rec.tomb else (rec.parent, rec.gen, rec.name)

    def entries_of(self, dir_ino: int) -> dict[bytes, tuple[int, int, int, int]]:
        """name -> (ino, size, mtime_ns, ctime_ns) of a directory's indexed entries: what a
        cluster's scanner head compares the tree with (nfsd/shared/scanner.py)."""
        out: dict[bytes, tuple[int, int, int, int]] = {}
        with self._tables.env.begin() as txn:
            for name, ino, _kind in self._tables.listing(txn, dir_ino):
                rec = self._tables.file(txn, ino)
                if rec is not None and not rec.tomb:
                    out[name] = (ino, rec.size, rec.mtime_ns, rec.ctime_ns)
        return out

    def ino_of(self, relpath: bytes) -> int | None:
        return self._search.ino_of(relpath)

    def counts(self) -> dict[bytes, tuple[int, int]]:
        """field -> (distinct values, postings)."""
        return self._search.counts()

    def failures(self) -> int:
        """Files whose current version some transducer failed on."""
        return self._search.failures()

    def failures_by_transducer(self) -> dict[str, int]:
        return self._search.failures_by_transducer()

    def close(self) -> None:
        """Stop (a scan running in another thread ends at its next batch); the LMDB
        environment belongs to the caller and stays open."""
        self._closed = True
        with self._lock:
            self._pool.shutdown(wait=True)
            self._extractor.sniffer.release()  # libmagic's handles, the narrowed databases' files
            if self._root_fd >= 0:
                os.close(self._root_fd)
                self._root_fd = -1
