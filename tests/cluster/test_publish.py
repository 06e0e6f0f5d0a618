"""How a head's change-log rows leave it (nfsd/shared/changelog.py): a burst's rows are
committed from the event loop itself, and only the *other* heads are woken by the commit."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nfsd.shared.changelog import Row, channel
from tests.waiting import DEADLINE_S

pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")


class NoThreads:
    """An executor that must not be used: the loop path needs no pool thread."""

    def submit(self, *args: object, **kw: object) -> None:
        raise AssertionError("a pool thread was asked to wait for the rows")


async def loop_connection(publisher) -> None:
    """Until the event loop has its own connection, or one is ready for it (5 s)."""
    start = time.monotonic()
    while publisher._loop_conn is None and (publisher._committer is None or publisher._committer.conn is None):
        assert time.monotonic() - start < 5
        await asyncio.sleep(0.01)


def test_rows_committed_from_the_event_loop(shared_url: str) -> None:
    from nfsd.shared import SharedState
    writer = SharedState(shared_url, head="loop-writer")
    try:
        writer.publisher.start()
        writer.publisher.add(Row(1, "i", 1))          # the first batch: connects
        assert writer.publisher.wait_published()

        async def bursts() -> list[bool]:
            loop = asyncio.get_running_loop()
            outcomes = []
            with ThreadPoolExecutor(1) as pool:   # the first burst: a pool thread waits
                ticket = writer.publisher.add(Row(1, "e", 0, 5, 0, b"first.c"), wake=False)
                fut = writer.publisher.commit_on_loop(ticket, loop, pool)   # (the loop's connection is made)
                assert fut is not None
                outcomes.append(await asyncio.wait_for(fut, 5))
            await loop_connection(writer.publisher)
            for names in ([b"made.c", b"also.c"], [b"then.c"]):   # then no thread, twice (the socket stays registered)
                for name in names:
                    ticket = writer.publisher.add(Row(1, "e", 0, 5, 0, name), wake=False)
                fut = writer.publisher.commit_on_loop(ticket, loop, NoThreads())
                assert fut is not None
                outcomes.append(await asyncio.wait_for(fut, 5))
            return outcomes

        assert asyncio.run(bursts()) == [True, True, True]
        with writer.connect() as conn:
            names = [bytes(r[0]) for r in conn.execute("SELECT name FROM change_log WHERE op = 'e' ORDER BY seq")]
        assert names == [b"first.c", b"made.c", b"also.c", b"then.c"]
    finally:
        writer.close()


def test_a_head_is_not_woken_by_its_own_commits(shared_url: str) -> None:
    """Each head LISTENs on its own channel; a batch notifies every other head's."""
    from nfsd.shared import SharedState
    me, other = SharedState(shared_url, head="me"), SharedState(shared_url, head="other")
    try:
        with me.connect() as listen:
            listen.execute(f"LISTEN {channel('me')}")
            listen.execute("INSERT INTO heads (head) VALUES ('me'), ('other')")
            for state in (me, other):
                state.publisher.start()
            me.publisher.add(Row(1, "i", 1))
            assert me.publisher.wait_published()
            assert [n.payload for n in listen.notifies(timeout=0.5, stop_after=1)] == []   # its own: silent
            other.publisher.add(Row(1, "i", 2))
            assert other.publisher.wait_published()
            # at once, normally; how soon is a speed figure (a 2 s bound failed by chance under load)
            got = [n.payload for n in listen.notifies(timeout=DEADLINE_S, stop_after=1)]
            assert got == ["other"]
    finally:
        me.close()
        other.close()


def test_tag_values_without_user_attributes_reach_the_other_head(tmp_path) -> None:
    """On a file system without user attributes a file's tag values are in the state store:
    a head publishes them (a ``t`` row) and the other applies them to its own store and
    re-derives the file; a declared tag goes the same way (a ``d`` row)."""
    import lmdb

    from nfsd.fs.tags import FallbackStore
    from nfsd.shared.changelog import Follower, Target
    from nfsd.shared.tags import SharedTagStore

    class Index:
        def __init__(self, path) -> None:
            self.user_values = FallbackStore(lmdb.open(str(path), max_dbs=4), 1)
            self.noted: list[int] = []

        def note_ino(self, ino: int, force: bool = False) -> None:
            self.noted.append(ino)

        def flush(self) -> bool:
            return False

    rows: list[Row] = []
    mine, theirs = Index(tmp_path / "a"), Index(tmp_path / "b")
    shared = SharedTagStore(mine.user_values, rows.append, 1)
    shared.put(42, 7, b"tag", [b"red", b"blue"])
    assert shared.declare(b"tag", b"green")
    assert not shared.declare(b"tag", b"green")                # no change: nothing published
    assert [r.op for r in rows] == ["t", "d"]
    follower = Follower.__new__(Follower)                       # only ``apply`` is used
    follower.targets = {1: Target(1, theirs, None)}
    follower.applied = 0
    follower.apply([(n, "a", r.export_id, r.op, r.ino, r.parent, r.gen, r.name, r.vals) for n, r in enumerate(rows)])
    assert theirs.user_values.get(42, 7, b"tag") == [b"red", b"blue"]
    assert theirs.user_values.declared(b"tag") == [b"green"]
    assert theirs.noted == [42]


