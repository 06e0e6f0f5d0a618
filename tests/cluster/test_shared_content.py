"""Content fields are extracted once in a cluster (issue 16): the head that changed a file
publishes the values its transducers found, the other heads apply them without running
transducers.  Two heads over one plain directory with ``--no-watch`` (as test_shared_dir.py).

How "B ran no extraction" is seen: a user transducer prints ``run=<its own PID>``, a value
no two runs share, so B's ``run:`` directory names A's run exactly when B took A's values;
and each head logs at its stop how many files it extracted and how many it took.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cluster.test_shared_dir import head, query, soon
from tests.nfs3_helpers import OK, create_ok, look, lookup, names, write
from tests.rpc_client import RpcClient

pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")

RUN_ID = "*.txt=sh -c 'cat >/dev/null; echo run=$$'"   # a value of its own per run


def content_summary(log: str) -> tuple[int, int, int]:
    """(extracted here, taken from other heads, extracted after waiting in vain) of a
    head's stop log."""
    m = re.search(r"content fields: (\d+) files extracted here, (\d+) taken from other heads, "
                  r"\d+ published, (\d+) extracted after waiting in vain", log)
    assert m, log
    return int(m[1]), int(m[2]), int(m[3])


def run_ids(rpc: RpcClient, root: bytes) -> set[bytes]:
    """The values of field ``run`` (none while the field is unknown to that head)."""
    status, res = lookup(rpc, root, b"run:")
    return names(rpc, res.object.data) if status == OK else set()


@contextmanager
def two_heads(tmp_path: Path, url: str, a_args: tuple[str, ...], b_args: tuple[str, ...], logs: dict[str, str]
              ) -> Iterator[tuple[RpcClient, RpcClient, bytes, bytes]]:
    """Heads A and B (their arguments), each with a client: (A's client, B's, the root, src);
    their stop logs end up in ``logs``."""
    export = tmp_path / "export"
    (export / "src").mkdir(parents=True)
    a = head(tmp_path, export, "a", url, "-v", "--shared-scan-seconds", "0", *a_args)
    b = head(tmp_path, export, "b", url, "-v", "--shared-scan-seconds", "0", *b_args)
    try:
        a.start()
        b.start()
        with RpcClient(a.port) as ra, RpcClient(b.port) as rb:
            root = ra.mount(a.export_b)
            yield ra, rb, root, look(ra, root, b"src")
    finally:
        for tag, h in (("a", a), ("b", b)):  # both stopped before either log is checked
            logs[tag] = h.stop()
        for tag in ("a", "b"):
            assert "Traceback" not in logs[tag], logs[tag]


def test_content_written_through_a_is_not_extracted_again_by_b(tmp_path: Path, shared_url: str) -> None:
    logs: dict[str, str] = {}
    with two_heads(tmp_path, shared_url, ("--transducer", RUN_ID), ("--transducer", RUN_ID), logs) as (ra, rb, root, src):
        h = create_ok(ra, src, b"notes.txt")
        status, _ = write(ra, h, 0, b"the zebra crossing\n")
        assert status == OK, status
        soon(lambda: b"notes.txt" in query(rb, root, b"text:", b"zebra"))
        soon(lambda: bool(run_ids(ra, root)))
        mine = run_ids(ra, root)
        assert len(mine) == 1, mine                       # A's run for the written content
        assert run_ids(rb, root) == mine                  # B applied A's values: no run of its own
        time.sleep(3.0)                                    # past the wait: B still ran nothing
        assert run_ids(rb, root) == mine
        assert query(rb, root, b"text:", b"zebra") == {b"notes.txt"}
    extracted, taken, gave_up = content_summary(logs["b"])
    assert taken >= 1 and extracted == 0 and gave_up == 0, logs["b"]
    assert content_summary(logs["a"])[0] >= 1


def test_head_that_gets_no_values_extracts_itself(tmp_path: Path, shared_url: str) -> None:
    """A runs other transducers than B (so its values are not B's content version, as if the
    publisher had died): B waits for them in vain, then runs its own."""
    logs: dict[str, str] = {}
    with two_heads(tmp_path, shared_url, (), ("--transducer", RUN_ID), logs) as (ra, rb, root, src):
        h = create_ok(ra, src, b"alone.txt")
        status, _ = write(ra, h, 0, b"an okapi\n")
        assert status == OK, status
        start = time.monotonic()
        while len(query(rb, root, b"text:", b"okapi")) == 0 or not run_ids(rb, root):
            assert time.monotonic() - start < 6.0, "B never extracted the file itself"
            time.sleep(0.1)
    extracted, _taken, gave_up = content_summary(logs["b"])
    assert extracted >= 1 and gave_up >= 1, logs["b"]


