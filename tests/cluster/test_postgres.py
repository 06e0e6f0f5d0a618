"""The PostgreSQL the shared state will live in (issue 16, docs/cluster.rst), started by the
test: psycopg 3 reaches it; NOTIFY wakes a listener on another connection (how heads will be
told that the change log grew); a session advisory lock is held by one connection at a time
and passes on when its holder goes (how the scanner head will be chosen).
"""
from __future__ import annotations

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
    with psycopg.connect(pg.url, autocommit=True) as heir:      # the holder has gone
        assert heir.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0] is True
