"""The durable change log: every head publishes the changes it makes, and applies the others'.

Publishing: ``Publisher.add`` queues a row; a thread writes the queue in one transaction
per batch (what was queued while the previous batch committed: group commit) through the
``pysfsd_publish`` function (``schema``: one statement, one round trip), which takes
``pg_advisory_xact_lock(LOG_LOCK)``, inserts, and notifies.  The lock is held to the
commit, so sequence numbers are handed out and committed in the same order: a reader that
has seen seq N has seen every committed row below N (a sequence number taken by a
transaction that rolled back stays a gap for good).  A namespace change (create, remove,
rename, link) waits for its row's commit before its reply (``wait_for``), so a head killed
after its reply cannot have lost the row; a WRITE or SETATTR does not wait (see
docs/cluster.rst).  Rows naming the same thing collapse in the queue (a file written a
thousand times in a burst is one row).  While PostgreSQL is unreachable nothing waits and
the queue keeps (``MAX_PENDING`` rows at most; past that it is replaced by one "rescan" row
per export, which makes the other heads rescan).

A row says *what* to look at, never what the head found there: ``e`` an entry
(parent inode, name) appeared, changed or vanished; ``i`` an inode's content or attributes
changed; ``p`` an inode's place (parent, name, generation) for the handle table; ``g`` an
inode was removed (its handles are STALE); ``r`` rescan the export; ``c`` the content
fields the publishing head extracted for a file's content version (``content``: the one row
that carries what a head found, so the others need not run transducers).  A head applies ``e``
and ``i`` by noting them to its own index, which re-reads the file system (coherent across
heads: the MDS keeps CephFS mounts coherent) on its next flush; ``p`` and ``g`` go to its own
handle table.  So applying a row twice does nothing new, and ``last_seq``, kept in the head's
LMDB after each applied batch, only saves work: a crash between the index's commit and
``last_seq``'s re-applies a batch harmlessly.

Following: ``Follower`` LISTENs, and reads ``seq > last_seq ORDER BY seq`` on every other
head's notification and at least once a second (a NOTIFY is lost when nobody listens: it only
wakes), and after every reconnect, so a head that was cut off catches up by itself.

Pruning: every ``report_seconds`` a follower records its ``last_seq`` in ``heads`` and
deletes the rows every head seen within ``dead_after`` has applied and that are older than
``prune_age``, moving ``log_floor`` past them.  A head that comes back with ``last_seq``
below the floor (away longer than ``dead_after``) cannot replay what it missed: it rescans
every export instead.
"""
from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

from .schema import SCANNER_LOCK


log = logging.getLogger("pysfsd.shared")

MAX_PENDING = 200_000    # rows queued while PostgreSQL is away; beyond, one rescan row
POLL_SECONDS = 1.0       # a follower reads the log at least this often
APPLY_BATCH = 5000       # rows read per query
RECONNECT_SECONDS = 1.0
LAST_SEQ_KEY = b"shared:last_seq"
_SEQ = struct.Struct(">q")


class Row(NamedTuple):
    export_id: int
    op: str
    ino: int = 0
    parent: int = 0
    gen: int = 0
    name: bytes = b""
    vals: bytes = b""     # ``c`` rows: the content tier (``content.encode``)

    def key(self) -> tuple:
        """Rows with the same key say the same thing (the newer one wins: a place after a
        tombstone is a reused inode, a tombstone after a place a removal; a file's newer
        content tier replaces the older)."""
        if self.op in ("p", "g"):
            return ("pg", self.export_id, self.ino)
        if self.op == "c":
            return ("c", self.export_id, self.ino)
        return (self.op, self.export_id, self.ino, self.parent, self.name)