def test_full_rescan_content_is_extracted_by_the_scanner_head_only(tmp_path: Path, shared_url: str) -> None:
    """A file written behind both heads (``--no-watch``), then an ``r`` row (every head
    rescans, as after a head's crash): B, the scanner head, extracts it and publishes the
    values; A takes them (the same ``run=`` value, A's counters: 0 extracted, 1 taken)."""
    import psycopg

    from nfsd.fs.handles import unpack_real
    from nfsd.shared import SharedState
    from nfsd.shared.changelog import SCANNER_HELD, Row
    logs: dict[str, str] = {}
    with two_heads(tmp_path, shared_url, ("--transducer", RUN_ID),
                   ("--transducer", RUN_ID, "--shared-scan-seconds", "3600"), logs) as (ra, rb, root, src):
        with psycopg.connect(shared_url, autocommit=True) as conn:
            start = time.monotonic()
            while not conn.execute(SCANNER_HELD).fetchall()[0][0]:
                assert time.monotonic() - start < 5, "B never became the scanner head"
                time.sleep(0.05)
        time.sleep(1.0)                                    # B's first pass (an empty src) is over
        (tmp_path / "export" / "src" / "behind.txt").write_bytes(b"a quagga\n")
        time.sleep(1.5)
        assert query(ra, root, b"text:", b"quagga") == set()   # nobody told either head
        writer = SharedState(shared_url, head="writer")
        try:
            writer.publisher.start()
            writer.publisher.add(Row(unpack_real(root).export_id, "r"))
            assert writer.publisher.wait_published()
        finally:
            writer.close()
        start = time.monotonic()
        while not (query(ra, root, b"text:", b"quagga") and query(rb, root, b"text:", b"quagga")
                   and run_ids(ra, root)):
            assert time.monotonic() - start < 6.0, "the rescan did not reach both heads"
            time.sleep(0.1)
        assert run_ids(ra, root) == run_ids(rb, root)      # A took B's values
    extracted, taken, gave_up = content_summary(logs["a"])
    assert (extracted, taken, gave_up) == (0, 1, 0), logs["a"]
    assert content_summary(logs["b"])[0] >= 1


def test_rows_and_content_values_survive_the_log(shared_url: str) -> None:
    """What a head publishes is what the others read: names with every awkward byte, a
    content tier's keys and failures (``c`` rows), in one batch."""
    import psycopg

    from nfsd.shared import SharedState
    from nfsd.shared.changelog import Row
    from nfsd.shared.content import decode, encode
    keys = frozenset({b"text\0zebra", b"run\0" + bytes(range(1, 200))})
    failures = [("command:sh#0", "exited with status 7: \"quoted\" {braces}, \\ back")]
    rows = [Row(3, "p", 2**40, 77, 2**32 - 1, b'\x00\xff"\\{},\n '), Row(3, "e", 0, 77, 0, b""),
            Row(3, "c", 5, 4096, 9, b"\x01" * 12, encode(keys, failures))]
    writer = SharedState(shared_url, head="writer")
    try:
        writer.publisher.start()
        for r in rows:
            writer.publisher.add(r)
        assert writer.publisher.wait_published()
    finally:
        writer.close()
    with psycopg.connect(shared_url) as conn:
        got = conn.execute("SELECT export_id, op, ino, parent, gen, name, vals FROM change_log ORDER BY seq").fetchall()
    assert [Row(e, o, i, p, g, bytes(n), bytes(v)) for e, o, i, p, g, n, v in got] == rows
    assert decode(bytes(got[2][6])) == (keys, failures)


def test_marks_and_expectations_stay_bounded() -> None:
    """Endless changes whose files are never extracted (empty files, directories) leave at
    most ``MAX_KEPT`` marks per table, the oldest going first, at constant cost each."""
    from nfsd.shared import content
    shared = content.SharedContent(lambda row: None, 1)
    for i in range(content.MAX_KEPT + 5000):
        shared.mine_entry(7, b"f%d" % i)
        shared.expect_ino(i)
    assert len(shared._mine_entries) == content.MAX_KEPT
    assert (7, b"f0") not in shared._mine_entries and (7, b"f%d" % (content.MAX_KEPT + 4999)) in shared._mine_entries
    assert len(shared._expect_inos) == content.MAX_KEPT
