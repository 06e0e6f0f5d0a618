"""The shared tables, created (and later migrated) by whichever head connects first.

Creation runs under a transaction-level advisory lock, so two heads starting together do
not race on ``CREATE TABLE IF NOT EXISTS`` (which is not atomic in PostgreSQL: the loser
can fail on the catalog's unique index).  ``pysfsd_schema`` holds the version; each step
in ``MIGRATIONS`` moves it by one, so an older cluster is brought forward in place.
"""
from __future__ import annotations

from typing import Any

SCHEMA_LOCK = 0x7079_7366_7364_0001   # "pysfsd" + 1: schema changes, one head at a time
LOG_LOCK = 0x7079_7366_7364_0002      # writers of change_log: commits follow seq order
SCANNER_LOCK = 0x7079_7366_7364_0003  # the scanner head's session lock

def _publish_function(create: str, notify: str) -> str:
    """``pysfsd_publish`` of schema 4 on: a batch of log rows in one statement (the lock that
    makes commit order follow seq order, the rows in their order, then ``notify``)."""
    return """
    %s FUNCTION pysfsd_publish(p_head text, p_export int[], p_op text[], p_ino bigint[],
                                   p_parent bigint[], p_gen bigint[], p_name bytea[], p_vals bytea[])
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(%d);
        INSERT INTO change_log (head, export_id, op, ino, parent, gen, name, vals)
            SELECT p_head, e, o::"char", i, p, g, n, v
            FROM unnest(p_export, p_op, p_ino, p_parent, p_gen, p_name, p_vals)
                WITH ORDINALITY AS u(e, o, i, p, g, n, v, k)
            ORDER BY k;
        %s
    END $$;
    """ % (create, LOG_LOCK, notify)


MIGRATIONS: list[str] = [
    # 1: what heads must agree on, and the change log
    """
    CREATE TABLE exports (
        export_id serial PRIMARY KEY,
        path text NOT NULL UNIQUE
    );
    CREATE TABLE queries (            -- placeholders whose query does not fit in the handle
        export_id int NOT NULL,
        qid bytea NOT NULL,
        key bytea NOT NULL,
        PRIMARY KEY (export_id, qid)
    );
    CREATE TABLE verifiers (          -- EXCLUSIVE CREATE: which verifier made which file
        export_id int NOT NULL,
        ino bigint NOT NULL,
        gen bigint NOT NULL,
        verf bytea NOT NULL,
        PRIMARY KEY (export_id, ino)
    );
    CREATE TABLE change_log (
        seq bigserial PRIMARY KEY,
        head text NOT NULL,
        export_id int NOT NULL,
        op "char" NOT NULL,           -- e entry, i inode, p place, g gone, r rescan (c: 4)
        ino bigint NOT NULL DEFAULT 0,
        parent bigint NOT NULL DEFAULT 0,
        gen bigint NOT NULL DEFAULT 0,
        name bytea NOT NULL DEFAULT '',
        at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE heads (
        head text PRIMARY KEY,
        last_seq bigint NOT NULL DEFAULT 0,
        seen_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 2: where the log was pruned, so a head that was away longer than that knows to rescan
    """
    CREATE TABLE log_floor (pruned_below bigint NOT NULL);
    INSERT INTO log_floor VALUES (0);
    """,
    # 3: a batch of log rows in one statement (one round trip, one transaction): the lock
    # that makes commit order follow seq order, the rows in their order, the notification
    """
    CREATE FUNCTION pysfsd_publish(p_head text, p_export int[], p_op text[], p_ino bigint[],
                                   p_parent bigint[], p_gen bigint[], p_name bytea[])
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(%d);
        INSERT INTO change_log (head, export_id, op, ino, parent, gen, name)
            SELECT p_head, e, o::"char", i, p, g, n
            FROM unnest(p_export, p_op, p_ino, p_parent, p_gen, p_name) WITH ORDINALITY AS u(e, o, i, p, g, n, k)
            ORDER BY k;
        PERFORM pg_notify('pysfsd_changes', p_head);  -- the writer ignores its own
    END $$;
    """ % LOG_LOCK,
    # 4: content tiers published once (``c`` rows carry the values: nfsd/shared/content.py)
    """
    ALTER TABLE change_log ADD COLUMN vals bytea NOT NULL DEFAULT '';
    DROP FUNCTION pysfsd_publish(text, int[], text[], bigint[], bigint[], bigint[], bytea[]);
    """ + _publish_function("CREATE", "PERFORM pg_notify('pysfsd_changes', p_head);  -- the writer ignores its own"),
    # 5: every head LISTENs on a channel of its own (``changelog.channel``), notified by the
    # other heads' batches only: a head is no longer woken by its own commits (heads report
    # every 30 s; those silent for 5 minutes, restarted under another name, are not notified)
    _publish_function("CREATE OR REPLACE", """PERFORM pg_notify('pysfsd_changes', p_head);  -- heads of schema 4
        PERFORM pg_notify('pysfsd_' || left(md5(h.head), 16), p_head) FROM heads h
            WHERE h.head <> p_head AND h.seen_at > now() - interval '5 minutes';"""),
]


def ensure_schema(conn: Any) -> int:
    """Create or migrate the tables; returns the schema version now in place."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS pysfsd_schema (version int NOT NULL)")
        row = conn.execute("SELECT version FROM pysfsd_schema").fetchone()
        version = row[0] if row else 0
        if row is None:
            conn.execute("INSERT INTO pysfsd_schema VALUES (0)")
        for step in MIGRATIONS[version:]:
            conn.execute(step)
            version += 1
        conn.execute("UPDATE pysfsd_schema SET version = %s", (version,))
    return version
