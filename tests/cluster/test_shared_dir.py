"""Two heads with ``--shared-state`` over one plain directory (the fast variant of issue 16,
no CephFS): both export the same tree with ``--no-watch`` (so neither head's inotify sees
the other's changes: only the change log can tell it), each with its own LMDB state, and
share a PostgreSQL database started by the test.  Every change made through head A shows in
head B's query directories within 2 s, and a file removed through A is STALE on B.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from protocol import nfs3
from tests.conftest import ServerProcess
from tests.nfs3_helpers import (OK, SETATTR, create_ok, fh, getattr_, look, lookup, names, remove,
                                rename, sattr, write)
from tests.rpc_client import RpcClient

pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")

STALE = nfs3.nfsstat3.NFS3ERR_STALE


def head(tmp_path: Path, export: Path, tag: str, url: str) -> ServerProcess:
    state = tmp_path / tag / "state"
    state.parent.mkdir()
    return ServerProcess(export, state, args=("--no-watch", "--no-locks", "--shared-state", url))


@pytest.fixture
def two_heads(tmp_path: Path, shared_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    export = tmp_path / "export"
    (export / "src").mkdir(parents=True)
    (export / "src" / "main.c").write_bytes(b"int main(void) { return 0; }\n")
    a, b = head(tmp_path, export, "a", shared_url), head(tmp_path, export, "b", shared_url)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for h in (a, b):
            log = h.stop()
            assert "Traceback" not in log, log


def within_2s(check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` held (it must within 2 s)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < 2.0, "not within 2 s"
        time.sleep(0.05)
    return time.monotonic() - start


def query(rpc: RpcClient, root: bytes, field: bytes, value: bytes) -> set[bytes]:
    """The names in value directory ``field/value`` (none while no file holds the value)."""
    status, res = lookup(rpc, look(rpc, root, field), value)
    if status == nfs3.nfsstat3.NFS3ERR_NOENT:
        return set()
    assert status == OK, status
    return names(rpc, res.object.data)


def test_changes_through_a_show_in_b_query_directories(two_heads) -> None:
    a, b = two_heads
    with RpcClient(a.port) as ra, RpcClient(b.port) as rb:
        root = ra.mount(a.export_b)
        assert rb.mount(b.export_b) == root                    # one export id for the cluster
        src = look(ra, root, b"src")
        assert query(rb, root, b"ext:", b"c") == {b"main.c"}

        h = create_ok(ra, src, b"late.c")                     # create
        within_2s(lambda: b"late.c" in query(rb, root, b"ext:", b"c"))
        assert look(rb, src, b"late.c") == h
        status, _ = getattr_(rb, h)
        assert status == OK

        status, _ = write(ra, h, 0, b"x" * 64)                # write
        assert status == OK, status
        within_2s(lambda: b"late.c" in query(rb, root, b"size:", b">50"))

        status, _ = ra.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), sattr(size=200), None))  # setattr
        assert status == OK, status
        within_2s(lambda: b"late.c" in query(rb, root, b"size:", b">150"))

        status, _ = rename(ra, src, b"late.c", src, b"late.h")  # rename
        assert status == OK, status
        within_2s(lambda: b"late.h" in query(rb, root, b"ext:", b"h")
                  and b"late.c" not in query(rb, root, b"ext:", b"c"))
        assert look(rb, src, b"late.h") == h

        status, _ = remove(ra, src, b"late.h")                 # remove
        assert status == OK, status
        within_2s(lambda: query(rb, root, b"ext:", b"h") == set())
        status, _ = getattr_(rb, h)
        assert status == STALE
        status, _ = lookup(rb, src, b"late.h")
        assert status == nfs3.nfsstat3.NFS3ERR_NOENT