def test_a_burst_while_postgres_goes_away_keeps_its_rows(own_pg) -> None:
    """PostgreSQL stops under the loop's connection: the burst's future answers False at
    once (its replies go), the rows stay queued, and once PostgreSQL is back they are
    published, in order, with no restart."""
    from nfsd.shared import SharedState
    writer = SharedState(own_pg.url, head="loop-writer")
    try:
        writer.publisher.start()
        writer.publisher.add(Row(1, "i", 1))          # connected
        assert writer.publisher.wait_published()

        async def burst(name: bytes, executor: object) -> object:
            ticket = writer.publisher.add(Row(1, "e", 0, 5, 0, name), wake=False)
            fut = writer.publisher.commit_on_loop(ticket, asyncio.get_running_loop(), executor)
            return None if fut is None else await asyncio.wait_for(fut, 5)

        async def scenario() -> list[object]:
            with ThreadPoolExecutor(1) as pool:
                first = await burst(b"up.c", pool)
            await loop_connection(writer.publisher)
            second = await burst(b"also-up.c", NoThreads())
            own_pg.stop()
            start = time.monotonic()
            third = await burst(b"down.c", NoThreads())
            assert time.monotonic() - start < 1.0
            return [first, second, third]

        assert asyncio.run(scenario()) in ([True, True, False], [True, True, None])
        assert b"down.c" in [r.name for r in writer.publisher._pending.values()]
        own_pg.start()
        assert writer.publisher.wait_published(10)
        with writer.connect() as conn:
            names = [bytes(r[0]) for r in conn.execute("SELECT name FROM change_log WHERE op = 'e' ORDER BY seq")]
        assert names == [b"up.c", b"also-up.c", b"down.c"]
    finally:
        writer.close()


def test_a_burst_whose_server_never_answers(own_pg) -> None:
    """The backend of the loop's connection stops (SIGSTOP: a server gone without a word):
    the burst's replies go after 2 s, the connection is dropped after 10 s, the rows are
    queued again and reach the log (through the publisher thread's connection)."""
    import os
    import signal

    from nfsd.shared import SharedState
    from nfsd.shared.loop_commit import GIVE_UP_AFTER, TIMEOUT
    writer = SharedState(own_pg.url, head="loop-writer")
    stopped = 0
    try:
        writer.publisher.start()
        writer.publisher.add(Row(1, "i", 1))
        assert writer.publisher.wait_published()

        async def scenario() -> tuple[bool, float]:
            nonlocal stopped
            loop = asyncio.get_running_loop()
            await loop_connection(writer.publisher)
            ticket = writer.publisher.add(Row(1, "e", 0, 5, 0, b"fine.c"), wake=False)
            fut = writer.publisher.commit_on_loop(ticket, loop, NoThreads())
            assert fut is not None and await asyncio.wait_for(fut, 5)
            committer = writer.publisher._committer
            stopped = committer.conn.pgconn.backend_pid
            os.kill(stopped, signal.SIGSTOP)
            start = time.monotonic()
            ticket = writer.publisher.add(Row(1, "e", 0, 5, 0, b"hung.c"), wake=False)
            fut = writer.publisher.commit_on_loop(ticket, loop, NoThreads())
            assert fut is not None
            answered = await asyncio.wait_for(fut, TIMEOUT + 3)
            waited = time.monotonic() - start
            while committer.conn is not None:
                assert time.monotonic() - start < TIMEOUT + GIVE_UP_AFTER + 3, "the connection was never dropped"
                await asyncio.sleep(0.1)
            return answered, waited

        answered, waited = asyncio.run(scenario())
        assert answered is False and TIMEOUT - 0.5 < waited < TIMEOUT + 2
        os.kill(stopped, signal.SIGCONT)   # (the queued rows may have gone on the thread's connection already)
        stopped = 0
        assert writer.publisher.wait_published(15)
        with writer.connect() as conn:
            names = [bytes(r[0]) for r in conn.execute("SELECT name FROM change_log WHERE op = 'e' ORDER BY seq")]
        assert names[0] == b"fine.c" and b"hung.c" in names
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        writer.close()
