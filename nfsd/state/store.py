"""The LMDB environment: handle table, export ids, exclusive-create verifiers.

The handle table maps (export id, inode) to the object's last known parent inode, name and
generation, so a handle can be turned back into an open file after a restart by walking
names down from the export root.  It is a cache of where things are, rebuilt on demand when
files move behind the server's back, so its writes need not be synchronous; what must be
durable (exclusive-create verifiers) is synced explicitly.

A lone call (the kernel client's pattern: one CREATE, REMOVE or RENAME at a time) would pay
an LMDB transaction per call for its place: a burst of at most ``JOURNAL_BURST`` writes is
instead appended to a small journal file beside the environment (one ``write``, in the page
cache before the reply, so it survives kill -9 as a commit would) and kept in memory, where
look-ups see it; every ``FOLD_AT`` of them, at the periodic sync, before any other write to
the handle table and at close, they go into LMDB in one transaction and the journal is
emptied.  A server that was killed replays the journal when it opens it (``open_journal``).
Only a store one process writes uses it (not in a cluster, whose other heads read the table
straight from LMDB).  With several workers the primary uses it while no other worker serves a
connection (the kernel client's one connection goes to the primary), and a shared flag tells
the others to have it folded before they touch the table (``share_journal``).

A full store (its file system, or its map) is not a crash: a write that cannot be made raises
``StoreFull``, an ``OSError`` with ``ENOSPC``, so the NFS call that needed it answers
``NFS3ERR_NOSPC``; the condition is logged once, and again when writes go through.
"""
from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, NamedTuple, NoReturn

import lmdb

from ..rpc.burst import Burst
from .journal_flag import JournalFlag

log = logging.getLogger("pysfsd.store")

_OBJ_KEY = struct.Struct(">HQ")
_OBJ_VAL = struct.Struct(">QIB")  # parent inode, generation, flags; then the name
FLAG_DELETED = 1                  # tombstone: the object was removed through the server


# A write that must fail with ENOSPC before its reply (a new object's place) waits for the end
# of the burst only while the store's file system has this much room: far more than a burst
# writes, so the burst's commit cannot be the one that finds it full.
ROOM_MARGIN = 64 << 20
ROOM_RECHECK = 0.1  # seconds a free-space reading above twice the margin is used for

# LMDB reports a short write (the file system filled up mid-commit) as EIO: below this much
# free space, that is taken for a full store rather than a failing disk.
FULL_MARGIN = 1 << 20

# The lone-burst journal (module docstring): its file in the environment's directory, the
# largest burst it takes, and how many places it holds before they go into LMDB.
JOURNAL_NAME = "places.journal"
JOURNAL_BURST = 4
FOLD_AT = 256
_JOURNAL_REC = struct.Struct(">10sBH")  # handle-table key, 1 = tombstone (else a put), value length
# The journal's first 8 bytes: the fold it belongs to.  Each transaction that takes the
# journal in moves the count kept in LMDB (``JOURNAL_GEN``) on, in the same commit, and only
# then empties the file and writes the new count: a journal whose count is not LMDB's was
# taken in already (the server died, or the power failed, between that commit and the
# truncation reaching the disk), and replaying it would put old tombstones over newer places.
_JOURNAL_HEAD = struct.Struct(">Q")
JOURNAL_GEN = b"journal_gen"
# A follower asks the primary to fold at most this many times in a row before it touches the
# handle table (the flag up again after a fold: the primary journaled since, for a UDP caller
# of the follower; what the follower's caller was told before it called is in LMDB by then).
FOLD_TRIES = 3


