"""The index's fast path for files the server itself just removed (``Index.note_removed``):
taken for gone at the flush without an ``lstat`` of the name, unless anything named the entry
since; the watcher drops the inotify echo of the removal (``Index.is_removed``)."""
from __future__ import annotations

import os
from pathlib import Path

import lmdb
import pytest

from nfsd.index import Index
from nfsd.index.writer_channel import WriterIndex

from tests.unit.test_index_created import Reads, create, q, src_tree


def indexed(idx: Index) -> Index:
    idx.scan(progress=False)
    return idx


def test_a_removed_file_is_taken_for_gone_without_reading_its_name(env: lmdb.Environment, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    export = src_tree(tmp_path)
    index = indexed(Index(env, str(export), 1))
    try:
        src = os.stat(export / "src").st_ino
        os.unlink(export / "src" / "old.c")
        reads = Reads(monkeypatch)
        index.note_removed(src, b"old.c")
        assert index.is_removed(src, b"old.c")
        assert q(index, (b"ext", b"c")) == []
        assert q(index, (b"name", b"old.c")) == []
        assert reads.lstat == 0
        assert not index.is_removed(src, b"old.c")  # taken by the flush
    finally:
        index.close()


def test_a_name_created_again_after_the_removal_is_read(env: lmdb.Environment, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    export = src_tree(tmp_path)
    index = indexed(Index(env, str(export), 1))
    try:
        src = os.stat(export / "src").st_ino
        os.unlink(export / "src" / "old.c")
        index.note_removed(src, b"old.c")
        (export / "src" / "old.c").write_text("int again;\n")  # behind the server: inotify notes it
        index.note_create_event(src, b"old.c")
        assert not index.is_removed(src, b"old.c")
        reads = Reads(monkeypatch)
        assert q(index, (b"name", b"old.c")) == [b"src/old.c"]
        assert reads.lstat == 1
        # and through the server: a CREATE's note after the REMOVE's
        os.unlink(export / "src" / "old.c")
        index.note_removed(src, b"old.c")
        index.note_created(src, b"old.c", create(export / "src", "old.c"))
        assert not index.is_removed(src, b"old.c")
        assert q(index, (b"size", b"empty")) == [b"src/old.c"]
    finally:
        index.close()


def test_an_index_that_routes_its_notes_gets_a_plain_note(env: lmdb.Environment, tmp_path: Path) -> None:
    export = src_tree(tmp_path)

    class Routing(Index):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            self.routed: list[tuple[int, bytes]] = []

        def note_entry(self, dir_ino: int, name: bytes) -> None:
            self.routed.append((dir_ino, name))
            super().note_entry(dir_ino, name)

    idx = Routing(env, str(export), 1)
    indexed(idx)
    try:
        src = os.stat(export / "src").st_ino
        os.unlink(export / "src" / "old.c")
        idx.note_removed(src, b"old.c")
        assert idx.routed == [(src, b"old.c")] and not idx.is_removed(src, b"old.c")
        assert q(idx, (b"name", b"old.c")) == []
    finally:
        idx.close()


def test_the_writer_of_several_workers_takes_the_fast_path(env: lmdb.Environment, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The primary serves the kernel client's one connection: its removals skip the read too."""
    export = src_tree(tmp_path)
    idx = indexed(WriterIndex(env, str(export), 1))
    try:
        src = os.stat(export / "src").st_ino
        os.unlink(export / "src" / "old.c")
        reads = Reads(monkeypatch)
        idx.note_removed(src, b"old.c")
        assert idx.is_removed(src, b"old.c")
        assert q(idx, (b"name", b"old.c")) == [] and reads.lstat == 0
    finally:
        idx.close()


def test_a_remove_through_the_file_system_takes_the_fast_path(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from nfsd.fs.localfs import LocalFS
    from nfsd.fs.semantic import SemanticFS
    from nfsd.query.names import Query
    from nfsd.state.store import Store

    export = src_tree(tmp_path)
    os.mkdir(export / "src" / "sub")
    store = Store(str(tmp_path / "state.lmdb"))
    eid = store.export_id(str(export))
    fs = SemanticFS(LocalFS(str(export), eid, store), Index(store.env, str(export), eid))
    try:
        fs.index.scan()
        fs.ready.set()
        src = fs.local.lookup(fs.root, b"src")
        fs.remove(src, b"old.c", False)
        assert fs.index.is_removed(src.ino, b"old.c")
        fs.remove(src, b"sub", True)  # a directory: a plain note (its subtree is the flush's)
        assert not fs.index.is_removed(src.ino, b"sub")
        reads = Reads(monkeypatch)
        v = fs._placeholder(Query(fs.local.root_ino, ((b"name", b"old.c"),)))
        assert list(fs._fault(v).names) == []  # the fault flushed the queue first
        assert reads.lstat == 1  # sub's
    finally:
        fs.index.close()
        fs.close()
        store.close()
