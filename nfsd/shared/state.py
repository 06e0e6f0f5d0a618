"""``SharedState``: the one object through which a head talks to PostgreSQL.

The rest of the server calls a handful of methods: ``export_id`` (at start),
``keep_query``/``query_key`` (placeholders too long to be their own handle),
``put_verifier``/``get_verifier`` (EXCLUSIVE CREATE), ``note_*`` (changes this head made,
for the change log) and ``start``/``close``.  Calls made while answering a client use one
connection with short timeouts; when PostgreSQL cannot be reached they raise
``SharedUnavailable``, an ``OSError`` with ``EAGAIN``, which the NFS layer answers with
NFS3ERR_JUKEBOX (the client retries later).  Reads of known handles and queries never come
here: they answer from the head's own LMDB, PostgreSQL or not.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from typing import Any

from .changelog import Follower, Publisher, Row
from .schema import ensure_schema

log = logging.getLogger("pysfsd.shared")

CONNECT_TIMEOUT = 3            # seconds to reach PostgreSQL before a call answers JUKEBOX
STATEMENT_TIMEOUT_MS = 3000    # ... or for one statement
RETRY_SECONDS = 1.0            # after a failure, calls answer JUKEBOX at once this long


class SharedUnavailable(OSError):
    """PostgreSQL cannot be reached: the call that needed it is retried by the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.EAGAIN, f"shared state unavailable: {detail}")


