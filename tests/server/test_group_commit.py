"""The handle table's group commit (nfsd/state/store.py ``begin_burst``/``end_burst``): writes that
need no answer now wait for the end of a burst of calls, and are committed before its replies
leave; what waits is seen by the server meanwhile, and never overrides newer news."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from nfsd.state.store import Store

PEEK = """
import sys, lmdb, struct
env = lmdb.open(sys.argv[1], max_dbs=128, readonly=True, lock=True)
db = env.open_db(b"objects", create=False)
with env.begin(db=db) as txn:
    raw = txn.get(struct.pack(">HQ", 1, int(sys.argv[2])))
print("none" if raw is None else ("deleted" if raw[12] & 1 else raw[13:].decode()))
"""


def committed(path: Path, ino: int) -> str:
    """What another process (a restarted server) finds for an inode."""
    return subprocess.run([sys.executable, "-c", PEEK, str(path), str(ino)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_writes_in_a_burst_are_committed_at_its_end(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state"))
    try:
        store.begin_burst()
        store.put_objects(1, [(10, 2, 7, b"moved")], later=True)
        assert store.get_object(1, 10) == (2, 7, b"moved", False)  # the server sees it at once
        assert committed(tmp_path / "state", 10) == "none"          # not yet written
        store.put_objects(1, [(11, 2, 7, b"now")])                  # not ``later``: written now
        assert committed(tmp_path / "state", 11) == "now"
        store.end_burst()
        assert committed(tmp_path / "state", 10) == "moved"
    finally:
        store.close()


def test_a_tombstone_waits_and_is_seen(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state"))
    try:
        store.put_objects(1, [(10, 2, 7, b"file")])
        store.begin_burst()
        store.mark_deleted(1, 10, later=True)
        assert store.get_object(1, 10) == (2, 7, b"file", True)
        assert committed(tmp_path / "state", 10) == "file"
        store.end_burst()
        assert committed(tmp_path / "state", 10) == "deleted"
    finally:
        store.close()


def test_a_reused_inode_is_not_tombstoned_by_the_removal_before_it(tmp_path: Path) -> None:
    """Remove a file, create one that gets the same inode number, in one burst: the new
    file's record (written at once, for its ENOSPC check) must stay alive."""
    store = Store(str(tmp_path / "state"))
    try:
        store.put_objects(1, [(10, 2, 7, b"old")])
        store.begin_burst()
        store.mark_deleted(1, 10, later=True)
        store.put_objects(1, [(10, 2, 8, b"new")])
        store.end_burst()
        assert store.get_object(1, 10) == (2, 8, b"new", False)
        assert committed(tmp_path / "state", 10) == "new"
    finally:
        store.close()


def test_other_threads_write_at_once(tmp_path: Path) -> None:
    """Only the thread serving the burst defers (a call run in the thread pool answers when
    it returns, not at the burst's end)."""
    store = Store(str(tmp_path / "state"))
    try:
        store.begin_burst()
        t = threading.Thread(target=store.put_objects, args=(1, [(12, 2, 7, b"pool")]), kwargs={"later": True})
        t.start()
        t.join()
        assert committed(tmp_path / "state", 12) == "pool"
        store.end_burst()
    finally:
        store.close()


def test_a_new_objects_place_waits_only_while_the_store_has_room(tmp_path: Path, monkeypatch) -> None:
    """A CREATE must answer NOSPC if the store cannot take the new handle: its write waits for
    the burst's end only while the store's file system has far more room than a burst needs."""
    import nfsd.state.store
    store = Store(str(tmp_path / "state"))
    try:
        store.begin_burst()
        store.put_objects(1, [(20, 2, 7, b"roomy")], later=True, must_fit=True)
        assert committed(tmp_path / "state", 20) == "none"
        store.end_burst()
        assert committed(tmp_path / "state", 20) == "roomy"
        free = os.statvfs(tmp_path).f_bfree * os.statvfs(tmp_path).f_frsize
        monkeypatch.setattr(nfsd.state.store, "ROOM_MARGIN", free + (1 << 40))
        store.begin_burst()
        store.put_objects(1, [(21, 2, 7, b"tight")], later=True, must_fit=True)
        assert committed(tmp_path / "state", 21) == "tight"  # written at once
        store.put_objects(1, [(22, 2, 7, b"cache")], later=True)  # no answer needed: waits
        assert committed(tmp_path / "state", 22) == "none"
        store.end_burst()
    finally:
        store.close()