class StoreFull(OSError):
    """The LMDB environment cannot grow: ENOSPC for whoever needed the write."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.ENOSPC, f"state store full: {detail}")


def is_full(exc: BaseException, path: str) -> bool:
    """Whether an LMDB error means the environment (its map, or its file system) is full."""
    if isinstance(exc, StoreFull | lmdb.MapFullError):
        return True
    if not isinstance(exc, lmdb.Error):
        return False
    text = str(exc)
    if "No space left" in text or "quota exceeded" in text:
        return True
    if "Input/output error" not in text:
        return False
    try:
        v = os.statvfs(path)
    except OSError:
        return False
    free = v.f_bfree if os.geteuid() == 0 else v.f_bavail
    return free * v.f_frsize < FULL_MARGIN


class ObjectRecord(NamedTuple):
    parent: int
    gen: int
    name: bytes
    deleted: bool


def _record(raw: bytes) -> ObjectRecord:
    """A handle-table value, decoded."""
    parent, gen, flags = _OBJ_VAL.unpack_from(raw)
    return ObjectRecord(parent, gen, bytes(raw[_OBJ_VAL.size:]), bool(flags & FLAG_DELETED))


def _as_tombstone(raw: bytes) -> bytes:
    """The tombstone of a handle-table value: the same place, marked deleted."""
    parent, gen, _ = _OBJ_VAL.unpack_from(raw)
    return _OBJ_VAL.pack(parent, gen, FLAG_DELETED) + bytes(raw[_OBJ_VAL.size:])


def _fold(into: dict[bytes, bytes | None], writes: Iterable[tuple[bytes, bytes | None]]) -> None:
    """Handle-table writes, in order, over those ``into`` holds already, as applying them all
    to LMDB would leave them: a tombstone of a place written before marks that place; one of
    nothing written stays None (it tombstones what LMDB holds)."""
    for key, val in writes:
        if val is None:
            prev = into.get(key)
            if prev is not None:
                val = _as_tombstone(prev)
        into[key] = val


class Store:
    # Address space only: the file grows as data is written.  The index needs about 450
    # bytes per file, and a few KiB per text file (its words), so 4 GiB would run out.
    def __init__(self, path: str, map_size: int = 1 << 40) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)
        self.path = path
        # readahead=False (MDB_NORDAHEAD): a query reads scattered pages; the kernel's
        # readahead would map their neighbours too, and they would count in the RSS.
        # max_readers: a slot per read transaction open at once (py-lmdb opens with
        # MDB_NOTLS), for up to nfsd.workers.MAX_COUNT processes of a dozen threads each;
        # 64 bytes a slot in the lock file
        self.env = lmdb.open(path, max_dbs=128, map_size=map_size, sync=False, metasync=False,
                             max_readers=1024, readahead=False)
        self.objects = self.env.open_db(b"objects")
        self.meta = self.env.open_db(b"meta")
        self.verifiers = self.env.open_db(b"createverf")
        # The lone-burst journal (module docstring): its descriptor once ``open_journal``
        # opened it to append; the places it holds, key -> value (None: tombstone what is
        # recorded), not yet in LMDB; its size.  The lock is taken before any write
        # transaction on the handle table (which first takes in what the journal holds).
        self._journal_fd = -1
        self._journaled: dict[bytes, bytes | None] = {}
        self._synced_txn = -1  # the last transaction id when ``sync`` last began
        self._journal_size = 0
        self._journal_gen = 0  # the fold the journal file belongs to (``_JOURNAL_HEAD``)
        self._journal_lock = threading.Lock()
        # --workers (``share_journal``): the primary raises ``_journal_flag`` before it appends
        # and lowers it once folded, and journals only while ``_alone()``; a follower heeds the
        # flag (``_heeded``), having the primary fold (``_ask_fold``) before it reads or writes.
        self._journal_flag: JournalFlag | None = None
        self._alone: Callable[[], bool] | None = None
        self._heeded: JournalFlag | None = None
        self._ask_fold: Callable[[], bool] | None = None
        self.full = False  # the last write failed for want of space
        # Group commit: handle-table writes that need no answer now (a rename's new place, a
        # removal's tombstone, a listed entry's place) made by the event loop while it serves
        # a burst of calls wait here, key -> value (None: tombstone what is recorded), and go
        # in one transaction before the burst's replies leave (``end_burst``): so what a
        # client was told is in the page cache before it is told, as with one commit each.
        # The burst being served (nfsd/rpc/burst.py): its own until the server shares the
        # dispatcher's (``Dispatcher.burst``), whose ``before_replies`` then commit.
        self.burst = Burst()
        self._later: dict[bytes, bytes | None] = {}
        self._roomy = False  # ROOM_MARGIN free, checked once per burst: in ``_roomy_in``
        self._roomy_in = -1
        self._free, self._free_at = 0, 0.0  # the free bytes last read, and when
        # --shared-state (nfsd/shared): places and tombstones are published for the other
        # heads, verifiers are kept in PostgreSQL too; None on a single host
        self.shared: Any = None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around a write transaction: a full store becomes ``StoreFull`` (logged once per
        episode); the first write that goes through again says so."""
        try:
            yield
        except lmdb.Error as exc:
            self._write_failed(exc)
        if self.full:
            self._went_through()

    def _write_failed(self, exc: lmdb.Error) -> NoReturn:
        """A write transaction failed: ``StoreFull`` if the store is full, else ``exc``."""
        if not is_full(exc, self.path):
            raise exc
        if not self.full:
            self.full = True
            log.warning("state store %s is full (%s): new objects get NFS3ERR_NOSPC until there "
                        "is space again", self.path, exc)
        raise StoreFull(str(exc)) from exc

    def _went_through(self) -> None:
        self.full = False
        log.warning("state store %s has space again", self.path)

    # -- exports and boots ----------------------------------------------------------------
    def export_id(self, export_path: str) -> int:
        """A small persistent number for an export path (part of every handle)."""
        key = b"export:" + os.fsencode(export_path)
        with self.writing(), self.env.begin(write=True, db=self.meta) as txn:
            found = txn.get(key)
            if found is not None:
                return int(found)
            next_id = int(txn.get(b"next_export_id") or b"1")
            txn.put(key, str(next_id).encode())
            txn.put(b"next_export_id", str(next_id + 1).encode())
        self.env.sync(True)
        return next_id

    def next_boot(self) -> int:
        """The boot counter, moved on.  On a full store it moves in memory only: the write
        verifier has random bytes besides, so it still changes."""
        try:
            with self.writing(), self.env.begin(write=True, db=self.meta) as txn:
                boot = int(txn.get(b"boot") or b"0") + 1
                txn.put(b"boot", str(boot).encode())
        except StoreFull:
            with self.env.begin(db=self.meta) as txn:
                return int(txn.get(b"boot") or b"0") + 1
        self.sync()
        return boot

    # -- group commit ---------------------------------------------------------------------
    def begin_burst(self) -> None:
        """The calling thread (the event loop) starts serving a burst of calls: writes made
        with ``later`` wait for ``end_burst``."""
        burst = self.burst
        burst.thread = threading.get_ident()
        burst.count += 1

    def end_burst(self) -> None:
        """Before the burst's replies leave: write what waits, in one transaction
        (``close_burst`` then ``commit_later``)."""
        self.burst.thread = 0
        self.commit_later()

    def close_burst(self) -> None:
        """The burst is served: later writes no longer wait, but what waits stays until
        ``commit_later``, which must run before the burst's replies leave (the RPC core's
        ``Dispatcher.before_replies``: at once, or, for replies that wait for their
        directory fsync anyway, once for every burst of that fsync job)."""
        self.burst.thread = 0

    def commit_later(self) -> None:
        """Write what waits (of every burst closed since the last), in one transaction.
        Never raises: these writes only keep a cache of places current (a full store logs,
        and a handle whose place was lost is found again by a search)."""
        if not self._later:
            return
        later, self._later = self._later, {}
        if (self._journal_fd >= 0 and len(later) <= JOURNAL_BURST
                and len(self._journaled) + len(later) <= FOLD_AT
                and (self._alone is None or self._alone()) and self._append(later)):
            return
        try:
            self._write_objects(later.items())
        except StoreFull:
            pass
        except lmdb.Error:
            log.exception("state store %s: deferred handle-table writes failed", self.path)

    # -- the lone-burst journal -------------------------------------------------------------
    def share_journal(self, flag: JournalFlag, alone: Callable[[], bool] | None = None,
                      ask_fold: Callable[[], bool] | None = None) -> None:
        """Several workers, before ``open_journal``: the primary gives ``alone`` (whether no
        other worker serves a connection), a follower ``ask_fold`` (have the primary fold its
        journal into LMDB; False if it did not answer)."""
        if ask_fold is None:
            self._journal_flag, self._alone = flag, alone
        else:
            self._heeded, self._ask_fold = flag, ask_fold

    def _fold_first(self) -> None:
        """A follower, the flag up: the primary's journal holds places LMDB lacks."""
        assert self._heeded is not None and self._ask_fold is not None
        for _ in range(FOLD_TRIES):
            if not self._ask_fold():
                log.warning("state store %s: the primary did not fold its journal: reading the "
                            "handle table as it is", self.path)
                return
            if not self._heeded.up():
                return

    def open_journal(self, append: bool) -> None:
        """Take into LMDB what a journal left by a killed server holds; then, if ``append``
        (this process alone writes the handle table), journal lone bursts from now on."""
        path = os.path.join(self.path, JOURNAL_NAME)
        gen, ops, left = self._read_journal()
        if ops is not None:
            try:
                with self.writing(), self.env.begin(write=True, db=self.objects) as txn:
                    self._apply(txn, ops)
                    gen += 1
                    txn.put(JOURNAL_GEN, str(gen).encode(), db=self.meta)
                self.env.sync(True)
            except StoreFull:
                log.warning("state store %s: full, the places of %d recent changes are left to be "
                            "found again", self.path, len(ops))
            log.info("state store %s: %d places taken from the journal", self.path, len(ops))
        elif left:
            log.info("state store %s: the journal was taken in already", self.path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.ftruncate(fd, 0)
        os.write(fd, _JOURNAL_HEAD.pack(gen))
        self._journal_gen, self._journal_size = gen, _JOURNAL_HEAD.size
        if append:
            self._journal_fd = fd
            if self._journal_flag is not None:  # (a primary killed with it up: all in LMDB now)
                self._journal_flag.clear()
        else:
            os.close(fd)

    def journaled_writes(self) -> dict[bytes, bytes | None]:
        """What the journal holds and LMDB does not yet, folded as the server keeps it
        (``_fold``; None: tombstone what LMDB holds).  Read only: ``pysfsd check`` beside a
        server, or after one was killed, reads the table as the next start will."""
        folded: dict[bytes, bytes | None] = {}
        _fold(folded, self._read_journal()[1] or ())
        return folded

    def _read_journal(self) -> tuple[int, list[tuple[bytes, bytes | None]] | None, bool]:
        """(LMDB's fold count, the journal's writes if the journal belongs to that fold else
        None, whether a journal file with records was found)."""
        try:
            with open(os.path.join(self.path, JOURNAL_NAME), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        with self.env.begin(db=self.meta) as txn:
            gen = int(txn.get(JOURNAL_GEN) or b"0")
        if len(data) >= _JOURNAL_HEAD.size and _JOURNAL_HEAD.unpack_from(data)[0] == gen:
            return gen, _journal_ops(data[_JOURNAL_HEAD.size:]), True
        return gen, None, bool(data)

    def _append(self, later: dict[bytes, bytes | None]) -> bool:
        """Journal a lone burst's writes (see the module docstring); False if the journal
        could not take them (then they are committed as before)."""
        data = b""  # (at most JOURNAL_BURST records: no generator or list made for them)
        for key, val in later.items():
            data += _JOURNAL_REC.pack(key, 1, 0) if val is None else _JOURNAL_REC.pack(key, 0, len(val)) + val
        with self._journal_lock:
            if self._journal_flag is not None:  # before a follower may hear of these places
                self._journal_flag.set()
            try:
                written = os.write(self._journal_fd, data)
            except OSError:
                written = -1
            if written != len(data):  # no record cut in two may stay in it
                try:
                    os.ftruncate(self._journal_fd, self._journal_size)
                except OSError:
                    pass
                return False
            self._journal_size += written
            _fold(self._journaled, later.items())
        return True

    @contextmanager
    def _objects_txn(self) -> Iterator[lmdb.Transaction]:
        """A write transaction on the handle table that first takes in what the journal holds
        (so nothing older in it can later undo this one's writes), and empties the journal
        once committed (its fold count moved on in the same commit: ``_JOURNAL_HEAD``).  A
        follower first has the primary fold its journal, if the flag says it holds places."""
        heeded = self._heeded
        if heeded is not None and heeded.up():
            self._fold_first()
        with self._journal_lock:
            with self.writing(), self.env.begin(write=True, db=self.objects) as txn:
                journaled = self._take_journal(txn)
                yield txn
            self._journal_taken(journaled)

    def _write_objects(self, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """``_apply`` the writes in a transaction of ``_objects_txn``'s, without its two
        generator context managers: the group commit at the end of every burst that changed
        a place (a CREATE's, a REMOVE's tombstone; bursts are one or two calls under a
        pipelined load, so about every call pays it), where they were 2.4 of the 9 µs."""
        heeded = self._heeded
        if heeded is not None and heeded.up():
            self._fold_first()
        with self._journal_lock:
            try:
                with self.env.begin(write=True, db=self.objects) as txn:
                    journaled = self._take_journal(txn)
                    self._apply(txn, writes)
            except lmdb.Error as exc:
                self._write_failed(exc)
            if self.full:
                self._went_through()
            self._journal_taken(journaled)

    def _take_journal(self, txn: lmdb.Transaction) -> dict[bytes, bytes | None]:
        """In a write transaction on the handle table: what the journal holds goes in first
        (so nothing older in it can later undo the transaction's writes), with the fold
        count moved on (``_JOURNAL_HEAD``).  What it took."""
        journaled = self._journaled
        if journaled:
            self._apply(txn, journaled.items())
            txn.put(JOURNAL_GEN, str(self._journal_gen + 1).encode(), db=self.meta)
        return journaled

    def _journal_taken(self, journaled: dict[bytes, bytes | None]) -> None:
        """After the commit that took in ``journaled`` (``_take_journal``), under the journal
        lock: the journal is emptied."""
        if journaled:
            self._journaled = {}
            self._journal_gen += 1
            self._journal_size = _JOURNAL_HEAD.size
            try:
                os.ftruncate(self._journal_fd, 0)
                os.write(self._journal_fd, _JOURNAL_HEAD.pack(self._journal_gen))
            except OSError as exc:  # (a journal left behind is known by its old count)
                log.warning("state store %s: cannot empty the journal: %s", self.path, exc)
        if self._journal_flag is not None:  # (under the lock: nothing appended since)
            self._journal_flag.clear()

    def fold_journal(self) -> None:
        """Put what the journal holds into LMDB now (the periodic sync, close, a follower's
        request)."""
        if self._journaled or (self._journal_flag is not None and self._journal_flag.up()):
            try:
                with self._objects_txn():
                    pass
            except StoreFull:
                pass

    def _deferring(self) -> bool:
        return self.burst.thread == threading.get_ident()

    def roomy(self) -> bool:
        """Whether the store can take a burst's writes without a doubt (see ROOM_MARGIN), so
        a write that must know it was taken may wait for the burst's end too."""
        count = self.burst.count
        if self._roomy_in != count:
            self._roomy_in = count
            now = time.monotonic()
            free = self._free
            if free < 2 * ROOM_MARGIN or now - self._free_at > ROOM_RECHECK:
                # far above the margin, the free space read a moment ago will do (a statvfs
                # per burst was 1-2 % of a CREATE's CPU); near it, every burst reads it again
                try:
                    v = os.statvfs(self.path)
                    free = (v.f_bfree if os.geteuid() == 0 else v.f_bavail) * v.f_frsize
                except OSError:
                    free = 0
                self._free, self._free_at = free, now
            self._roomy = not self.full and free >= ROOM_MARGIN
        return self._roomy

    # -- handle table ---------------------------------------------------------------------
    def get_object(self, export_id: int, ino: int) -> ObjectRecord | None:
        key = _OBJ_KEY.pack(export_id, ino)
        raw: bytes | None
        later, journaled = self._later, self._journaled  # (the loop may swap them meanwhile)
        if later and key in later or journaled and key in journaled:
            raw = later[key] if key in later else journaled.get(key)
            if raw is None:  # a tombstone waiting to be written
                raw = journaled.get(key)  # ... of a place journaled?
                if raw is None:
                    rec = self.get_object_committed(key)
                    return rec._replace(deleted=True) if rec is not None else None
                return _record(_as_tombstone(raw))
        else:
            rec = self.get_object_committed(key)
            if rec is None and self.shared is not None:  # never looked up here: the index knows
                rec = self.shared.place(export_id, ino)
            return rec
        return _record(raw)

    def get_object_committed(self, key: bytes) -> ObjectRecord | None:
        heeded = self._heeded
        if heeded is not None and heeded.up():
            self._fold_first()
        with self.env.begin(db=self.objects) as txn:
            raw = txn.get(key)
        return None if raw is None else _record(raw)

    def put_objects(self, export_id: int, records: Iterable[tuple[int, int, int, bytes]],
                    later: bool = False, must_fit: bool = False, publish: bool = True) -> None:
        """Record (ino, parent, gen, name) tuples, skipping ones already identical.
        ``later``: in the burst being served, if any (see ``end_burst``); ``must_fit``: the
        caller needs StoreFull now if the store cannot take them (a new object's place), so
        they wait only while the store is ``roomy``.  ``publish``: tell the other heads of
        a cluster (not when applying what they told us)."""
        if self.shared is not None and publish:
            records = list(records)
            self._publish_places(export_id, records)
        if later and self._deferring() and (not must_fit or self.roomy()):
            for ino, parent, gen, name in records:
                self._later[_OBJ_KEY.pack(export_id, ino)] = _OBJ_VAL.pack(parent, gen & 0xFFFFFFFF, 0) + name
            self.burst.before_due = True
            return
        with self._objects_txn() as txn:
            for ino, parent, gen, name in records:
                key = _OBJ_KEY.pack(export_id, ino)
                if self._later:
                    self._later.pop(key, None)  # older news (a reused inode's tombstone)
                val = _OBJ_VAL.pack(parent, gen & 0xFFFFFFFF, 0) + name
                if txn.get(key) != val:
                    txn.put(key, val)

    def put_place(self, export_id: int, ino: int, parent: int, gen: int, name: bytes, must_fit: bool) -> None:
        """``put_objects(export_id, [(ino, parent, gen, name)], later=True, must_fit)``
        without its list, tuple and loop where the place waits for the burst's end: what
        ``LocalFS.record`` writes (every CREATE's and MKDIR's place), which a lone client's
        call runs cold, where each helper costs (design.rst, "cold calls")."""
        burst = self.burst
        if self.shared is None and burst.thread == threading.get_ident() and (not must_fit or self.roomy()):
            self._later[_OBJ_KEY.pack(export_id, ino)] = _OBJ_VAL.pack(parent, gen & 0xFFFFFFFF, 0) + name
            burst.before_due = True
            return
        self.put_objects(export_id, [(ino, parent, gen, name)], True, must_fit)

    def put_places(self, export_id: int, places: Iterable[tuple[int, int, bytes, int | None]]) -> None:
        """Record (ino, parent, name, gen) places a walk met; a gen of None keeps the one the
        inode's record has (0 if none), read inside the write transaction that writes it
        (one transaction for the batch, not a read transaction per place as before): no
        other worker's commit can come between the read and the write (LMDB has one writer at
        a time), so a generation written meanwhile is kept, never overwritten by an older
        one; a write this process left waiting for the burst's end is newer still and wins."""
        places = list(places)
        if self.shared is not None:  # (a cluster publishes each place: the general path)
            self.put_objects(export_id, [(i, p, self._gen(export_id, i) if g is None else g, n)
                                         for i, p, n, g in places])
            return
        later = self._later
        with self._objects_txn() as txn:
            for ino, parent, name, gen in places:
                key = _OBJ_KEY.pack(export_id, ino)
                old = txn.get(key)
                if gen is None:
                    pending = later.pop(key, None) if later else None
                    known = pending if pending is not None else old
                    gen = _OBJ_VAL.unpack_from(known)[1] if known is not None else 0
                elif later:
                    later.pop(key, None)  # older news (a reused inode's tombstone)
                val = _OBJ_VAL.pack(parent, gen & 0xFFFFFFFF, 0) + name
                if old != val:
                    txn.put(key, val)

    def _gen(self, export_id: int, ino: int) -> int:
        rec = self.get_object(export_id, ino)
        return rec.gen if rec is not None else 0

    def _publish_places(self, export_id: int, records: list[tuple[int, int, int, bytes]]) -> None:
        """The places that are news (not what this head already holds: no echo of what it
        applied from another head) go to the change log."""
        with self.env.begin(db=self.objects) as txn:
            for ino, parent, gen, name in records:
                val = _OBJ_VAL.pack(parent, gen & 0xFFFFFFFF, 0) + name
                key = _OBJ_KEY.pack(export_id, ino)
                if self._later.get(key, txn.get(key)) != val:
                    self.shared.note_place(export_id, ino, parent, gen, name)

    def mark_deleted(self, export_id: int, ino: int, later: bool = False, publish: bool = True) -> None:
        key = _OBJ_KEY.pack(export_id, ino)
        if self.shared is not None and publish:
            self.shared.note_gone(export_id, ino)
        if (later and self._deferring()) or key in self._later:
            raw = self._later.get(key)
            if raw is None:
                self._later[key] = None
            else:  # its new place waits too: tombstone that
                self._later[key] = _as_tombstone(raw)
            self.burst.before_due = True  # (set after the write: see ``Dispatcher.end_burst``)
            return
        with self._objects_txn() as txn:
            self._tombstone(txn, key)

    @staticmethod
    def _tombstone(txn: lmdb.Transaction, key: bytes) -> None:
        raw = txn.get(key)
        if raw is not None:
            txn.put(key, _as_tombstone(raw))

    @classmethod
    def _apply(cls, txn: lmdb.Transaction, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Write (key, value) pairs waiting in a burst or the journal, in order; a value of
        None tombstones what is recorded.  An identical value is not written again."""
        for key, val in writes:
            if val is None:
                cls._tombstone(txn, key)
            elif txn.get(key) != val:
                txn.put(key, val)

    def drop_places(self, export_id: int, places: Iterable[tuple[int, int, bytes]]) -> int:
        """Forget the entries that still record inode ``ino`` at (``parent``, ``name``), for
        each (ino, parent, name) the index saw vanish behind the server's back: a removed
        file leaves nothing behind, a moved one is found again by the search.  A tombstone
        stays: the index reports the server's own removals too, and without it a later call
        with the removed file's handle was STALE only after a walk of the whole export.
        The number of places dropped."""
        dropped = 0
        with self._objects_txn() as txn:
            for ino, parent, name in places:
                key = _OBJ_KEY.pack(export_id, ino)
                raw = txn.get(key)
                if raw is None:
                    continue
                rec = _record(raw)
                if rec.parent == parent and not rec.deleted and rec.name == name:
                    txn.delete(key)
                    dropped += 1
        return dropped

    def drop_tombstones(self, export_id: int, inos: Iterable[int]) -> None:
        """Forget the tombstones of these inodes (a live place of a reused number stays)."""
        with self._objects_txn() as txn:
            for ino in inos:
                key = _OBJ_KEY.pack(export_id, ino)
                raw = txn.get(key)
                if raw is not None and _record(raw).deleted:
                    txn.delete(key)

    def put_verifier(self, export_id: int, ino: int, gen: int, verf: bytes, durable: bool = True) -> None:
        """Durably remember which verifier created a file (before the CREATE reply);
        ``durable=False`` (an ``async`` export): committed, not flushed."""
        with self.writing(), self.env.begin(write=True, db=self.verifiers) as txn:
            txn.put(_OBJ_KEY.pack(export_id, ino), struct.pack(">I", gen & 0xFFFFFFFF) + verf)
        if durable:
            self.env.sync(True)
        if self.shared is not None:  # a retransmission after failover reaches another head
            self.shared.put_verifier(export_id, ino, gen, verf)

    def get_verifier(self, export_id: int, ino: int, gen: int) -> bytes | None:
        with self.env.begin(db=self.verifiers) as txn:
            raw = txn.get(_OBJ_KEY.pack(export_id, ino))
        if raw is None and self.shared is not None:
            return self.shared.get_verifier(export_id, ino, gen)
        if raw is None or struct.unpack_from(">I", raw)[0] != gen & 0xFFFFFFFF:
            return None
        return bytes(raw[4:])

    def unsynced(self) -> bool:
        """Whether ``sync`` has anything to do: the journal holds records, or a transaction
        (of any process of the environment) was committed since the last ``sync`` began."""
        if self._journaled or (self._journal_flag is not None and self._journal_flag.up()):
            return True
        try:
            return bool(self.env.info()["last_txnid"] != self._synced_txn)
        except lmdb.Error:
            return True  # ``sync`` says what is wrong

    def sync(self) -> None:
        """Flush committed transactions to the disk (the periodic sync; best effort: what
        needs durability syncs itself and reports its own failure)."""
        try:
            self.fold_journal()
            self._synced_txn = self.env.info()["last_txnid"]  # (read first: a later commit syncs next time)
            self.env.sync(True)
        except lmdb.Error as exc:
            log.warning("state store %s: sync failed: %s", self.path, exc)

    def close(self) -> None:
        self.end_burst()
        self.fold_journal()
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        self.env.sync(True)
        self.env.close()


def _journal_ops(data: bytes) -> list[tuple[bytes, bytes | None]]:
    """The (key, value or None for a tombstone) records of a journal, in order; a record cut
    short at its end (a write the file system could not finish) is left out."""
    ops: list[tuple[bytes, bytes | None]] = []
    pos, size = 0, _JOURNAL_REC.size
    while pos + size <= len(data):
        key, tomb, n = _JOURNAL_REC.unpack_from(data, pos)
        pos += size
        if tomb:
            ops.append((key, None))
            continue
        if pos + n > len(data) or n < _OBJ_VAL.size:
            break
        ops.append((key, data[pos:pos + n]))
        pos += n
    return ops