def head_name() -> str:
    """This head's name in the change log: host and process, unique while it runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class SharedState:
    def __init__(self, url: str, head: str | None = None) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - the cluster extra
            from ..config.errors import ConfigError
            raise ConfigError("--shared-state needs psycopg: pip install 'pysfsd[cluster]'") from None
        self._psycopg = psycopg
        self.url = url
        self.head = head or head_name()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._down_until = 0.0
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self.unreachable: str | None = None   # why PostgreSQL could not be reached at start
        try:
            self.connect().close()            # creates or migrates the tables (``connect``)
        except psycopg.Error as exc:
            # ``cluster.join`` decides: a head that was a member before starts from its LMDB
            self.unreachable = str(exc).strip()
        self.publisher = Publisher(self.connect, self.head)
        self.follower: Follower | None = None
        self.scanner: Any = None   # scanner.Scanner once following
        self._indexes: dict[int, Any] = {}  # export id -> this head's Index (``place``)
        self.contents: dict[int, Any] = {}  # export id -> content.SharedContent
        self.start_seq = 0  # the log's end when this head started (``cluster.join``)
        # a burst served on the event loop (``begin_burst``): its namespace changes' replies
        # wait for their rows through the future ``end_burst`` returns, not by blocking the loop
        self._burst_thread = 0
        self._burst_ticket = 0
        self._executor: Any = None
        self.crashed = False  # the previous run of this head ended without ``close``

    # -- connections ---------------------------------------------------------------------
    def connect(self) -> Any:
        """A new autocommit connection (each thread that talks to PostgreSQL has its own).
        The first one to succeed creates or migrates the tables: at start, or later for a
        head that started while PostgreSQL was down."""
        conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                     options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    try:
                        ensure_schema(conn)
                    except BaseException:
                        conn.close()
                        raise
                    self._schema_ready = True
        return conn

    def _call(self, sql: str, params: tuple = ()) -> list[tuple]:
        """One statement on the request-path connection; SharedUnavailable if PostgreSQL
        cannot be reached (then for RETRY_SECONDS every call fails at once, so a client's
        calls do not each wait the connect timeout)."""
        with self._lock:
            if time.monotonic() < self._down_until:
                raise SharedUnavailable("recently unreachable")
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.connect()
                cur = self._conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
            except self._psycopg.Error as exc:
                self._down_until = time.monotonic() + RETRY_SECONDS
                if self._conn is not None:
                    try:
                        self._conn.close()
                    except self._psycopg.Error:
                        pass
                    self._conn = None
                log.warning("shared state: %s", str(exc).strip())
                raise SharedUnavailable(str(exc).strip()) from None

    def available(self) -> bool:
        """Whether the publisher's connection is up (changes reach the other heads now)."""
        return self.publisher.connected

    # -- what heads agree on -------------------------------------------------------------
    def export_id(self, path: str) -> int:
        """The cluster-wide number of an export path (part of every handle)."""
        rows = self._call("INSERT INTO exports (path) VALUES (%s) ON CONFLICT (path) DO NOTHING "
                          "RETURNING export_id", (path,))
        if not rows:
            rows = self._call("SELECT export_id FROM exports WHERE path = %s", (path,))
        return int(rows[0][0])

    def keep_query(self, export_id: int, qid: bytes, key: bytes) -> None:
        self._call("INSERT INTO queries VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (export_id, qid, key))

    def query_key(self, export_id: int, qid: bytes) -> bytes | None:
        rows = self._call("SELECT key FROM queries WHERE export_id = %s AND qid = %s", (export_id, qid))
        return bytes(rows[0][0]) if rows else None

    def put_verifier(self, export_id: int, ino: int, gen: int, verf: bytes) -> None:
        """Durable in PostgreSQL before the CREATE reply: a retransmission to another head
        after failover finds it (synchronous_commit is the site's PostgreSQL setting)."""
        self._call("INSERT INTO verifiers VALUES (%s, %s, %s, %s) ON CONFLICT (export_id, ino) "
                   "DO UPDATE SET gen = EXCLUDED.gen, verf = EXCLUDED.verf", (export_id, ino, gen, verf))

    def get_verifier(self, export_id: int, ino: int, gen: int) -> bytes | None:
        rows = self._call("SELECT verf FROM verifiers WHERE export_id = %s AND ino = %s AND gen = %s",
                          (export_id, ino, gen & 0xFFFFFFFF))
        return bytes(rows[0][0]) if rows else None

    # -- where files are ---------------------------------------------------------------------
    def add_index(self, export_id: int, index: Any) -> None:
        self._indexes[export_id] = index

    def place(self, export_id: int, ino: int) -> Any:
        """The place (a ``store.ObjectRecord``) this head's index knows for an inode its handle
        table does not: a file another head created (its log row applied to the index), or
        one that existed before this head started.  So a handle any head issued resolves
        here with a few key lookups, never a search of the tree."""
        index = self._indexes.get(export_id)
        found = index.place_of(ino) if index is not None else None
        if found is None:
            return None
        from ..state.store import ObjectRecord
        parent, gen, name = found
        return ObjectRecord(parent, gen, name, False)

    # -- changes this head makes (published in batches by the publisher thread) ------------
    def note_entry(self, export_id: int, parent: int, name: bytes, wait: bool = True) -> None:
        """A namespace change; with ``wait``, returns once its row (and the place rows queued
        before it) is committed, so no reply announces a change the other heads can never
        learn of (unless PostgreSQL is away: then the row waits in the queue)."""
        in_burst = wait and self._burst_thread == threading.get_ident()
        ticket = self.publisher.add(Row(export_id, "e", 0, parent, 0, name), wake=not wait)
        if in_burst:
            self._burst_ticket = max(self._burst_ticket, ticket)   # waited for by ``end_burst``
        elif wait:
            self.publisher.wait_for(ticket)

    def defer_in_bursts(self, executor: Any) -> None:
        """From now on, rows noted by the thread serving a burst (the event loop) are waited
        for in ``executor`` after the burst: the loop serves other calls meanwhile."""
        self._executor = executor

    def begin_burst(self) -> None:
        if self._executor is not None:
            self._burst_thread = threading.get_ident()

    def end_burst(self) -> Any:
        """None, or a future done once every row the burst's namespace changes noted is
        committed (or PostgreSQL is away: then they wait in the queue, as outside bursts);
        the burst's replies wait for it (``Dispatcher.end_burst``)."""
        self._burst_thread = 0
        ticket, self._burst_ticket = self._burst_ticket, 0
        if not ticket:
            return None
        import asyncio
        return self.publisher.commit_on_loop(ticket, asyncio.get_running_loop(), self._executor)

    def note_ino(self, export_id: int, ino: int) -> None:
        self.publisher.add(Row(export_id, "i", ino))

    def note_place(self, export_id: int, ino: int, parent: int, gen: int, name: bytes) -> None:
        self.publisher.add(Row(export_id, "p", ino, parent, gen & 0xFFFFFFFF, name), wake=False)

    def note_gone(self, export_id: int, ino: int) -> None:
        self.publisher.add(Row(export_id, "g", ino), wake=False)

    def log_position(self) -> int:
        """The newest sequence number in the change log (where a new head starts following)."""
        rows = self._call("SELECT coalesce(max(seq), 0) FROM change_log")
        return int(rows[0][0])

    # -- life ------------------------------------------------------------------------------
    def follow(self, follower: Follower) -> None:
        self.follower = follower
        follower.start()

    def close(self) -> bool:
        """Stop; whether every change this head made was published."""
        if self.scanner is not None:
            self.scanner.close()
        published = self.publisher.close()
        if self.follower is not None:
            self.follower.close()
        for eid, content in self.contents.items():
            log.info("shared state, export %d: %s", eid, content.summary())
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        return published
