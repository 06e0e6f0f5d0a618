"""What the server keeps of query directories: a bounded table, so LOOKUPs cannot fill the store.

A query directory's handle names its query.  Most queries are short enough to be *in* the
handle (``INLINE_KEY_MAX`` bytes of ``Query.key()``, see ``nfsd.fs.semantic``): those resolve
with nothing stored, forever, and a LOOKUP of a new name of that kind writes nothing.  A
longer query (a long lab suffix, a long value, a deep nest) has a handle holding a hash of
it, and must be stored to resolve: such *placeholders* are stored when looked up.

Besides, every query that ran keeps a record of its results -- digest and the time they
last changed -- so a directory's mtime survives restarts (``SemanticFS._remember_state``).

Both live in one LMDB database per export, ``queries<export id>`` (qid -> state + key, the
format ``pysfsd check`` verifies), bounded to ``MAX_QUERIES`` records: beyond it, the records
least recently used go first, those of inline queries (only a remembered mtime is lost: the
next listing gets a new one) before stored placeholders (whose handles then answer STALE).
"Used" is a coarse stamp (``qused<export id>``: qid -> seconds), rewritten at most once per
``TOUCH_SECONDS`` per query, so resolving handles costs no write.
Beside it (``qans<export id>``: qid -> ``ANSWER``), what the results were computed from: the
index version, the export root's inode (a replaced export is another index) and their
number, so after a restart a query directory's attributes are known without running its
query again while the index has not changed (``SemanticFS._state``).
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Any

from .names import Query
from ..state.store import Store, StoreFull

STATE = struct.Struct(">Qq")   # results digest (8 bytes as int), results mtime_ns; then the key
_USED = struct.Struct(">Q")    # seconds since the epoch, coarse
ANSWER = struct.Struct(">QQQQ")  # index version, export root inode, results digest, number of entries
INLINE_KEY_MAX = 52            # a link handle: 4 + inode 8 + key <= 64 bytes
MAX_QUERIES = 8192             # records per export (a few MiB of store at most)
TOUCH_SECONDS = 3600


def _now() -> float:
    """Wall-clock seconds (the stamps must mean the same after a restart)."""
    return time.time()


def is_inline(key: bytes) -> bool:
    return len(key) <= INLINE_KEY_MAX


class QueryStore:
    """The ``queries`` and ``qused`` databases of one export."""

    def __init__(self, store: Store, export_id: int, max_queries: int = MAX_QUERIES) -> None:
        self.store = store
        self.export_id = export_id
        self.env = store.env
        self.db = self.env.open_db(b"queries%d" % export_id)
        self.used_db = self.env.open_db(b"qused%d" % export_id)
        self.answers_db = self.env.open_db(b"qans%d" % export_id)
        self.max_queries = max_queries
        self._touched: dict[bytes, float] = {}  # qid -> the stamp last written this run
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------
    def load(self, qid: bytes) -> Query | None:
        """The stored query of a hash handle, or None (never stored, or evicted)."""
        with self.env.begin(db=self.db) as txn:
            raw = txn.get(qid)
        if raw is None:
            return self._load_shared(qid)
        self.touch(qid)
        return Query.from_key(bytes(raw[STATE.size:]))

    def _load_shared(self, qid: bytes) -> Query | None:
        """A placeholder another head of the cluster stored (--shared-state), kept here too."""
        if self.store.shared is None:
            return None
        key = self.store.shared.query_key(self.export_id, qid)
        if key is None:
            return None
        q = Query.from_key(key)
        try:
            self.keep(q, publish=False)
        except StoreFull:
            pass  # resolved all the same; kept next time
        return q

    def state(self, qid: bytes) -> tuple[int, int] | None:
        """(digest, mtime_ns) of a query's last results, or None if none is remembered."""
        with self.env.begin(db=self.db) as txn:
            raw = txn.get(qid)
        return None if raw is None else STATE.unpack_from(raw)

    def answer(self, qid: bytes) -> tuple[int, int, int, int] | None:
        """(index version, root inode, digest, entries) of the query's last results."""
        with self.env.begin(db=self.answers_db) as txn:
            raw = txn.get(qid)
        return None if raw is None or len(raw) != ANSWER.size else ANSWER.unpack(raw)

    # -- writing ---------------------------------------------------------------------------
    def keep(self, q: Query, publish: bool = True) -> None:
        """Store a placeholder whose query does not fit in its handle (once; touched after).
        A full store raises StoreFull (the LOOKUP answers NOSPC).  In a cluster it goes to
        PostgreSQL first (``publish``), so every head resolves the handle."""
        qid = q.qid()
        with self.env.begin(db=self.db) as txn:
            known = txn.get(qid) is not None
        if known:
            self.touch(qid)
            return
        if publish and self.store.shared is not None:
            self.store.shared.keep_query(self.export_id, qid, q.key())
        with self.store.writing(), self.env.begin(write=True) as txn:
            txn.put(qid, STATE.pack(0, time.time_ns()) + q.key(), db=self.db, overwrite=False)
            self._stamp(txn, qid)
            self._evict(txn)

    def remember(self, q: Query, digest: int, create: bool,
                 answer: tuple[int, int, int] | None = None) -> int | None:
        """Record the results' digest; returns their mtime_ns (a new one when the digest
        changed), or None when there is no record and ``create`` is false (an evicted
        placeholder).  On a full store nothing is written, and the mtime is now.
        ``answer``: (index version, root inode, entries) the results are of."""
        qid = q.qid()
        now = time.time_ns()
        try:
            with self.store.writing(), self.env.begin(write=True) as txn:
                raw = txn.get(qid, db=self.db)
                if raw is None:
                    if not create:
                        return None
                    txn.put(qid, STATE.pack(digest, now) + q.key(), db=self.db)
                    self._answered(txn, qid, digest, answer)
                    self._stamp(txn, qid)
                    self._evict(txn)
                    return now
                old_digest, mtime_ns = STATE.unpack_from(raw)
                if old_digest != digest:
                    mtime_ns = max(now, mtime_ns + 1)
                    txn.put(qid, STATE.pack(digest, mtime_ns) + bytes(raw[STATE.size:]), db=self.db)
                self._answered(txn, qid, digest, answer)
                if self._due(qid):
                    self._stamp(txn, qid)
                return mtime_ns
        except StoreFull:
            return now

    def _answered(self, txn: Any, qid: bytes, digest: int, answer: tuple[int, int, int] | None) -> None:
        if answer is None:
            txn.delete(qid, db=self.answers_db)
            return
        version, root_ino, entries = answer
        raw = ANSWER.pack(version, root_ino, digest, entries)
        if txn.get(qid, db=self.answers_db) != raw:
            txn.put(qid, raw, db=self.answers_db)

    def touch(self, qid: bytes) -> None:
        """Mark a query used (a write at most once per TOUCH_SECONDS; none on a full store)."""
        if not self._due(qid):
            return
        try:
            with self.store.writing(), self.env.begin(write=True) as txn:
                if txn.get(qid, db=self.db) is not None:
                    self._stamp(txn, qid)
        except StoreFull:
            pass

    def _due(self, qid: bytes) -> bool:
        last = self._touched.get(qid)
        return last is None or abs(_now() - last) >= TOUCH_SECONDS

    def _stamp(self, txn: Any, qid: bytes) -> None:
        now = _now()
        txn.put(qid, _USED.pack(int(now)), db=self.used_db)
        with self._lock:
            if len(self._touched) >= 4 * self.max_queries:
                self._touched.clear()
            self._touched[qid] = now

    def _evict(self, txn: Any) -> None:
        """Over the bound: drop records down to 7/8 of it, inline queries' first, then the
        least recently used (amortized: one pass per MAX_QUERIES/8 new records)."""
        if txn.stat(self.db)["entries"] <= self.max_queries:
            return
        rows = []
        for qid, raw in txn.cursor(db=self.db):
            used = txn.get(qid, db=self.used_db)
            stamp = _USED.unpack(used)[0] if used is not None and len(used) == _USED.size else 0
            rows.append((not is_inline(bytes(raw[STATE.size:])), stamp, bytes(qid)))
        rows.sort()
        for _, _, qid in rows[:len(rows) - self.max_queries * 7 // 8]:
            txn.delete(qid, db=self.db)
            txn.delete(qid, db=self.used_db)
            txn.delete(qid, db=self.answers_db)
            with self._lock:
                self._touched.pop(qid, None)
