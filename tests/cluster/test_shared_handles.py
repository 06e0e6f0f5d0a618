"""A handle any head issued resolves on a head that never saw it with key lookups only
(docs/cluster.rst): the handle table misses, the head's own index knows the place (it
indexed the file at start, or applied the log row of the head that created it), and the
tree search that resolves handles of files moved behind a single server's back is never
run (it is made to fail here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nfsd.handles import pack_real
from nfsd.index import Index
from nfsd.localfs import LocalFS, read_generation
from nfsd.store import Store

pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")

FILES = 20_000


def test_unseen_handle_resolves_without_search(tmp_path: Path, shared_url: str, monkeypatch) -> None:
    from nfsd.shared import SharedState
    root = tmp_path / "export"
    for d in range(FILES // 500):
        sub = root / f"d{d:03}" / "deeper"
        sub.mkdir(parents=True)
        for i in range(500):
            (sub / f"f{i:03}.txt").write_bytes(b"x")
    target = root / "d017" / "deeper" / "f123.txt"
    fd = os.open(target, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        fh_gen = read_generation(fd, st.st_mode)
    finally:
        os.close(fd)

    shared = SharedState(shared_url)
    store = Store(str(tmp_path / "state"))
    try:
        store.shared = shared
        eid = shared.export_id(str(root))
        index = Index(store.env, str(root), eid)
        index.scan()
        shared.add_index(eid, index)
        local = LocalFS(str(root), eid, store)

        def no_search(ino: int) -> None:
            raise AssertionError(f"searched the tree for inode {ino}")
        monkeypatch.setattr(local, "_search", no_search)
        fh = pack_real(eid, st.st_ino, fh_gen)
        n = local.node(fh)                       # never looked up on this "head"
        assert n.ino == st.st_ino and n.fh == fh
        assert os.stat(n.fd).st_ino == st.st_ino
        index.close()
        local.close()
    finally:
        store.close()
        shared.close()