class Publisher:
    """Writes queued rows to ``change_log`` in batches, one batch in flight at a time (the
    ``_writer`` lock).  A call that waits for its row writes the batch itself when no other
    is in flight (leader-based group commit: no hand-off to another thread); rows nobody
    waits for are written by the publisher thread, which also retries after failures."""

    def __init__(self, connect: Callable[[], Any], head: str) -> None:
        self._connect = connect
        self.head = head
        lock = threading.Lock()
        self._cond = threading.Condition(lock)   # rows committed (``wait_published``)
        self._work = threading.Condition(lock)   # rows for the publisher thread: not woken by every commit
        self._writer = threading.Lock()
        self._conn: Any = None                # used under ``_writer``
        self.writer = self._writer            # (``loop_commit``)
        self.loop_writer = 0                  # the thread holding ``_writer`` for a batch in flight (``loop_commit``)
        self._committer: Any = None           # loop_commit.LoopCommitter of the event loop
        self._loop_conn: Any = None           # a connection for it, made by the publisher thread
        self._want_loop_conn = True    # made once the publisher thread is connected, before a burst asks
        self._pending: dict[tuple, Row] = {}
        self._overflowed: set[int] = set()   # exports whose rows were dropped
        self._busy = False
        self._closed = False
        self.connected = False
        self.published = 0                    # rows written (a figure for the bench script)
        self._added = 0                       # tickets: rows ever queued ...
        self._done = 0                        # ... and how many of those are committed
        self._thread = threading.Thread(target=self._run, name="pysfsd-publish", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, row: Row, wake: bool = True) -> int:
        """Queue a row; returns its ticket for ``wait_for``.  ``wake``: the publisher thread
        writes it now; else it goes with the next batch anyway (a caller that will wait for
        it writes it itself; a place row goes with the namespace change's row that follows
        it; at the latest the thread's once-a-second look)."""
        with self._cond:
            key = row.key()
            self._pending.pop(key, None)
            self._pending[key] = row
            if len(self._pending) > MAX_PENDING:
                self._overflowed.update(r.export_id for r in self._pending.values())
                self._pending.clear()
            self._added += 1
            if wake:
                self._work.notify()
            return self._added

    def wait_for(self, ticket: int, timeout: float = 2.0) -> bool:
        """Until the row of ``ticket`` (and every row queued before it) is committed; at
        once False while PostgreSQL is unreachable (the row stays queued)."""
        deadline = time.monotonic() + timeout
        while self._done < ticket:
            left = deadline - time.monotonic()
            if not self.connected or left <= 0 or self.loop_writer == threading.get_ident():
                with self._cond:
                    self._work.notify()   # the publisher thread takes it from here
                return False
            if self._writer.acquire(timeout=left):
                try:
                    if self._done < ticket:
                        self._batch()
                finally:
                    self._writer.release()
        return True

    def wait_published(self, timeout: float = 10.0) -> bool:
        """Whether everything queued so far was written within ``timeout`` (tests, bench)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._work.notify()
            while self._pending or self._overflowed or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self) -> bool:
        """Publish what is queued (a few seconds at most, none while PostgreSQL is away),
        then stop; whether everything queued was published."""
        if self._thread.is_alive() and self.connected:
            self.wait_published(5.0)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._work.notify_all()
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self._writer.acquire(timeout=5.0):   # (a batch the stopped event loop never finished: leave it)
            try:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            finally:
                self._writer.release()
        conn, self._loop_conn = self._loop_conn, None   # (one the loop took is closed with the process)
        if conn is not None:
            conn.close()
        with self._cond:
            return not (self._pending or self._overflowed or self._busy)

    def _batch(self) -> bool:
        """Under ``_writer``: write what is queued as one transaction; False if PostgreSQL
        could not take it (the rows are queued again)."""
        taken, rows = self.take()
        if not rows:
            return True
        try:
            self._write(self._connection(), rows)
        except Exception as exc:  # psycopg.Error, and OSError from the socket
            try:
                if self._conn is not None:
                    self._conn.close()
            except Exception:
                pass
            self._conn = None
            self.failed(rows, exc)
            return False
        self.written(taken, rows)
        return True

    def take(self) -> tuple[int, list[Row]]:
        """The queue as one batch (and the ticket it completes); marks a batch in flight."""
        with self._cond:
            if not (self._pending or self._overflowed):
                return self._added, []
            rows, self._pending = list(self._pending.values()), {}
            overflowed, self._overflowed = self._overflowed, set()
            self._busy = True
            taken = self._added
        return taken, rows + [Row(eid, "r") for eid in sorted(overflowed)]

    def _connection(self) -> Any:
        """Under ``_writer``: the connection, made (and the statement prepared) if needed."""
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            res = self._conn.pgconn.prepare(PUBLISH_NAME, PUBLISH_SQL)
            _check(res, COMMAND_OK)
            if not self.connected and self.published:
                log.warning("shared state: publishing changes again")
        return self._conn

    def written(self, taken: int, rows: list[Row]) -> None:
        self.connected = True
        self.published += len(rows)
        with self._cond:
            self._busy = False
            self._done = max(self._done, taken)
            self._cond.notify_all()

    def failed(self, rows: list[Row], exc: BaseException) -> None:
        """A batch failed: its rows are queued again, and waits end at once until the next
        batch goes through."""
        if self.connected or not self.published:
            log.warning("shared state: cannot publish changes (kept, retried): %s", str(exc).strip())
        self.connected = False
        self._put_back(rows)

    def commit_on_loop(self, ticket: int, loop: Any, executor: Any) -> Any:
        """``wait_for`` without leaving the event loop (``loop_commit.LoopCommitter``): None
        if nothing needs waiting for, else a future (True once committed)."""
        if self._committer is None or self._committer.loop is not loop:
            from .loop_commit import LoopCommitter
            self._committer = LoopCommitter(self, loop, executor)
        return self._committer.commit(ticket)

    def take_loop_connection(self) -> Any:
        """The event loop's own connection, made by the publisher thread (connecting blocks);
        None until it is there (then it is asked for)."""
        conn, self._loop_conn = self._loop_conn, None
        if conn is None:
            self._want_loop_conn = True
            self.wake()
        return conn

    def _make_loop_connection(self) -> None:
        try:
            conn = self._connect()
            _check(conn.pgconn.prepare(PUBLISH_NAME, PUBLISH_SQL), COMMAND_OK)
        except Exception:
            return   # asked again by the next burst
        self._want_loop_conn = False
        self._loop_conn = conn

    def wake(self) -> None:
        with self._cond:
            self._work.notify()

    def done_ticket(self) -> int:
        return self._done

    def _put_back(self, rows: list[Row]) -> None:
        with self._cond:
            newer, self._pending = self._pending, {}
            for r in rows:
                self._pending[r.key()] = r
            for key, r in newer.items():
                self._pending.pop(key, None)
                self._pending[key] = r
            self._busy = False
            self._cond.notify_all()   # waiters stop waiting: the rows stay queued

    def _run(self) -> None:
        with self._writer:
            try:
                self._connection()
                self.connected = True
            except Exception as exc:
                log.warning("shared state: cannot publish changes yet (kept, retried): %s", str(exc).strip())
        if self.connected:
            self._make_loop_connection()
        while True:
            with self._cond:
                if not (self._pending or self._overflowed or self._closed):
                    self._work.wait(RECONNECT_SECONDS)   # woken by rows nobody waits for
                if self._closed:
                    break
            with self._writer:
                ok = self._batch()
            if ok and self._want_loop_conn and self._loop_conn is None:
                self._make_loop_connection()
            if not ok:
                with self._cond:
                    self._work.wait(RECONNECT_SECONDS)

    def _write(self, conn: Any, rows: list[Row]) -> None:
        """One statement, so one round trip and (autocommit) one transaction: see the
        ``pysfsd_publish`` function in ``schema``.  Prepared once per connection and run
        through libpq directly (``pgconn``, which lets go of the GIL while it waits), with
        array literals made here: psycopg's cursor and list dumper cost a head about three
        times the CPU of this (``shared_bench.py``)."""
        _check(conn.pgconn.exec_prepared(PUBLISH_NAME, self.params(rows)), TUPLES_OK)

    def params(self, rows: list[Row]) -> list[bytes]:
        return [self.head.encode(), _ints(r.export_id for r in rows).encode(),
                ("{" + ",".join(r.op for r in rows) + "}").encode(),
                _ints(r.ino for r in rows).encode(), _ints(r.parent for r in rows).encode(),
                _ints(r.gen for r in rows).encode(), _bytes(r.name for r in rows).encode(),
                _bytes(r.vals for r in rows).encode()]


READ_OTHERS = ("WITH m AS (SELECT coalesce(max(seq), 0) AS top FROM change_log) "
               "SELECT m.top, c.seq, c.head, c.export_id, c.op, c.ino, c.parent, c.gen, c.name, c.vals "
               "FROM m LEFT JOIN LATERAL (SELECT * FROM change_log WHERE seq > %s AND seq <= m.top AND head <> %s "
               "ORDER BY seq LIMIT %s) c ON true ORDER BY c.seq")
# whether some head holds the scanner lock (a bigint advisory lock shows as its two halves)
SCANNER_HELD = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid::bigint = %d AND objid::bigint = %d AND objsubid = 1)"
                % (SCANNER_LOCK >> 32, SCANNER_LOCK & 0xFFFFFFFF))
PUBLISH_NAME = b"pysfsd_publish"
PUBLISH_SQL = (b"SELECT pysfsd_publish($1, $2::int[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], "
               b"$7::bytea[], $8::bytea[])")
COMMAND_OK, TUPLES_OK = 1, 2   # libpq's ExecStatus


def _check(res: Any, status: int) -> None:
    """A libpq result that is not ``status`` becomes an error (kept and retried by the caller)."""
    if res.status != status:
        raise OSError(res.error_message.decode(errors="replace").strip() or f"libpq status {res.status}")


def channel(head: str) -> str:
    """The NOTIFY channel of one head (``pysfsd_publish`` computes the same from ``heads``)."""
    return "pysfsd_" + hashlib.md5(head.encode()).hexdigest()[:16]


def _ints(values: Iterable[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _bytes(values: Iterable[bytes]) -> str:
    """A bytea[] literal: every element in hex (``"\\x..."``), so no byte needs quoting."""
    return "{" + ",".join(['"\\\\x' + v.hex() + '"' for v in values]) + "}"


@dataclass
class Target:
    """What a follower updates for one export: the head's own index (``note_*``, ``flush``,
    ``scan``), handle table (``Store``), and the entry cache and node cache that must forget
    what another head changed."""

    export_id: int
    index: Any
    local: Any            # LocalFS: record places, forget nodes
    entries: Any = None   # dirlist.EntryCache
    content: Any = None   # content.SharedContent: published content tiers
    forget_results: Any = None   # SemanticFS.forget_results: cached answers a declared tag changes


class Follower:
    """Applies the other heads' rows to this head's index and handle table."""

    def __init__(self, connect: Callable[[], Any], head: str, store: Any, targets: dict[int, Target],
                 start_seq: int) -> None:
        self._connect = connect
        self.head = head
        self.store = store
        self.targets = targets
        saved = self._load_last_seq()
        self.last_seq: int = start_seq if saved is None else saved
        self.applied = 0
        self.rescans = 0                    # times the log was pruned past this head
        self.report_seconds = 30.0
        self.prune_age = 600.0              # s: rows younger than this are kept anyway
        self.dead_after = 3600.0            # s: heads silent this long do not hold pruning back
        self._reported = 0.0
        self._saved = 0.0
        self.caught_up = threading.Event()  # the log was read to its end at least once
        self.is_scanner: Callable[[], bool] = lambda: False   # this head holds the scanner lock now
        self._scanner_elsewhere = False    # another head held it when the rows being applied were read
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pysfsd-follow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(POLL_SECONDS + 5)

    def _load_last_seq(self) -> int | None:
        with self.store.env.begin(db=self.store.meta) as txn:
            raw = txn.get(LAST_SEQ_KEY)
        return None if raw is None else _SEQ.unpack(raw)[0]

    def _save_last_seq(self) -> None:
        self._saved = time.monotonic()
        with self.store.writing(), self.store.env.begin(write=True, db=self.store.meta) as txn:
            txn.put(LAST_SEQ_KEY, _SEQ.pack(self.last_seq))

    def _run(self) -> None:
        conn = None
        while not self._closed.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                    conn.execute(f"LISTEN {channel(self.head)}")
                    self.report(conn)   # in ``heads`` now: the others' batches notify this head's channel
                    self._check_floor(conn)
                while self._read_some(conn):
                    pass
                self._extract_overdue()
                self.caught_up.set()
                if time.monotonic() - self._reported >= self.report_seconds:
                    self.report(conn)
                self._wait_for_others(conn)
            except Exception as exc:
                if conn is not None:
                    log.warning("shared state: following the change log stopped (retrying): %s",
                                str(exc).strip())
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                self._closed.wait(RECONNECT_SECONDS)
        if conn is not None:
            conn.close()

    def _extract_overdue(self) -> None:
        """Files whose content tier another head was to publish and did not in time: this
        head's index extracts them itself now."""
        for t in self.targets.values():
            due = t.content.due() if t.content is not None else []
            if due:
                for ino in due:
                    t.index.note_ino(ino)
                t.index.flush()

    def _wait_for_others(self, conn: Any) -> None:
        """Until another head's notification (on this head's own channel: its own commits
        do not wake it), or POLL_SECONDS."""
        deadline = time.monotonic() + POLL_SECONDS
        while (left := deadline - time.monotonic()) > 0 and not self._closed.is_set():
            for n in conn.notifies(timeout=left, stop_after=1):
                if n.payload != self.head:
                    return

    def _check_floor(self, conn: Any) -> None:
        floor = int(conn.execute("SELECT pruned_below FROM log_floor").fetchone()[0])
        if self.last_seq + 1 < floor:
            log.warning("shared state: the change log was pruned past this head (at %d, log from %d): "
                        "rescanning", self.last_seq, floor)
            self.apply([(0, "", eid, "r", 0, 0, 0, b"", b"") for eid in self.targets])
            self.rescans += 1
            self.last_seq = floor - 1
            self._save_last_seq()

    def _rescan_role(self) -> str:
        """Every head rescans on an ``r`` row; the content fields are extracted once, by the
        scanner head, which publishes them (``content.SharedContent.rescanning``)."""
        if self.is_scanner():
            return "publish"
        return "expect" if self._scanner_elsewhere else ""

    def report(self, conn: Any) -> int:
        """Record this head's position, prune what every live head has applied; returns the
        rows deleted."""
        self._reported = time.monotonic()
        with conn.transaction():
            conn.execute("INSERT INTO heads (head, last_seq, seen_at) VALUES (%s, %s, now()) "
                         "ON CONFLICT (head) DO UPDATE SET last_seq = EXCLUDED.last_seq, seen_at = now()",
                         (self.head, self.last_seq))
            conn.execute("DELETE FROM heads WHERE seen_at < now() - make_interval(secs => %s)",
                         (self.dead_after * 24,))
            row = conn.execute(
                "SELECT max(seq) FROM change_log WHERE at < now() - make_interval(secs => %s) "
                "AND seq <= (SELECT min(last_seq) FROM heads WHERE seen_at > now() - make_interval(secs => %s))",
                (self.prune_age, self.dead_after)).fetchone()
            upto = row[0] if row else None
            if upto is None:
                return 0
            deleted = conn.execute("DELETE FROM change_log WHERE seq <= %s", (upto,)).rowcount
            conn.execute("UPDATE log_floor SET pruned_below = greatest(pruned_below, %s)", (upto + 1,))
        return deleted

    def _read_some(self, conn: Any) -> bool:
        """Apply the next rows of the other heads; True if there may be more.  This head's
        own rows are not fetched (a ``c`` row can be large): one statement, so one snapshot,
        reads the log's end and the other heads' rows up to it, and ``last_seq`` moves to
        that end (commits follow seq order: nothing below it can still appear)."""
        rows = conn.execute(READ_OTHERS, (self.last_seq, self.head, APPLY_BATCH)).fetchall()
        top = rows[0][0] if rows else None
        others = [r[1:] for r in rows if r[1] is not None]
        if top is None or (top <= self.last_seq and not others):
            return False
        if others:
            if any(r[3] == "r" for r in others):
                self._scanner_elsewhere = bool(conn.execute(SCANNER_HELD).fetchone()[0])
            self.apply(others)
        full = len(others) == APPLY_BATCH
        self.last_seq = others[-1][0] if full else top
        if others or time.monotonic() - self._saved > POLL_SECONDS:
            self._save_last_seq()   # only saves work after a crash: not for own rows alone
        return full

    def apply(self, rows: list[tuple]) -> None:
        """Apply rows (seq, head, export_id, op, ino, parent, gen, name, vals): handle table
        first (a place, a tombstone), then notes to the index, then one flush per export.
        An entry or inode row makes the index wait for the content tier the other head
        publishes (a ``c`` row: the values, noted again so the flush takes them)."""
        touched: set[int] = set()
        rescan: set[int] = set()
        places: dict[int, list[tuple[int, int, int, bytes]]] = {}  # consecutive ones: one write

        def put_places() -> None:
            for eid, recs in places.items():
                self.targets[eid].local.store.put_objects(eid, recs, publish=False)
            places.clear()

        for _seq, _head, eid, op, ino, parent, gen, name, vals in rows:
            t = self.targets.get(eid)
            if t is None:
                continue
            name = bytes(name)
            if op == "p":
                places.setdefault(eid, []).append((ino, parent, gen, name))
                continue
            put_places()
            if op == "g":
                t.local.store.mark_deleted(eid, ino, publish=False)
            elif op == "e":
                if t.content is not None:
                    t.content.expect_entry(parent, name)
                t.index.note_entry(parent, name)
                if t.entries is not None:
                    t.entries.changed(eid, parent, name)
                touched.add(eid)
            elif op == "c":
                if t.content is not None:
                    t.content.published(ino, parent, gen, name, bytes(vals))
                    t.index.note_ino(ino)
                    touched.add(eid)
            elif op == "i":
                if t.content is not None:
                    t.content.expect_ino(ino)
                t.index.note_ino(ino)
                if t.entries is not None:
                    rec = t.local.store.get_object(eid, ino)
                    if rec is not None:
                        t.entries.changed(eid, rec.parent, rec.name)
                touched.add(eid)
            elif op == "r":
                rescan.add(eid)
            elif op in ("d", "t"):   # tags kept in the state store (``tags``)
                from .tags import apply as apply_tag
                apply_tag(t.index, op, ino, gen, name, bytes(vals))
                if op == "d" and t.forget_results is not None:
                    t.forget_results()
                touched.add(eid)
        put_places()
        for eid in sorted(touched | rescan):
            t = self.targets[eid]
            if eid in rescan:
                if t.entries is not None:
                    t.entries.clear(eid)
                if t.content is None:
                    t.index.scan(False)
                else:
                    with t.content.rescanning(self._rescan_role()):
                        t.index.scan(False)
            t.index.flush()
        self.applied += len(rows)