def test_the_free_space_read_for_a_burst_is_reused_briefly_only_far_above_the_margin(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """``Store.roomy`` reads the file system's free space (statvfs) for a burst; far above
    the margin that reading serves the bursts of the next ROOM_RECHECK seconds, near it
    every burst reads again."""
    import nfsd.state.store
    reads: list[str] = []
    real = os.statvfs

    def counted(p: str) -> os.statvfs_result:
        reads.append(p)
        return real(p)
    monkeypatch.setattr(nfsd.state.store.os, "statvfs", counted)
    store = Store(str(tmp_path / "state"))
    try:
        for _ in range(5):
            store.begin_burst()
            assert store.roomy()
            store.end_burst()
        assert len(reads) == 1
        monkeypatch.setattr(nfsd.state.store, "ROOM_RECHECK", 0.0)
        store.begin_burst()
        assert store.roomy()
        store.end_burst()
        assert len(reads) == 2  # the reading is too old: read again
        free = real(tmp_path).f_bfree * real(tmp_path).f_frsize
        monkeypatch.setattr(nfsd.state.store, "ROOM_RECHECK", 3600.0)
        monkeypatch.setattr(nfsd.state.store, "ROOM_MARGIN", free // 2 + (free >> 4))  # near it
        for _ in range(3):
            store.begin_burst()
            store.roomy()
            store.end_burst()
        assert len(reads) == 5  # every burst
    finally:
        store.close()


def test_places_told_to_clients_are_committed_before_the_reply(tmp_path: Path) -> None:
    """Through a server: a create, a rename and a remove answered, then kill -9 right after
    the last reply: the handle table on disk holds the new name and the tombstone (a burst's
    writes are committed, or for a lone call's burst journaled, before its replies leave),
    not something a search must repair."""
    from tests.nfs3_helpers import create_ok, remove, rename
    with killed_server(tmp_path) as (rpc, root):
        create_ok(rpc, root, b"made")
        create_ok(rpc, root, b"gone")
        gone = os.stat(tmp_path / "export" / "gone").st_ino
        assert rename(rpc, root, b"made", root, b"moved")[0] == 0
        assert remove(rpc, root, b"gone")[0] == 0
        moved = os.stat(tmp_path / "export" / "moved").st_ino
    env = store_env(tmp_path)
    # lone calls: their places were journaled, and a restarted server takes them in first
    assert found_after_restart(env, moved) == "moved"
    assert found_after_restart(env, gone) == "deleted"
    assert committed(env, moved) == "moved"  # (now in LMDB)


@contextmanager
def killed_server(tmp_path: Path) -> Iterator[tuple[Any, bytes]]:
    """A server of ``tmp_path/export`` (its state in ``tmp_path/state``), a client and the
    export's root handle; the server is killed by SIGKILL, as by kill -9, when the block
    ends."""
    import signal

    from tests.conftest import ServerProcess
    from tests.rpc_client import RpcClient
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state").start()
    try:
        with RpcClient(srv.port) as rpc:
            yield rpc, rpc.mount(srv.export_b)
            srv.stop(signal.SIGKILL)
    finally:
        srv.stop()


def store_env(tmp_path: Path) -> Path:
    """The one LMDB environment a server left under ``tmp_path/state``."""
    envs = [p for p in (tmp_path / "state").iterdir() if (p / "data.mdb").exists()]
    assert len(envs) == 1
    return envs[0]


def test_a_removed_files_tombstone_outlives_the_index_flush_that_saw_it_go(tmp_path: Path) -> None:
    """Through a server: after a REMOVE, the index's flush reports the entry as vanished
    (``LocalFS.vanished``); the tombstone stays, so the file's handle is STALE from the
    table after a restart too, not after a search of the export (the flush used to delete
    it with the places of files removed behind the server's back, which still go)."""
    from tests.nfs3_helpers import create_ok, lookup, names, remove
    from tests.waiting import eventually
    with killed_server(tmp_path) as (rpc, root):
        create_ok(rpc, root, b"gone.txt")
        create_ok(rpc, root, b"behind.txt")
        gone = os.stat(tmp_path / "export" / "gone.txt").st_ino
        behind = os.stat(tmp_path / "export" / "behind.txt").st_ino

        def txt() -> set[bytes]:  # a query: the index applies what it was told first
            status, res = lookup(rpc, root, b"ext:")
            assert status == 0
            status, res = lookup(rpc, res.object.data, b"txt")
            return names(rpc, res.object.data) if status == 0 else set()
        eventually(lambda: txt() == {b"gone.txt", b"behind.txt"} or txt())  # both indexed
        assert remove(rpc, root, b"gone.txt")[0] == 0
        os.unlink(tmp_path / "export" / "behind.txt")
        eventually(lambda: txt() == set() or txt())  # both seen to vanish
    env = store_env(tmp_path)
    assert found_after_restart(env, gone) == "deleted"
    assert found_after_restart(env, behind) == "none"


RESTART = """
import sys
from nfsd.state.store import Store
store = Store(sys.argv[1])
store.open_journal(append=False)
rec = store.get_object(1, int(sys.argv[2]))
print("none" if rec is None else ("deleted" if rec.deleted else rec.name.decode()))
store.close()
"""


def found_after_restart(path: Path, ino: int) -> str:
    """What a server started on the store finds for an inode (the journal taken in)."""
    return subprocess.run([sys.executable, "-c", RESTART, str(path), str(ino)], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2]).stdout.strip()


KILLED = """
import os, sys
from nfsd.state.store import Store
store = Store(sys.argv[1])
store.open_journal(append=True)
store.put_objects(1, [(20, 2, 7, b"old")])       # committed: an inode removed, then reused
before = store.env.info()["last_txnid"]
for step in sys.argv[2].split(","):
    store.begin_burst()
    if step == "create":
        store.put_objects(1, [(10, 2, 7, b"made")], later=True, must_fit=True)
    elif step == "remove":
        store.mark_deleted(1, 20, later=True)
    elif step == "reuse":                        # a thread-pool call: written at once
        store.put_objects(1, [(20, 2, 8, b"new")])
    store.end_burst()
print(store.env.info()["last_txnid"] - before, os.path.getsize(os.path.join(sys.argv[1], "places.journal")), flush=True)
os._exit(0)                                      # as kill -9: nothing closed, nothing synced
"""


def _killed_after(path: Path, steps: str) -> tuple[int, int]:
    """Run ``steps`` (bursts of one call each) on a store, then die as by kill -9: (LMDB
    transactions the bursts committed, bytes in the journal)."""
    out = subprocess.run([sys.executable, "-c", KILLED, str(path), steps], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split()
    return int(out[0]), int(out[1])


def test_a_lone_bursts_places_are_journaled_not_committed_and_survive_kill_9(tmp_path: Path) -> None:
    """A lone call's place costs an append to the journal, not an LMDB transaction; a
    server killed right after finds it on restart, tombstones too."""
    state = tmp_path / "state"
    commits, journal = _killed_after(state, "create,remove")
    assert commits == 0 and journal > 8  # no transaction per burst (8: the fold count)
    assert committed(state, 10) == "none"
    assert found_after_restart(state, 10) == "made"
    assert found_after_restart(state, 20) == "deleted"
    assert (state / "places.journal").stat().st_size == 8  # taken in, emptied (its fold count left)


def test_a_journaled_tombstone_never_undoes_a_later_write(tmp_path: Path) -> None:
    """A removal journaled, then the inode reused by a write made at once: the journal goes
    into LMDB before that write, so a restart does not tombstone the new file."""
    state = tmp_path / "state"
    _killed_after(state, "remove,reuse")
    assert committed(state, 20) == "new"
    assert found_after_restart(state, 20) == "new"


def test_the_journal_is_folded_into_lmdb_every_so_often(tmp_path: Path) -> None:
    import nfsd.state.store as store_module
    store = Store(str(tmp_path / "state"))
    store.open_journal(append=True)
    try:
        for i in range(store_module.FOLD_AT + 1):
            store.begin_burst()
            store.put_objects(1, [(100 + i, 2, 7, b"f%d" % i)], later=True)
            store.end_burst()
        assert committed(tmp_path / "state", 100) == "f0"
        assert store.get_object(1, 100 + store_module.FOLD_AT) == (2, 7, b"f%d" % store_module.FOLD_AT, False)
        assert len(store._journaled) <= 1
        store.begin_burst()
        store.put_objects(1, [(99, 2, 7, b"x")], later=True)
        store.end_burst()
        store.sync()  # the periodic sync takes the rest
        assert committed(tmp_path / "state", 99) == "x"
        assert (tmp_path / "state" / "places.journal").stat().st_size == 8  # the fold count alone
    finally:
        store.close()


DIES_AFTER_FOLD = """
import os, sys
from nfsd.state.store import Store
store = Store(sys.argv[1])
store.open_journal(append=True)
store.put_objects(1, [(20, 2, 7, b"old")])
store.begin_burst()
store.mark_deleted(1, 20, later=True)            # a lone removal: journaled
store.end_burst()
commit = store.env.begin                          # the next write transaction folds it;
class Dies:                                       # the process dies right after its commit
    def __init__(self, txn): self.txn = txn
    def __enter__(self): return self.txn.__enter__()
    def __exit__(self, *exc):
        self.txn.__exit__(*exc)
        os._exit(0)
store.env = type("Env", (), {"begin": lambda self, **kw: Dies(commit(**kw)) if kw.get("write") else commit(**kw),
                             "__getattr__": lambda self, name: getattr(commit.__self__, name)})()
store.put_objects(1, [(20, 2, 8, b"new")])       # the inode reused, written at once
"""


def test_a_journal_already_folded_is_not_taken_in_again_after_a_crash(tmp_path: Path) -> None:
    """A server killed (or a power loss) between the transaction that folded the journal and
    the journal's truncation: a restart must not apply the old tombstone over the newer
    place (the live file's handle would be STALE)."""
    state = tmp_path / "state"
    subprocess.run([sys.executable, "-c", DIES_AFTER_FOLD, str(state)], check=True,
                   cwd=Path(__file__).resolve().parents[2])
    assert committed(state, 20) == "new"
    assert (state / "places.journal").stat().st_size > 8  # the folded records are still there
    assert found_after_restart(state, 20) == "new"


def test_a_bursts_commit_on_a_full_store_keeps_nothing_and_raises_nothing(tmp_path: Path) -> None:
    """``end_burst`` never raises: a full map drops the burst's places (a search finds them
    again), marks the store full, and the first commit that goes through clears that."""
    store = Store(str(tmp_path / "state"), map_size=1 << 20)
    try:
        store.begin_burst()
        store.put_objects(1, [(1000 + i, 2, 7, b"f%04d" % i + b"x" * 200) for i in range(5000)], later=True)
        store.end_burst()  # ~1.1 MiB of places: more than the map holds
        assert store.full
        assert committed(tmp_path / "state", 1000) == "none"
        store.env.set_mapsize(64 << 20)
        store.begin_burst()
        store.put_objects(1, [(10, 2, 7, b"after")], later=True)
        store.mark_deleted(1, 1000, later=True)
        store.end_burst()
        assert not store.full
        assert committed(tmp_path / "state", 10) == "after"
    finally:
        store.close()
