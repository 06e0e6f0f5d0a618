"""Bringing the tables in line with the disk: the walk, and the rules for each entry.

One ``Reconciler`` serves one scan or one flush.  For every directory entry it sees on disk
it compares the inode with what the tables hold and does the least work that makes them
agree:

* unknown inode: add it (stat tier now, content tier after the directory's listing);
* same place, same ctime, mtime, size (and extractor version): nothing;
* same place, something changed: re-derive the stat tier; re-extract the content tier only
  if the generation, size or mtime changed (a ctime-only change -- chmod, chown, a new hard
  link -- keeps it);
* known inode at another place: a move or rename; the record follows it, the content tier
  stays if the same transducers treat the new name alike (``Extractor.xver_for``), else it
  is extracted again;
* a file with several hard links is indexed under every name: its record holds one (the
  *primary* place, where it is reconciled), ``links`` the others, ``children`` all; its stat
  tier holds every name's fields.  When the primary name goes, another takes over;
* a tombstone (vanished earlier): it came back, so its content tier is reused if it is
  still the same file.

Entries that disappeared are tombstoned after the walk (so a move seen as delete-then-create
within one pass costs no posting churn), a directory with its whole subtree.

Content extraction happens outside any LMDB write transaction (the server's handle table
shares the environment) and, during a scan, outside the index lock, so queries and flushes
are served meanwhile; its result is applied only if the file is still what was read.
Nothing here keeps per-file state across directories: memory follows the directory being
listed, the depth of the walk, and what changed.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from concurrent.futures import Executor
from typing import Callable, Mapping, NamedTuple, Protocol, Sequence

import lmdb

from . import fsread
from .extract import Extractor, Outcome
from .tables import EMPTY, FLAG_LINKED, FLAG_UNREAD, NO_XVER, FileRecord, Tables, Writer
from .transducers.interface import Transducer

log = logging.getLogger("pysfsd.index")

S_IFDIR = stat.S_IFDIR
S_IFREG = stat.S_IFREG
CHUNK = 1000            # entries between checks for a due commit
JOB_GROUP = 256         # files extracted between applications of their results
# writes per transaction of a scan, at most (checked after every entry and applied result)...
# LMDB keeps the page buffers of its largest write transaction until the environment
# closes (its ``me_dpages`` free list): on a big index the postings written land on pages
# of their own, so a transaction of N writes leaves up to N * 4 KiB in the primary's heap for
# good (about a third of that measured at 30,000 files).  2,000 cost a first scan 2-5 % more
# CPU than 50,000 (docs/design.rst, "Several worker processes": the memory entry)
BATCH_OPS = 2_000
BATCH_SECONDS = 0.5     # ...or this long, whichever comes first
# a flush's budget, checked after each noted name too (``due``): unchecked there, a create
# storm's names all went into one transaction and the primary's heap after a load followed
# the CREATEs it served (+50 MiB RssAnon after 100,000).  10,000 bounded it tighter but cost
# pipelined REMOVE 8 % of its ops per server CPU-second in two runs (more commits, each
# copying the pages it touches), so the budget stays 50,000 (docs/design.rst, "Memory after
# creates")
FLUSH_OPS = 50_000
DEFER_MAX = 50_000      # vanished entries kept for the end of the walk
MAX_DEPTH = 4096
INLINE_BYTES = 4096     # a flush extracts files up to this size itself, in its own write transaction

_new_tuple = tuple.__new__


def _new_record(fields: tuple[int, int, int, int, int, int, int, int, bytes]) -> FileRecord:
    """A ``FileRecord`` of its fields in order, without the NamedTuple's own ``__new__`` (a
    Python call; see ``FileRecord.decode``)."""
    return _new_tuple(FileRecord, fields)


class UserFields(Protocol):
    """Values people set on files (nfsd/fs/tags.py), read with the stat tier."""

    fields: tuple[bytes, ...]  # the fields they fill (``tag``)

    def keys(self, dir_fd: int, name: bytes, st: os.stat_result, txn: lmdb.Transaction | None) -> list[bytes]: ...


class ScanStats(NamedTuple):
    """What one scan did; directories are not counted, every other kind of file is."""

    seen: int
    added: int
    updated: int
    removed: int
    unchanged: int
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.seen / self.seconds if self.seconds > 0 else 0.0


class Counters:
    __slots__ = ("seen", "added", "updated", "removed", "unchanged", "failed")

    def __init__(self) -> None:
        self.seen = self.added = self.updated = self.removed = self.unchanged = self.failed = 0

    def stats(self, seconds: float) -> ScanStats:
        return ScanStats(self.seen, self.added, self.updated, self.removed, self.unchanged, self.failed, seconds)


class Job(NamedTuple):
    """A content extraction due: entry ``name`` of ``parent``, as ``st`` described it
    (``partial``: only the transducers of the scan's ``ContentPass``)."""

    ino: int
    parent: int
    name: bytes
    st: os.stat_result
    stat_failures: list[tuple[str, str]]
    partial: bool = False


class ContentPass(NamedTuple):
    """One pass of a first index's content tier: only ``transducers`` run, on the files whose
    content tier is not extracted yet (NO_XVER), their fields added to what earlier passes
    gave (the first pass replaces).  The last pass marks each file's content tier complete
    (its version), so nothing is extracted twice; a file that changed meanwhile, or that a
    flush extracted, gets the whole content tier at once, as in any scan.  ``ready``: the
    fields it declares that no later pass gives (``Index.ready_after``); ``later``: the
    fields later passes declare; ``undeclared``: some of its transducers declare none."""

    transducers: Sequence[Transducer]
    first: bool
    last: bool
    ready: frozenset[bytes]
    label: str
    later: frozenset[bytes]
    undeclared: bool


class Reconciler:
    def __init__(self, tables: Tables, extractor: Extractor, root_fd: int, root_ino: int, dev: int,
                 lock: threading.Lock, yielding: bool, publish: Callable[[int], None],
                 paths: Callable[[lmdb.Transaction, int], bytes | None], stop: Callable[[], None],
                 pool: Executor, user_fields: UserFields | None = None) -> None:
        """``lock`` is the index lock, held by the caller; with ``yielding`` (a scan) it is let
        go between batches and during extraction, and ``stop`` (which may raise to end the
        scan) is called each time it is taken back.  ``publish`` receives each new version;
        ``paths`` gives a recorded inode's path as a transaction sees it; ``pool`` runs
        extractions (libmagic and tree-sitter let go of the GIL, so threads pay)."""
        self.t = tables
        self.x = extractor
        self.w = Writer(tables)
        self.root_fd, self.root_ino, self.dev = root_fd, root_ino, dev
        self.lock, self.yielding = lock, yielding
        self.budget = BATCH_OPS if yielding else FLUSH_OPS  # writes per transaction
        self.publish = publish
        self.paths = paths
        self.stop = stop
        self.pool = pool
        self.user_fields = user_fields
        self.force: set[int] = set()  # files to re-derive even if their stat looks unchanged
        self.listed: set[int] = set()  # directories whose every entry was reconciled (``directory``)
        # entries the server created and nothing changed since (``Index.note_created``): a
        # listing meets them too (a new directory filled before the flush) and adds them so
        self.created: Mapping[tuple[int, bytes], os.stat_result] = {}
        self.part: ContentPass | None = None  # a pass of a first index's content tier
        self.c = Counters()
        self.jobs: list[Job] = []
        self.deferred: list[tuple[int, bytes, int, bool]] = []
        self.progress: Callable[[Counters], None] = lambda c: None
        self.committed: Callable[[], None] = lambda: None
        # (ino, parent, name): places that no longer hold the inode (removed or moved away),
        # told to ``on_vanished`` after the commit that recorded it
        self.vanished: list[tuple[int, int, bytes]] = []
        self.on_vanished: Callable[[list[tuple[int, int, bytes]]], None] | None = None
        # inodes whose tombstones were purged, told to ``on_purged`` after that commit
        self.purged: list[int] = []
        self.on_purged: Callable[[list[int]], None] | None = None

    # -- transactions and the lock -----------------------------------------------------
    def commit(self) -> None:
        version = self.w.commit()
        if version is not None:
            self.publish(version)
        self.committed()
        if self.vanished:
            gone, self.vanished = self.vanished, []
            if self.on_vanished is not None:
                self.on_vanished(gone)
        if self.purged:
            inos, self.purged = self.purged, []
            if self.on_purged is not None:
                self.on_purged(inos)

    def due(self) -> None:
        """Commit if the transaction reached its write budget: a flush's loop over a
        directory's noted names calls it after each (one ops look, no clock read)."""
        if self.w.ops >= self.budget:
            self._due()

    def _due(self) -> None:
        """Commit a batch that is big or old enough (and let others in, during a scan)."""
        if self.w.is_open and (self.w.ops >= self.budget or time.monotonic() - self.w.opened_at >= BATCH_SECONDS):
            self.commit()
            if self.yielding:
                self.lock.release()
                time.sleep(0.001)  # Python locks are not fair: give a waiting flush its turn
                self.lock.acquire()
                self.stop()

    def relpath(self, ino: int) -> bytes | None:
        self.w.settle()
        return self.paths(self.w.txn, ino)

    # -- walking -------------------------------------------------------------------------
    def walk(self, top_fd: int, top_ino: int, full: bool) -> None:
        """Reconcile directory ``top`` and below it: every subdirectory when ``full``, else only
        the ones new to the index (whose contents are unknown).  ``top_fd`` stays open."""
        levels = [(top_fd, iter(self.directory(top_fd, top_ino, full)))]
        try:
            while levels:
                fd, pending = levels[-1]
                nxt = next(pending, None)
                if nxt is None:
                    levels.pop()
                    if fd != top_fd:
                        os.close(fd)
                    continue
                name, ino = nxt
                if len(levels) >= MAX_DEPTH:
                    log.warning("not indexing below %r: deeper than %d", name, MAX_DEPTH)
                    continue
                sub = fsread.open_dir_at(fd, name, ino)
                if sub is not None:
                    levels.append((sub, iter(self.directory(sub, ino, full))))
        finally:
            for fd, _ in levels:
                if fd != top_fd:
                    os.close(fd)

    def directory(self, fd: int, dir_ino: int, full: bool) -> list[tuple[bytes, int]]:
        """Reconcile every entry of one directory; returns the subdirectories to walk."""
        seen: set[bytes] = set()
        subdirs: list[tuple[bytes, int]] = []
        try:
            listing = fsread.list_dir(fd)
            for i, (name, st) in enumerate(listing, 1):
                seen.add(name)
                made = self.created.get((dir_ino, name)) if self.created else None
                if made is not None and made.st_ino == st.st_ino and self.add_created(fd, dir_ino, name, st):
                    fresh = False  # (an empty regular file: no directory to walk)
                else:
                    fresh = self.entry(fd, dir_ino, name, st)
                if (full or fresh) and stat.S_ISDIR(st.st_mode) and st.st_dev == self.dev:
                    subdirs.append((name, st.st_ino))
                if i % CHUNK == 0:
                    self.run_jobs(fd)
                    self._due()
                elif self.w.ops >= self.budget:  # (a chunk of entries may write many times that)
                    self._due()
        except OSError as exc:
            log.warning("cannot list directory %r: %s", self.relpath(dir_ino), exc)
            self.run_jobs(fd)
            return subdirs
        self.listed.add(dir_ino)
        subdirs.sort(key=lambda s: s[1])
        for name, ino, _ in self.w.listing(dir_ino):
            if name not in seen:
                self.gone(dir_ino, name, ino)
        self.run_jobs(fd)
        self.progress(self.c)
        self._due()
        return subdirs

    # -- one entry -----------------------------------------------------------------------
    def entry(self, dir_fd: int, dir_ino: int, name: bytes, st: os.stat_result) -> bool:
        """Reconcile one entry present on disk; True for a directory whose contents the
        index does not know (new, or back from the dead), which must be walked."""
        if st.st_dev != self.dev:
            return False  # another file system mounted inside the export: inode numbers clash
        w = self.w
        ino = st.st_ino
        kind = stat.S_IFMT(st.st_mode)
        if kind != S_IFDIR:
            self.c.seen += 1
        known = w.child(dir_ino, name)
        if known is not None and known[0] != ino:
            self.gone(dir_ino, name, known[0])
        rec = w.file(ino)
        if rec is not None and not rec.tomb and rec.kind != kind:
            # the inode number was reused for another kind of object: the old one is gone
            self._bury(ino, rec)
            rec = w.file(ino)
        if rec is None or rec.tomb:
            self._add(dir_fd, dir_ino, name, st, rec)
            return kind == S_IFDIR
        moved = rec.parent != dir_ino or rec.name != name
        if moved and kind != S_IFDIR and (st.st_nlink > 1 or rec.flags & FLAG_LINKED):
            if self._another_name(dir_fd, dir_ino, name, st, rec):
                return False
        if moved:
            w.del_child_of(rec.parent, rec.name, ino)
            w.put_child(dir_ino, name, ino, kind)
            self.vanished.append((ino, rec.parent, rec.name))
        if kind == S_IFDIR:
            if moved:
                w.put_file(ino, rec._replace(parent=dir_ino, name=name), moved=True)
            return False
        same = (not moved and rec.ctime_ns == st.st_ctime_ns and rec.mtime_ns == st.st_mtime_ns
                and rec.size == st.st_size and ino not in self.force and not rec.flags & FLAG_UNREAD)
        if same and rec.xver == NO_XVER and self.part is not None:
            self._partial(dir_fd, dir_ino, name, st, rec)
            return False
        if same and self.x.is_current(rec.xver, name, st):
            self.c.unchanged += 1
            return False
        self._refresh(dir_fd, dir_ino, name, st, rec, moved)
        return False

    def add_created(self, dir_fd: int, dir_ino: int, name: bytes, st: os.stat_result) -> bool:
        """An empty file the server just made, ``st`` its creation's ``fstat``
        (``Index.note_created``): a new inode is added without reading its user fields.
        False, with nothing done, when the index holds its inode already (a hard link made
        to it meanwhile was seen first): then it must be read as any entry."""
        if st.st_dev != self.dev:
            return True  # (see ``entry``)
        ino = st.st_ino
        w = self.w
        rec = w.file(ino)
        if rec is not None and not rec.tomb:
            return False
        self.c.seen += 1
        known = w.child(dir_ino, name)
        if known is not None and known[0] != ino:
            self.gone(dir_ino, name, known[0])  # the name held another file, removed since
        if st.st_size == 0 and stat.S_ISREG(st.st_mode) and self.x.content_tier:
            # the usual case, a new inode or one a removed file left (whose tombstone is
            # not kept: see ``_add``): what ``_add`` would do, from the extractor's memos
            found = self.x.created_keys(name, st)
            if found is not None and (rec is None or not self._same_content(rec, st, dir_fd, name)):
                shared, name_key, content_keys, xver = found
                if rec is not None:
                    w.reuse(ino)
                self.c.added += 1
                w.add_created(ino, _new_record((dir_ino, S_IFREG, FLAG_UNREAD, 0, 0, st.st_mtime_ns, st.st_ctime_ns,
                                                xver, name)), shared, name_key, content_keys)
                return True
        self._add(dir_fd, dir_ino, name, st, rec, created=True)
        return True

    def _add(self, dir_fd: int, dir_ino: int, name: bytes, st: os.stat_result, tomb: FileRecord | None,
             created: bool = False) -> None:
        """A new inode, or a tombstone found again; ``created``: see ``add_created``."""
        w = self.w
        ino = st.st_ino
        kind = stat.S_IFMT(st.st_mode)
        if kind == S_IFDIR:
            rec = FileRecord(dir_ino, kind, 0, 0, 0, 0, 0, NO_XVER, name)
            if tomb is None:
                w.add_new(ino, rec, EMPTY, EMPTY)
            else:
                w.revive(ino)
                w.put_file(ino, rec, moved=True)
                w.put_child(dir_ino, name, ino, kind)
            return
        self.c.added += 1
        # a new inode (or a tombstone): no other name recorded; one the server just created
        # has no user fields yet (one set since raises its own note, and its record's
        # FLAG_UNREAD has the next look at it read everything, whatever the ctime says)
        st_out = self._stat_keys(dir_fd, ino, name, st, None, user=not created)
        keep = tomb is not None and self._same_content(tomb, st, dir_fd, name)
        replacing = False
        if tomb is not None and not keep:
            # the inode number of a removed file, taken by an unrelated one (a CREATE after
            # removals): nothing of the tombstone is kept, so the file is added as new, with
            # the buffered writes of ``add_new`` (about half the cost of reviving it)
            w.reuse(ino)
            tomb = None
            replacing = True
        xver = self.x.xver_for(name, st) if keep or not self.x.content_tier else NO_XVER
        empty = None
        if xver == NO_XVER and st.st_size == 0 and kind == stat.S_IFREG:
            # a new empty file (or a reused inode's, its old content tier not kept): nothing to read
            found = self.x.empty_new(name, st)
            if found is not None:
                empty, xver = found
        rec = FileRecord(dir_ino, kind, FLAG_UNREAD if created else 0, tomb.gen if keep and tomb else 0,
                         st.st_size, st.st_mtime_ns, st.st_ctime_ns, xver, name)
        if empty is not None:
            if tomb is None:
                w.add_new(ino, rec, st_out.keys, empty.keys, replacing)
                if st_out.failures or empty.failures:  # else nothing to record: a new inode has no failures yet
                    self._failures(ino, dir_ino, name, st_out.failures + empty.failures)
                return
            old = w.keys_of(ino)
            w.revive(ino)
            w.put_file(ino, rec, moved=True)
            w.put_child(dir_ino, name, ino, kind)
            w.set_keys(ino, old, (st_out.keys, empty.keys), posted=False)
            self._failures(ino, dir_ino, name, st_out.failures + empty.failures)
            return
        if tomb is None:
            w.add_new(ino, rec, st_out.keys, EMPTY, replacing)
        else:
            old = w.keys_of(ino)
            w.revive(ino)
            w.put_file(ino, rec, moved=True)
            w.put_child(dir_ino, name, ino, kind)
            w.set_keys(ino, old, (st_out.keys, old[1] if keep else EMPTY), posted=False)
        self._after_stat(ino, dir_ino, name, st, st_out, extract=xver == NO_XVER)

    def _refresh(self, dir_fd: int, dir_ino: int, name: bytes, st: os.stat_result, rec: FileRecord,
                 moved: bool) -> None:
        """A known file changed (or moved): the stat tier always, the content tier if needed."""
        w = self.w
        ino = st.st_ino
        self.c.updated += 1
        st_out = self._stat_keys(dir_fd, ino, name, st, rec)
        keep = self._same_content(rec, st, dir_fd, name)
        old = w.keys_of(ino)
        if keep or not self.x.content_tier:
            # with no content-tier transducer left, a stale content tier simply goes
            content, xver = (old[1] if keep else EMPTY), self.x.xver_for(name, st)
        elif moved and self.x.xver_for(rec.name, st) != self.x.xver_for(name, st):
            content, xver = EMPTY, NO_XVER  # other transducers apply to the new name
        else:
            content, xver = old[1], NO_XVER  # the old one stays visible until re-extracted
        w.put_file(ino, rec._replace(parent=dir_ino, name=name, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                     ctime_ns=st.st_ctime_ns, xver=xver, flags=rec.flags & ~FLAG_UNREAD),
                   moved=moved)
        w.set_keys(ino, old, (st_out.keys, content))
        self._after_stat(ino, dir_ino, name, st, st_out, extract=xver == NO_XVER)

    def _after_stat(self, ino: int, dir_ino: int, name: bytes, st: os.stat_result, st_out: Outcome,
                    extract: bool) -> None:
        if extract and self.x.content_tier:
            self.jobs.append(Job(ino, dir_ino, name, st, st_out.failures))
        else:
            self._failures(ino, dir_ino, name, st_out.failures)

    def _partial(self, dir_fd: int, dir_ino: int, name: bytes, st: os.stat_result, rec: FileRecord) -> None:
        """A file of a first index, its stat tier indexed: this pass's transducers next."""
        part = self.part
        assert part is not None
        self.c.updated += 1
        if self.x.any_applies(part.transducers, name, st):
            self.jobs.append(Job(st.st_ino, dir_ino, name, st, [], True))
        elif part.last:  # nothing to read: its content tier is complete now
            self._apply(Job(st.st_ino, dir_ino, name, st, [], True), (Outcome(EMPTY, []), 0))

    def _same_content(self, rec: FileRecord, st: os.stat_result, dir_fd: int, name: bytes) -> bool:
        """Whether the content tier extracted for ``rec`` still describes the file."""
        if (rec.kind != stat.S_IFMT(st.st_mode) or rec.size != st.st_size or rec.mtime_ns != st.st_mtime_ns
                or rec.xver != self.x.xver_for(name, st)):
            return False
        if not self.x.content_tier or rec.ctime_ns == st.st_ctime_ns or not stat.S_ISREG(st.st_mode):
            return True
        if st.st_size == 0 and self.x.empty_known(name, st):
            return True  # every empty file with this name has the same content tier
        # ctime moved (rename, chmod...) or the inode number was reused: the generation tells
        gen = fsread.generation_at(dir_fd, name, st.st_ino)
        return gen is None or gen == rec.gen

    def _still_there(self, rec: FileRecord, dir_fd: int, dir_ino: int, ino: int) -> bool:
        """Whether a hard-linked file still has the name it is indexed under."""
        st = fsread.lstat_at(dir_fd, rec.name) if rec.parent == dir_ino else self._lstat_place(rec.parent, rec.name)
        return st is not None and st.st_ino == ino

    def _lstat_place(self, parent: int, name: bytes) -> os.stat_result | None:
        path = self.relpath(parent)
        fd = fsread.open_path(self.root_fd, path) if path is not None else None
        if fd is None:
            return None
        try:
            return fsread.lstat_at(fd, name)
        finally:
            os.close(fd)

    # -- hard links ----------------------------------------------------------------------
    def _stat_keys(self, dir_fd: int | None, ino: int, name: bytes, st: os.stat_result,
                   rec: FileRecord | None, user: bool = True) -> Outcome:
        """The stat tier of a file: with several names, every name's fields; and the values
        people set on the file (nfsd/fs/tags.py), read from ``dir_fd``/``name`` (with no
        ``dir_fd``, the ones already recorded)."""
        out = self.x.stat_keys(name, st)
        more: set[bytes] = set()
        if rec is not None and rec.flags & FLAG_LINKED:
            for _, other in self.w.links_of(ino):
                more |= self.x.stat_keys(other, st).keys
        if self.user_fields is not None and user:
            if dir_fd is not None:
                more.update(self.user_fields.keys(dir_fd, name, st, self.w.txn))
            else:
                more.update(k for k in self.w.keys_of(ino)[0] if k.split(b"\0", 1)[0] in self.user_fields.fields)
        # (most files have one name and no user fields: their keys as extracted)
        return Outcome(out.keys | more, out.failures) if more else out

    def _restat(self, ino: int, rec: FileRecord, st: os.stat_result) -> None:
        """A linked file gained or lost a name: its stat tier follows (and its flag)."""
        w = self.w
        if rec.flags & FLAG_LINKED and not w.links_of(ino):
            rec = rec._replace(flags=rec.flags & ~FLAG_LINKED)
            w.put_file(ino, rec)
        old = w.keys_of(ino)
        w.set_keys(ino, old, (self._stat_keys(None, ino, rec.name, st, rec).keys, old[1]))

    def _another_name(self, dir_fd: int, dir_ino: int, name: bytes, st: os.stat_result, rec: FileRecord) -> bool:
        """DIR/name is a hard link to a file indexed at another place.  True if that place
        still holds it: this name is recorded as one of its others (a change seen through it
        is reconciled at the indexed place).  False if the file left that place: this name
        takes over, as in a move."""
        w = self.w
        ino = st.st_ino
        if not self._still_there(rec, dir_fd, dir_ino, ino):
            w.del_link(ino, dir_ino, name)
            return False
        if not w.is_link(ino, dir_ino, name):
            w.put_link(ino, dir_ino, name)
            w.put_child(dir_ino, name, ino, rec.kind)
            if not rec.flags & FLAG_LINKED:
                rec = rec._replace(flags=rec.flags | FLAG_LINKED)
                w.put_file(ino, rec)
            self._restat(ino, rec, st)
        if (rec.ctime_ns, rec.mtime_ns, rec.size) != (st.st_ctime_ns, st.st_mtime_ns, st.st_size):
            self._at_primary(ino, rec)
        else:
            self.c.unchanged += 1
        return True

    def _at_primary(self, ino: int, rec: FileRecord) -> None:
        """Reconcile a file at its indexed place (it changed, seen through another name)."""
        path = self.relpath(rec.parent)
        fd = fsread.open_path(self.root_fd, path) if path is not None else None
        if fd is None:
            return
        # the extractions queued so far read through another directory's descriptor
        pending, self.jobs = self.jobs, []
        try:
            st = fsread.lstat_at(fd, rec.name)
            if st is not None and st.st_ino == ino:
                self.entry(fd, rec.parent, rec.name, st)
                self.run_jobs(fd)
        finally:
            self.jobs = pending + self.jobs
            os.close(fd)

    def _promote(self, ino: int, rec: FileRecord) -> bool:
        """The primary name of a linked file vanished: another of its names, still there,
        becomes the primary one (False if none is left)."""
        w = self.w
        for parent, name in w.links_of(ino):
            w.del_link(ino, parent, name)
            st = self._lstat_place(parent, name)
            if st is None or st.st_ino != ino:
                self._unlist(ino, parent, name)
                continue
            # the same inode: its content tier stays, unless other transducers apply to this name
            same_rules = self.x.xver_for(rec.name, st) == self.x.xver_for(name, st)
            new = rec._replace(parent=parent, name=name, xver=rec.xver if same_rules else NO_XVER)
            w.put_file(ino, new, moved=True)
            self.vanished.append((ino, rec.parent, rec.name))
            self._restat(ino, new, st)
            if not same_rules or (new.ctime_ns, new.mtime_ns, new.size) != (st.st_ctime_ns, st.st_mtime_ns,
                                                                            st.st_size):
                self._at_primary(ino, w.file(ino) or new)  # (an unlink moves ctime)
            return True
        return False

    def _unlinked(self, ino: int, rec: FileRecord, parent: int, name: bytes) -> None:
        """One of the other names of a linked file vanished."""
        self.vanished.append((ino, parent, name))
        st = self._lstat_place(rec.parent, rec.name)
        if st is not None and st.st_ino == ino:
            self._restat(ino, rec, st)
            rec = self.w.file(ino) or rec
            if (rec.ctime_ns, rec.mtime_ns, rec.size) != (st.st_ctime_ns, st.st_mtime_ns, st.st_size):
                self._at_primary(ino, rec)  # (an unlink moves ctime)

    def _unlist(self, ino: int, parent: int, name: bytes) -> None:
        self.w.del_child_of(parent, name, ino)
        self.vanished.append((ino, parent, name))

    # -- content extraction --------------------------------------------------------------
    def run_jobs(self, dir_fd: int) -> None:
        """Extract the content tier of the files queued from directory ``dir_fd``."""
        while self.jobs:
            group, self.jobs = self.jobs[:JOB_GROUP], self.jobs[JOB_GROUP:]
            if not self.yielding and all(job.st.st_size <= INLINE_BYTES for job in group):
                # a burst of new or rewritten small files (a flush after creates): reading them
                # here costs less than handing each to a pool thread (and the GIL back)
                results = [(job, self._extract(dir_fd, job)) for job in group]
                for job, result in results:
                    self._apply(job, result)
                    self._due()
                continue
            self.commit()
            if self.yielding:
                self.lock.release()
            try:
                results = list(zip(group, self.pool.map(lambda job: self._extract(dir_fd, job), group)))
            except RuntimeError:  # the pool was shut down: the index is closing
                self.stop()
                raise
            finally:
                if self.yielding:
                    self.lock.acquire()
            if self.yielding:
                self.stop()
            for job, result in results:
                self._apply(job, result)
                self._due()

    def _extract(self, dir_fd: int, job: Job) -> tuple[Outcome, int] | None:
        only = self.part.transducers if job.partial and self.part is not None else None
        return self.x.content_keys(dir_fd, job.name, job.st, only)

    def _apply(self, job: Job, result: tuple[Outcome, int] | None) -> None:
        w = self.w
        rec = w.file(job.ino)
        if (result is None or rec is None or rec.tomb or rec.parent != job.parent or rec.name != job.name
                or rec.size != job.st.st_size or rec.mtime_ns != job.st.st_mtime_ns):
            return  # it changed again meanwhile: that change re-extracts it
        outcome, gen = result
        old = w.keys_of(job.ino)
        if job.partial and self.part is not None:
            if rec.xver != NO_XVER:
                return  # extracted whole meanwhile (a flush)
            part = self.part
            w.set_keys(job.ino, old, (old[0], outcome.keys if part.first else old[1] | outcome.keys))
            xver = self.x.xver_for(job.name, job.st) if part.last else NO_XVER
            w.put_file(job.ino, rec._replace(gen=gen or rec.gen, xver=xver))
            if outcome.failures:  # added to the stat pass's and earlier passes' failures
                self._failures(job.ino, job.parent, job.name, outcome.failures, w.failed_of(job.ino))
            return
        w.set_keys(job.ino, old, (old[0], outcome.keys))
        w.put_file(job.ino, rec._replace(gen=gen, xver=self.x.xver_for(job.name, job.st)))
        self._failures(job.ino, job.parent, job.name, job.stat_failures + outcome.failures)

    def _failures(self, ino: int, dir_ino: int, name: bytes, failures: list[tuple[str, str]],
                  before: Sequence[str] = ()) -> None:
        self.w.set_failed(ino, sorted({t for t, _ in failures}.union(before)))
        if failures:
            self.c.failed += 1
            parent = self.relpath(dir_ino)
            where = (parent + b"/" + name if parent else name).decode(errors="replace")
            for transducer, why in failures:
                log.warning("%s: transducer %s failed: %s", where, transducer, why)

    # -- vanished entries ----------------------------------------------------------------
    def gone(self, dir_ino: int, name: bytes, ino: int, unlisted: bool = False) -> None:
        """``name`` in ``dir_ino`` no longer names ``ino``: handled after the walk.
        ``unlisted``: its entry in ``children`` is deleted already (``Writer.pop_child``)."""
        self.deferred.append((dir_ino, name, ino, unlisted))
        if len(self.deferred) > DEFER_MAX:
            self.bury()

    def bury(self) -> None:
        """Tombstone what vanished (unless it was found elsewhere meanwhile)."""
        w = self.w
        deferred, self.deferred = self.deferred, []
        for dir_ino, name, ino, unlisted in deferred:
            if not unlisted:
                w.del_child_of(dir_ino, name, ino)
            rec = w.file(ino)
            if rec is None or rec.tomb:
                pass
            elif rec.parent == dir_ino and rec.name == name:
                if not (rec.flags & FLAG_LINKED and self._promote(ino, rec)):
                    self._bury(ino, rec)
            elif rec.flags & FLAG_LINKED and w.del_link(ino, dir_ino, name):
                self._unlinked(ino, rec, dir_ino, name)
            self._due()

    def _bury(self, ino: int, rec: FileRecord) -> None:
        """Tombstone a file, or a directory and everything recorded below it."""
        w = self.w
        stack = [(ino, rec)]
        while stack:
            i, r = stack.pop()
            if r.is_dir:
                for cname, cino, _ in w.listing(i):
                    w.del_child(i, cname)
                    crec = w.file(cino)
                    if crec is None or crec.tomb:
                        continue
                    if crec.parent == i and crec.name == cname:
                        stack.append((cino, crec))
                    elif crec.flags & FLAG_LINKED and w.del_link(cino, i, cname):
                        self._unlinked(cino, crec, i, cname)
            elif r.flags & FLAG_LINKED and i != ino and self._promote(i, r):
                continue  # still there under another name
            else:
                self.c.removed += 1
                if r.flags & FLAG_LINKED:  # (only a linked file has rows in ``links``)
                    for parent, name in w.links_of(i):
                        w.del_link(i, parent, name)
                        self._unlist(i, parent, name)
            w.tombstone(i, r)
            self.vanished.append((i, r.parent, r.name))
