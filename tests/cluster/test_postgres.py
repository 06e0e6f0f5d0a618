"""The PostgreSQL the shared state will live in (issue 16, docs/cluster.rst), started by the
test: psycopg 3 reaches it; NOTIFY wakes a listener on another connection (how heads will be
told that the change log grew); a session advisory lock is held by one connection at a time
and passes on when its holder goes (how the scanner head will be chosen).
"""
from __future__ import annotations

import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")


def test_notify_and_advisory_lock(pg) -> None:
    with psycopg.connect(pg.url, autocommit=True) as listener, \
            psycopg.connect(pg.url, autocommit=True) as writer:
        listener.execute("LISTEN changes")
        writer.execute("CREATE TABLE IF NOT EXISTS change_log (seq bigserial PRIMARY KEY, what text)")
        with writer.transaction():
            seq = writer.execute("INSERT INTO change_log (what) VALUES ('create a.c') RETURNING seq"
                                 ).fetchone()[0]
            writer.execute("SELECT pg_notify('changes', %s)", (str(seq),))
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        assert got == [str(seq)]

        lock = 0x5359_5346     # any agreed 64-bit key
        assert listener.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0] is True
        assert writer.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0] is False
    # The holder has gone; its backend ends a moment after the client closes, and only then
    # is the lock free: the next head retries, as a scanner candidate does.
    with psycopg.connect(pg.url, autocommit=True) as heir:
        deadline = time.monotonic() + 10
        while not heir.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the lock never passed on"
            time.sleep(0.05)


def test_postgres_in_a_lab_host_serves_other_hosts(lab, pg) -> None:
    """The deployment the heads will use: the database on its own host, reached over the
    lab's bridge from a head's network namespace."""
    from scripts.cluster.postgres import Postgres
    db, head = lab.add("pg-db"), lab.add("pg-head")
    try:
        with Postgres.started(host=db, tcp=db.address) as server:
            with head.network():
                conn = psycopg.connect(server.url, autocommit=True, connect_timeout=10)
            with conn:
                assert str(conn.execute("SELECT inet_client_addr()").fetchone()[0]) == head.address
    finally:
        lab.remove(head)
        lab.remove(db)
