"""Handles of query directories cannot fill the state store (issue 11): a query that fits in
its handle is its own handle and stores nothing; longer ones are stored in a table bounded
to ``MAX_QUERIES`` records, least recently used first out; an evicted one answers STALE.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from nfsd.query import store as query_store
from nfsd.nfs3.errors import NfsError
from nfsd.index.index import Index
from nfsd.fs.localfs import LocalFS
from nfsd.query.names import Query
from nfsd.query.store import QueryStore
from nfsd.fs.semantic import SemanticFS, VNode
from nfsd.state.store import Store
from protocol import nfs3
from tests.nfs3_helpers import OK, S, attrs, getattr_, list_dir, lookup
from tests.rpc_client import RpcClient
from tests.server.test_check import run_check, state_env


def _entries(env: lmdb.Environment, name: bytes) -> int:
    with env.begin() as txn:
        if txn.get(name) is None:
            return 0
    db = env.open_db(name)
    with env.begin() as txn:
        return txn.stat(db)["entries"]


def test_lookups_of_new_query_names_store_nothing(server) -> None:
    """20,000 LOOKUPs of new lab names used to store 20,000 placeholders for ever."""
    (server.export / "x.c").write_text("int x;\n")
    server.restart()
    with RpcClient(server.port) as rpc:
        root = rpc.mount(server.export_b)
        view = None
        for i in range(3000):
            status, res = lookup(rpc, root, b":extension=.rand%04d" % i)
            assert status == OK
        status, res = lookup(rpc, root, b":extension=.c")
        assert status == OK
        view = res.object.data
        status, res = lookup(rpc, root, b"ext:")
        ext = res.object.data
        assert len(view) <= 64 and len(ext) <= 64
        assert b"c" in {e.name for e in list_dir(rpc, ext)}
        assert run_check(server) == (0, ["pysfsd check: consistent"])
    server.stop()
    env = state_env(server)
    try:
        # only the field directory that ran keeps a record (its results' mtime)
        assert _entries(env, b"queries1") == 1
    finally:
        env.close()
    server.start()
    with RpcClient(server.port) as rpc:  # self-describing handles resolve after a restart
        assert attrs(rpc, view).type == nfs3.ftype3.NF3DIR
        assert {e.name for e in list_dir(rpc, view)} - {b".", b".."} == {b"x.c"}
        assert b"c" in {e.name for e in list_dir(rpc, ext)}
        forged = view[:4] + b"\0" * 8 + b"Z"  # not a query's canonical form
        assert getattr_(rpc, forged)[0] == S.NFS3ERR_BADHANDLE


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[SemanticFS]:
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.c").write_text("int a;\n")
    store = Store(str(tmp_path / "state"))
    export_id = store.export_id(str(export))
    local = LocalFS(str(export), export_id, store)
    index = Index(store.env, str(export), export_id)
    sem = SemanticFS(local, index)
    index.scan(progress=False)
    sem.ready.set()
    yield sem
    index.close()
    local.close()
    store.close()


def long_name(i: int) -> bytes:
    return b":extension=.%060d" % i  # too long to be its own handle


def test_long_placeholders_are_bounded_and_expired_ones_are_stale(fs: SemanticFS, monkeypatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(query_store, "_now", lambda: clock[0])
    fs._queries.max_queries = 64
    first = fs.lookup(fs.root, long_name(0))
    assert len(first.fh) == 20  # a hash handle: the query is stored
    kept = fs.lookup(fs.root, long_name(1))
    assert isinstance(kept, VNode)
    for i in range(2, 200):
        clock[0] += 1.0
        fs.lookup(fs.root, long_name(i))
        if i % 10 == 0:  # a client keeps using one handle: it stays
            clock[0] += query_store.TOUCH_SECONDS
            fs.node(kept.fh)
    assert _entries(fs.store.env, b"queries%d" % fs.export_id) <= 64
    with pytest.raises(NfsError) as err:
        fs.node(first.fh)
    assert err.value.status == nfs3.nfsstat3.NFS3ERR_STALE
    node = fs.node(kept.fh)
    assert isinstance(node, VNode) and node.query == kept.query
    node = fs.node(fs.lookup(fs.root, long_name(199)).fh)
    assert isinstance(node, VNode) and node.query.suffix == long_name(199)[len(b":extension="):]


def test_remembered_results_go_before_placeholders(tmp_path: Path, monkeypatch) -> None:
    """A record of an inline query only keeps its mtime: evicted first."""
    clock = [1_000_000.0]
    monkeypatch.setattr(query_store, "_now", lambda: clock[0])
    store = Store(str(tmp_path / "state"))
    try:
        qs = QueryStore(store, 1, max_queries=32)
        placeholders = [Query(1, suffix=b"." + b"p" * 60 + b"%d" % i) for i in range(8)]
        for q in placeholders:
            qs.keep(q)
        for i in range(100):
            clock[0] += 1.0
            assert qs.remember(Query(1 + i, open_field=b"ext"), 7, create=True) is not None
        assert all(qs.load(q.qid()) == q for q in placeholders)
        assert _entries(store.env, b"queries1") <= 32
        assert qs.remember(Query(999, suffix=b"." + b"q" * 60), 7, create=False) is None
    finally:
        store.close()
