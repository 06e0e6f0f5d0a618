"""A handle any head issued resolves on a head that never saw it with key lookups only
(docs/cluster.rst): the handle table misses, the head's own index knows the place (it
indexed the file at start, or applied the log row of the head that created it), and the
tree search that resolves handles of files moved behind a single server's back is never
run (it is made to fail here).

Over a plain directory (20,000 files) and over CephFS: the files created through one
ceph-fuse mount (head A's host), the handle made from what that mount says, and "head B"
(this process's Index and LocalFS, the parts of a head that resolve handles) over another
mount.  ``PYSFSD_HANDLE_FILES=100000`` sets the number of files of the CephFS variant
(default 20,000; docs/cluster.rst has the 100,000-file figures).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nfsd.fs.handles import pack_real
from nfsd.index import Index
from nfsd.fs.localfs import LocalFS, read_generation
from nfsd.state.store import Store

pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")

FILES = 20_000
PER_DIR = 500


def make_tree(root: Path, files: int, content: bytes) -> Path:
    """``files`` files, ``PER_DIR`` to a directory two levels down; returns one of them."""
    for d in range(files // PER_DIR):
        sub = root / f"d{d:03}" / "deeper"
        sub.mkdir(parents=True)
        for i in range(PER_DIR):
            with open(sub / f"f{i:03}.txt", "wb") as f:
                f.write(content)
    return root / f"d{files // PER_DIR // 2:03}" / "deeper" / "f123.txt"


def handle_of(path: Path) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        return st.st_ino, read_generation(fd, st.st_mode)
    finally:
        os.close(fd)


def resolve_without_search(root: str, ino: int, gen: int, state: Path, shared_url: str) -> dict[str, float]:
    """Head B's parts over ``root``: index it, then resolve (export id, ino, gen) with the
    tree search made to fail; the seconds each step took."""
    from nfsd.shared import SharedState
    shared = SharedState(shared_url)
    store = Store(str(state))
    took: dict[str, float] = {}
    try:
        store.shared = shared
        eid = shared.export_id(root)
        index = Index(store.env, root, eid)
        start = time.monotonic()
        index.scan()
        took["index"] = time.monotonic() - start
        shared.add_index(eid, index)
        local = LocalFS(root, eid, store)

        def no_search(ino: int) -> None:
            raise AssertionError(f"searched the tree for inode {ino}")
        local._search = no_search  # type: ignore[method-assign]
        fh = pack_real(eid, ino, gen)
        start = time.monotonic()
        n = local.node(fh)                       # never looked up on this "head"
        took["resolve"] = time.monotonic() - start
        assert n.ino == ino and n.fh == fh
        assert os.stat(n.fd).st_ino == ino
        index.close()
        local.close()
    finally:
        store.close()
        shared.close()
    return took


def main() -> None:
    """``python -m tests.cluster.test_shared_handles ROOT INO GEN STATE URL``: head B's part,
    run in B's host (its mount namespace); prints the seconds each step took (JSON)."""
    import json
    import sys
    root, ino, gen, state, url = sys.argv[1:]
    print(json.dumps(resolve_without_search(root, int(ino), int(gen), Path(state), url)))


def test_unseen_handle_resolves_without_search(tmp_path: Path, shared_url: str) -> None:
    root = tmp_path / "export"
    ino, gen = handle_of(make_tree(root, FILES, b"x"))
    resolve_without_search(str(root), ino, gen, tmp_path / "state", shared_url)


def test_handle_made_through_one_cephfs_mount_resolves_through_another(ceph, host_factory, shared_url: str,
                                                                      tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.cluster.test_two_heads import export_on_cephfs
    from tests.conftest import REPO
    files = int(os.environ.get("PYSFSD_HANDLE_FILES", FILES))
    a, b = host_factory("a"), host_factory("b")
    export = export_on_cephfs(ceph, (a, b), "handles")
    start = time.monotonic()
    target = make_tree(Path(a.path(export)), files, b"")   # empty: metadata only (memstore)
    created = time.monotonic() - start
    ino, gen = handle_of(target)
    proc = b.popen([sys.executable, "-m", "tests.cluster.test_shared_handles", export, str(ino), str(gen),
                    str(tmp_path / "state"), shared_url],
                   cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), text=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err[-4000:]
    took = json.loads(out.strip().splitlines()[-1])
    print(f"{files} files: created through A's mount in {created:.1f} s, indexed through B's in "
          f"{took['index']:.1f} s, A's handle resolved on B in {took['resolve'] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
