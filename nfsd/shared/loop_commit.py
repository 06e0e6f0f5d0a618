"""A burst's change-log rows committed from the event loop itself (``SharedState.end_burst``).

The replies of a burst of namespace changes wait for their rows' commit.  Handing that wait
to a pool thread (which sends the batch, blocks for the answer, then wakes the loop) cost a
CREATE more CPU than the statement itself: two thread hand-offs per burst.  Here the loop
sends the batch on a connection of its own without blocking (libpq's non-blocking mode),
keeps that connection's socket registered with the loop for good (registering it per batch
cost about as much as the send), and reads the answer when the socket is readable; a
watchdog timer, not one per batch, lets the replies go after ``timeout`` if PostgreSQL does
not answer (the rows then commit later or are queued again, as in ``Publisher.wait_for``);
after ``GIVE_UP_AFTER`` more the connection is dropped and the rows are queued again
(applying a row twice does nothing, should the lost answer have been a commit).

Ordering is the publisher's: one batch in flight at a time (its ``_writer`` lock, taken
without blocking: when another thread is writing, this burst waits in a pool thread as
before), and bursts that end while a batch is in flight wait for the next one, sent as soon
as the first is answered (group commit on the loop).
"""
from __future__ import annotations

import asyncio
import select
import threading
import time
from typing import Any

from .changelog import PUBLISH_NAME, TUPLES_OK, Publisher

TIMEOUT = 2.0   # seconds a burst's replies wait for their rows at most
GIVE_UP_AFTER = 8.0   # ... and the batch for its answer beyond that, before its rows are sent again


class LoopCommitter:
    """One per event loop; used only from the loop's thread."""

    def __init__(self, publisher: Publisher, loop: asyncio.AbstractEventLoop, executor: Any,
                 timeout: float = TIMEOUT) -> None:
        self.p = publisher
        self.loop = loop
        self.executor = executor
        self.timeout = timeout
        self.conn: Any = None
        self.sock = -1
        self.flight: tuple[int, list, list[str], float] | None = None  # ticket, rows, errors, deadline
        self.waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self.watch: asyncio.TimerHandle | None = None

    def commit(self, ticket: int) -> asyncio.Future[bool] | None:
        """None if the rows up to ``ticket`` need no wait (committed, or PostgreSQL away:
        they stay queued), else a future: True once committed, False if they failed or
        ``timeout`` passed."""
        p = self.p
        if p.done_ticket() >= ticket:
            return None
        if not p.connected:
            p.wake()
            return None
        if self.flight is None and not self._send():
            return self.loop.run_in_executor(self.executor, p.wait_for, ticket)
        if p.done_ticket() >= ticket:
            return None
        fut: asyncio.Future[bool] = self.loop.create_future()
        self.waiters.append((ticket, fut))
        return fut

    def _send(self) -> bool:
        """Send what is queued as one batch; False if this cannot be done from the loop now."""
        p = self.p
        if self.conn is None:
            self.conn = p.take_loop_connection()   # made by the publisher thread (connecting blocks)
            if self.conn is None:
                return False
            self.sock = self.conn.pgconn.socket
            self.loop.add_reader(self.sock, self._readable)
        if not p.writer.acquire(blocking=False):
            return False
        p.loop_writer = threading.get_ident()
        taken, rows = p.take()
        if not rows:
            self._release()
            return True
        pg = self.conn.pgconn
        try:
            pg.send_query_prepared(PUBLISH_NAME, p.params(rows))
            while pg.flush():   # rare: a batch larger than the socket's buffer
                select.select([], [self.sock], [], 1.0)
        except Exception as exc:
            self._broken(rows, exc)
            return False
        self.flight = (taken, rows, [], time.monotonic() + self.timeout)
        if self.watch is None:
            self.watch = self.loop.call_later(self.timeout, self._watchdog)
        return True

    def _readable(self) -> None:
        pg = self.conn.pgconn
        try:
            pg.consume_input()
            if self.flight is None:
                if pg.status != 0:   # CONNECTION_OK: else the server went away between batches
                    raise OSError("connection to PostgreSQL lost")
                return
            errors = self.flight[2]
            while not pg.is_busy():   # (get_result would block while busy)
                res = pg.get_result()
                if res is None:       # the statement's end
                    self._answered()
                    return
                if res.status != TUPLES_OK:
                    errors.append(res.error_message.decode(errors="replace").strip())
        except Exception as exc:
            self._broken(self.flight[1] if self.flight else [], exc)
            self._resolve()

    def _answered(self) -> None:
        assert self.flight is not None
        taken, rows, errors, _ = self.flight
        self.flight = None
        if errors:
            self._broken(rows, OSError(errors[0]))
        else:
            self.p.written(taken, rows)
            self._release()
        self._resolve()

    def _broken(self, rows: list, exc: BaseException) -> None:
        """The connection failed: rows queued again, the next burst finds PostgreSQL away."""
        self.flight = None
        if self.conn is not None:
            self.loop.remove_reader(self.sock)
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
        self.p.failed(rows, exc)
        if self.p.loop_writer == threading.get_ident():
            self._release()

    def _release(self) -> None:
        self.p.loop_writer = 0
        self.p.writer.release()

    def _resolve(self) -> None:
        """Answer the waiters whose rows are in; send the next batch for the others."""
        p = self.p
        keep = []
        for ticket, fut in self.waiters:
            if p.done_ticket() >= ticket or not p.connected:
                if not fut.done():
                    fut.set_result(p.done_ticket() >= ticket)
            else:
                keep.append((ticket, fut))
        self.waiters = keep
        if keep and self.flight is None and not self._send():
            self.waiters = []
            for ticket, fut in keep:   # a pool thread waits for them, as before
                inner = self.loop.run_in_executor(self.executor, p.wait_for, ticket)
                inner.add_done_callback(_settle(fut))

    def _watchdog(self) -> None:
        self.watch = None
        if self.flight is None:
            return
        left = self.flight[3] - time.monotonic()
        if left <= -GIVE_UP_AFTER:   # a server gone without a word (no reset): drop the connection
            self._broken(self.flight[1], OSError(f"no answer from PostgreSQL in {GIVE_UP_AFTER + self.timeout:g} s"))
            self._resolve()
            return
        if left <= 0:   # no answer in time: the replies go (the rows commit later, or are queued again)
            for _, fut in self.waiters:
                if not fut.done():
                    fut.set_result(False)
            self.waiters = []
            left = self.timeout
        self.watch = self.loop.call_later(left, self._watchdog)


def _settle(fut: asyncio.Future[bool]) -> Any:
    """A callback that gives ``fut`` the outcome of a pool thread's ``wait_for``."""
    def done(inner: asyncio.Future[bool]) -> None:
        if not fut.done():
            fut.set_result(not inner.cancelled() and inner.exception() is None and bool(inner.result()))
    return done
