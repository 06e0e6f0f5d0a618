"""``Store.put_places``: the places a walk met go in with one write transaction, each keeping
the generation its inode's record has at the moment of that transaction (not as a read made
before it found it), so a generation another worker committed meanwhile is never
overwritten; ``LocalFS._repair`` records through it.  ``Store.put_place``: one place as
``put_objects`` writes it with ``later``, waiting for the burst's end only while the store
has room for what must fit."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from nfsd.fs.localfs import LocalFS
from nfsd.state.store import _OBJ_KEY, Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "state"))
    yield s
    s.close()


def test_keeps_the_recorded_generation_and_zero_for_a_new_inode(store: Store) -> None:
    store.put_objects(1, [(10, 2, 77, b"old")])
    store.put_places(1, [(10, 3, b"new", None), (11, 3, b"other", None), (12, 3, b"given", 5)])
    assert store.get_object(1, 10) == (3, 77, b"new", False)
    assert store.get_object(1, 11) == (3, 0, b"other", False)
    assert store.get_object(1, 12) == (3, 5, b"given", False)


def test_a_tombstone_generation_is_kept_and_the_place_made_live(store: Store) -> None:
    store.put_objects(1, [(10, 2, 9, b"gone")])
    store.mark_deleted(1, 10)
    store.put_places(1, [(10, 2, b"back", None)])
    assert store.get_object(1, 10) == (2, 9, b"back", False)


def test_a_write_waiting_for_the_burst_end_gives_the_generation(store: Store) -> None:
    store.put_objects(1, [(10, 2, 3, b"d")])
    store.begin_burst()
    store.put_objects(1, [(10, 4, 8, b"renamed")], later=True)  # a reused number's place
    store.put_places(1, [(10, 5, b"walked", None)])
    store.end_burst()
    assert store.get_object(1, 10) == (5, 8, b"walked", False)


def test_a_generation_committed_between_the_walk_and_its_write_is_kept(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker commits a new generation for a directory after the walk met it and
    before the repair's transaction: the repair writes that generation (a read transaction
    per directory before the write, as it was, wrote the older one over it)."""
    exp = tmp_path / "exp"
    (exp / "d").mkdir(parents=True)
    ino = (exp / "d").stat().st_ino
    fs = LocalFS(str(exp), 1, store)
    fs.sole_writer = False  # (``--workers``: other processes write the table)
    store.put_objects(1, [(ino, fs.root_ino, 4, b"d")])
    real = store._objects_txn

    @contextmanager
    def other_worker_first() -> Iterator[object]:
        monkeypatch.setattr(store, "_objects_txn", real)
        store.put_objects(1, [(ino, fs.root_ino, 6, b"d")])  # committed just before ours
        with real() as txn:
            yield txn
    monkeypatch.setattr(store, "_objects_txn", other_worker_first)
    fs._repair([(ino, fs.root_ino, b"d")])
    assert store.get_object(1, ino) == (fs.root_ino, 6, b"d", False)
    fs.close()


class _Cluster:
    """What a store of a cluster head tells the others (nfsd/shared): the places noted."""

    def __init__(self) -> None:
        self.noted: list[tuple[int, int, int, int, bytes]] = []

    def note_place(self, export_id: int, ino: int, parent: int, gen: int, name: bytes) -> None:
        self.noted.append((export_id, ino, parent, gen, name))

    def place(self, export_id: int, ino: int) -> None:
        return None


def test_a_cluster_head_publishes_the_places_with_their_kept_generation(store: Store) -> None:
    store.put_objects(1, [(10, 2, 77, b"old")])
    cluster = _Cluster()
    store.shared = cluster
    store.put_places(1, [(10, 3, b"new", None), (11, 3, b"other", None)])
    assert cluster.noted == [(1, 10, 3, 77, b"new"), (1, 11, 3, 0, b"other")]
    assert store.get_object(1, 10) == (3, 77, b"new", False)


def committed(store: Store, ino: int) -> object:
    """The place LMDB holds (``get_object`` answers what waits for the burst's end too)."""
    return store.get_object_committed(_OBJ_KEY.pack(1, ino))


def test_put_place_waits_for_the_burst_end_as_put_objects_does(store: Store) -> None:
    store.put_place(1, 10, 2, 7, b"at-once", must_fit=True)  # no burst: written now
    assert committed(store, 10) == (2, 7, b"at-once", False)
    store.begin_burst()
    store.put_place(1, 11, 2, 8, b"later", must_fit=True)
    store.put_place(1, 10, 3, 7, b"moved", must_fit=False)
    assert committed(store, 11) is None  # (waits for the burst's end)
    assert committed(store, 10) == (2, 7, b"at-once", False)
    assert store.get_object(1, 11) == (2, 8, b"later", False)  # (read from what waits)
    store.end_burst()
    assert committed(store, 11) == (2, 8, b"later", False)
    assert committed(store, 10) == (3, 7, b"moved", False)


def test_put_place_that_must_fit_a_store_short_of_room_is_written_at_once(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "roomy", lambda: False)  # (StoreFull must be known now)
    store.begin_burst()
    store.put_place(1, 12, 2, 9, b"new", must_fit=True)
    assert committed(store, 12) == (2, 9, b"new", False)
    store.put_place(1, 13, 2, 9, b"renamed", must_fit=False)  # (a cache: may wait)
    assert committed(store, 13) is None
    store.end_burst()
    assert committed(store, 13) == (2, 9, b"renamed", False)
