"""The LMDB environment: handle table, export ids, exclusive-create verifiers.

The handle table maps (export id, inode) to the object's last known parent inode, name and
generation, so a handle can be turned back into an open file after a restart by walking
names down from the export root.  It is a cache of where things are, rebuilt on demand when
files move behind the server's back, so its writes need not be synchronous; what must be
durable (exclusive-create verifiers) is synced explicitly.

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
from typing import Any, Iterable, Iterator, NamedTuple

import lmdb

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


class Store:
    # Address space only: the file grows as data is written.  The index needs about 450
    # bytes per file, and a few KiB per text file (its words), so 4 GiB would run out.
    def __init__(self, path: str, map_size: int = 1 << 40) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)
        self.path = path
        # readahead=False (MDB_NORDAHEAD): a query reads scattered pages; the kernel's
        # readahead would map their neighbours too, and they would count in the RSS
        self.env = lmdb.open(path, max_dbs=128, map_size=map_size, sync=False, metasync=False,
                             max_readers=256, readahead=False)
        self.objects = self.env.open_db(b"objects")
        self.meta = self.env.open_db(b"meta")
        self.verifiers = self.env.open_db(b"createverf")
        self._lock = threading.Lock()
        self.full = False  # the last write failed for want of space
        # Group commit: handle-table writes that need no answer now (a rename's new place, a
        # removal's tombstone, a listed entry's place) made by the event loop while it serves
        # a burst of calls wait here, key -> value (None: tombstone what is recorded), and go
        # in one transaction before the burst's replies leave (``end_burst``): so what a
        # client was told is in the page cache before it is told, as with one commit each.
        self._burst_thread = 0
        self._later: dict[bytes, bytes | None] = {}
        self._roomy: bool | None = None  # ROOM_MARGIN free, checked once per burst
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
            if not is_full(exc, self.path):
                raise
            if not self.full:
                self.full = True
                log.warning("state store %s is full (%s): new objects get NFS3ERR_NOSPC until there "
                            "is space again", self.path, exc)
            raise StoreFull(str(exc)) from exc
        if self.full:
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
        self._burst_thread = threading.get_ident()
        self._roomy = None

    def end_burst(self) -> None:
        """Before the burst's replies leave: write what waits, in one transaction.  Never
        raises: these writes only keep a cache of places current (a full store logs, and a
        handle whose place was lost is found again by a search)."""
        self._burst_thread = 0
        if not self._later:
            return
        later, self._later = self._later, {}
        try:
            with self.writing(), self.env.begin(write=True, db=self.objects) as txn:
                for key, val in later.items():
                    if val is None:
                        self._tombstone(txn, key)
                    elif txn.get(key) != val:
                        txn.put(key, val)
        except StoreFull:
            pass
        except lmdb.Error:
            log.exception("state store %s: deferred handle-table writes failed", self.path)

    def _deferring(self) -> bool:
        return self._burst_thread == threading.get_ident()

    def roomy(self) -> bool:
        """Whether the store can take a burst's writes without a doubt (see ROOM_MARGIN), so
        a write that must know it was taken may wait for the burst's end too."""
        if self._roomy is None:
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
        if self._later and key in self._later:
            raw = self._later[key]
            if raw is None:  # a tombstone waiting to be written
                rec = self.get_object_committed(key)
                return rec._replace(deleted=True) if rec is not None else None
        else:
            rec = self.get_object_committed(key)
            if rec is None and self.shared is not None:  # never looked up here: the index knows
                rec = self.shared.place(export_id, ino)
            return rec
        parent, gen, flags = _OBJ_VAL.unpack_from(raw)
        return ObjectRecord(parent, gen, bytes(raw[_OBJ_VAL.size:]), bool(flags & FLAG_DELETED))

    def get_object_committed(self, key: bytes) -> ObjectRecord | None:
        with self.env.begin(db=self.objects) as txn:
            raw = txn.get(key)
        if raw is None:
            return None
        parent, gen, flags = _OBJ_VAL.unpack_from(raw)
        return ObjectRecord(parent, gen, bytes(raw[_OBJ_VAL.size:]), bool(flags & FLAG_DELETED))

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
            return
        with self.writing(), self.env.begin(write=True, db=self.objects) as txn:
            for ino, parent, gen, name in records:
                key = _OBJ_KEY.pack(export_id, ino)
                if self._later:
                    self._later.pop(key, None)  # older news (a reused inode's tombstone)
                val = _OBJ_VAL.pack(parent, gen & 0xFFFFFFFF, 0) + name
                if txn.get(key) != val:
                    txn.put(key, val)

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
                parent, gen, _ = _OBJ_VAL.unpack_from(raw)
                self._later[key] = _OBJ_VAL.pack(parent, gen, FLAG_DELETED) + raw[_OBJ_VAL.size:]
            return
        with self.writing(), self.env.begin(write=True, db=self.objects) as txn:
            self._tombstone(txn, key)

    @staticmethod
    def _tombstone(txn: lmdb.Transaction, key: bytes) -> None:
        raw = txn.get(key)
        if raw is not None:
            parent, gen, _ = _OBJ_VAL.unpack_from(raw)
            txn.put(key, _OBJ_VAL.pack(parent, gen, FLAG_DELETED) + bytes(raw[_OBJ_VAL.size:]))

    def drop_places(self, export_id: int, places: Iterable[tuple[int, int, bytes]]) -> None:
        """Forget the entries that still record inode ``ino`` at (``parent``, ``name``), for
        each (ino, parent, name) the index saw vanish behind the server's back: a removed
        file leaves nothing behind, a moved one is found again by the search."""
        with self.writing(), self.env.begin(write=True, db=self.objects) as txn:
            for ino, parent, name in places:
                key = _OBJ_KEY.pack(export_id, ino)
                raw = txn.get(key)
                if raw is not None and _OBJ_VAL.unpack_from(raw)[0] == parent and raw[_OBJ_VAL.size:] == name:
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

    def sync(self) -> None:
        """Flush committed transactions to the disk (the periodic sync; best effort: what
        needs durability syncs itself and reports its own failure)."""
        try:
            self.env.sync(True)
        except lmdb.Error as exc:
            log.warning("state store %s: sync failed: %s", self.path, exc)

    def close(self) -> None:
        self.end_burst()
        self.env.sync(True)
        self.env.close()
