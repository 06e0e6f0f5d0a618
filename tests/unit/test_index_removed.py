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

from nfsd.query.names import Query
from tests.unit.test_index_created import Reads, Routing, create, q, semantic_fs, src_tree


def indexed(idx: Index) -> Index:
    idx.scan(progress=False)
    return idx


@pytest.mark.parametrize("kind", [Index, WriterIndex])
def test_a_removed_file_is_taken_for_gone_without_reading_its_name(env: lmdb.Environment, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   kind: type[Index]) -> None:
    """Also in the writer of several workers: the primary serves the kernel client's one
    connection."""
    export = src_tree(tmp_path)
    index = indexed(kind(env, str(export), 1))
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


def test_a_remove_through_the_file_system_takes_the_fast_path(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    export = src_tree(tmp_path)
    os.mkdir(export / "src" / "sub")
    with semantic_fs(tmp_path, export) as fs:
        src = fs.local.lookup(fs.root, b"src")
        fs.remove(src, b"old.c", False)
        assert fs.index.is_removed(src.ino, b"old.c")
        fs.remove(src, b"sub", True)  # a directory: a plain note (its subtree is the flush's)
        assert not fs.index.is_removed(src.ino, b"sub")
        reads = Reads(monkeypatch)
        v = fs._placeholder(Query(fs.local.root_ino, ((b"name", b"old.c"),)))
        assert list(fs._fault(v).names) == []  # the fault flushed the queue first
        assert reads.lstat == 1  # sub's
