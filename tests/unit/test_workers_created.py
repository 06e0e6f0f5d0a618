"""``--workers``: a file a worker created reaches the index writer with its creation's stat
(``Index.note_created``'s fast path: no ``lstat``, no ``getxattr`` at the flush), whichever
worker made it; and the watcher recognises the echo of a follower's creation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import lmdb
import pytest

from nfsd.index import Index
from nfsd.index.writer_channel import FollowerIndex, NotesInbox, NoteSender, Uncounted, WriterIndex, channel_pair
from tests.unit.test_index_created import Reads, create, q, src_tree


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return src_tree(tmp_path)


@pytest.fixture
def writer(env: lmdb.Environment, export: Path) -> Iterable[WriterIndex]:
    idx = WriterIndex(env, str(export), 1)
    idx.scan(progress=False)
    yield idx
    idx.close()


@pytest.fixture
def channel() -> Iterable[tuple[NoteSender, list]]:
    w, f = channel_pair()
    yield NoteSender(f), [w]
    w.close()
    f.close()


def test_the_writers_own_creation_is_queued_with_its_stat(writer: WriterIndex, export: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = os.stat(export / "src").st_ino
    st = create(export / "src", "new.c")
    reads = Reads(monkeypatch)
    writer.note_created(src, b"new.c", st)
    assert writer.is_fresh(src, b"new.c")
    writer.flush()
    assert (reads.lstat, reads.getxattr) == (0, 0)
    assert q(writer, (b"name", b"new.c")) == [b"src/new.c"]


def test_a_followers_creation_reaches_the_writer_with_its_stat(env: lmdb.Environment, writer: WriterIndex,
                                                               export: Path, channel: tuple[NoteSender, list],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sender, ends = channel
    follower = FollowerIndex(env, str(export), 1, sender)
    inbox = NotesInbox({1: writer}, ends, lambda eid: 0)
    src = os.stat(export / "src").st_ino
    st = create(export / "src", "new.c")
    reads = Reads(monkeypatch)
    follower.note_created(src, b"new.c", st)
    inbox.drain()
    assert writer.is_fresh(src, b"new.c")
    writer.flush()
    assert (reads.lstat, reads.getxattr) == (0, 0)
    assert q(writer, (b"name", b"new.c")) == [b"src/new.c"]
    assert q(writer, (b"size", b"empty")) == [b"src/new.c"]


def read_again(writer: WriterIndex, inbox: NotesInbox, src: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the follower's note of src/new.c is taken in, the flush reads the file (its
    creation's stat does not stand for it): grown, it is no longer empty."""
    inbox.drain()
    assert not writer.is_fresh(src, b"new.c")
    reads = Reads(monkeypatch)
    writer.flush()
    assert reads.lstat == 1
    assert q(writer, (b"size", b"empty")) == []


def test_a_followers_creation_noted_meanwhile_is_read_again(env: lmdb.Environment, writer: WriterIndex,
                                                            export: Path, channel: tuple[NoteSender, list],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The creation's note comes after the change: if the entry was noted meanwhile (the
    watcher saw it, perhaps changed again), the creation's stat must not stand for it."""
    sender, ends = channel
    follower = FollowerIndex(env, str(export), 1, sender)
    inbox = NotesInbox({1: writer}, ends, lambda eid: 0)
    src = os.stat(export / "src").st_ino
    st = create(export / "src", "new.c")
    follower.note_created(src, b"new.c", st)
    (export / "src" / "new.c").write_text("grown behind the server\n")
    Index.note_entry(writer, src, b"new.c")  # the watcher, before the inbox took the note in
    read_again(writer, inbox, src, monkeypatch)


def test_the_watcher_drops_the_echo_of_a_followers_creation_and_still_forgets_it(
        env: lmdb.Environment, writer: WriterIndex, export: Path, channel: tuple[NoteSender, list]) -> None:
    """An echo the watcher drops is still forgotten by the entry caches (the followers
    learn only from it)."""
    sender, ends = channel
    follower = FollowerIndex(env, str(export), 1, sender)
    inbox = NotesInbox({1: writer}, ends, lambda eid: 0)
    forgotten: list[tuple[int, bytes]] = []
    watched = Uncounted(writer, lambda d, n: forgotten.append((d, n)))
    src = os.stat(export / "src").st_ino
    follower.note_created(src, b"new.c", create(export / "src", "new.c"))
    inbox.drain()
    assert watched.is_fresh(src, b"new.c")
    assert forgotten == [(src, b"new.c")]
    assert not watched.is_fresh(src, b"other.c")
    assert forgotten == [(src, b"new.c")]


def echo_first(env: lmdb.Environment, writer: WriterIndex, export: Path, channel: tuple[NoteSender, list]
               ) -> tuple[FollowerIndex, NotesInbox, Uncounted, int, os.stat_result]:
    """A follower created src/new.c, and the writer's watcher noted its IN_CREATE before the
    follower's note came: (follower, inbox, the watcher's index, src's inode, the stat)."""
    sender, ends = channel
    follower = FollowerIndex(env, str(export), 1, sender)
    inbox = NotesInbox({1: writer}, ends, lambda eid: 0)
    watched = Uncounted(writer)
    src = os.stat(export / "src").st_ino
    st = create(export / "src", "new.c")
    watched.note_create_event(src, b"new.c")
    return follower, inbox, watched, src, st


def test_the_echo_of_a_followers_creation_before_its_note_costs_the_flush_no_read(
        env: lmdb.Environment, writer: WriterIndex, export: Path, channel: tuple[NoteSender, list],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher often reads a follower's IN_CREATE before the follower's note (sent at
    the end of its burst) is taken in: the note still brings the creation's stat, so the
    flush adds the file without reading it (it read it: an lstat and a getxattr)."""
    follower, inbox, _, src, st = echo_first(env, writer, export, channel)
    follower.note_created(src, b"new.c", st)
    inbox.drain()
    assert writer.is_fresh(src, b"new.c")
    reads = Reads(monkeypatch)
    writer.flush()
    assert (reads.lstat, reads.getxattr) == (0, 0)
    assert q(writer, (b"size", b"empty")) == [b"src/new.c"]


@pytest.mark.parametrize("then", ["changed", "created again"])
def test_an_echo_followed_by_another_event_still_has_the_entry_read(
        env: lmdb.Environment, writer: WriterIndex, export: Path, channel: tuple[NoteSender, list],
        monkeypatch: pytest.MonkeyPatch, then: str) -> None:
    """Any other event of the name after its IN_CREATE (a change behind the server's back,
    or a removal and a second creation) and before the creation's note: the note's stat
    must not stand for the entry."""
    follower, inbox, watched, src, st = echo_first(env, writer, export, channel)
    (export / "src" / "new.c").write_text("grown behind the server\n")
    if then == "changed":
        watched.note_entry(src, b"new.c")
    else:
        watched.note_create_event(src, b"new.c")
    follower.note_created(src, b"new.c", st)
    read_again(writer, inbox, src, monkeypatch)


def test_the_writers_note_of_a_file_already_queued_is_not_counted_again(writer: WriterIndex, export: Path) -> None:
    """A SETATTR or WRITE load on one file in the primary: a note of a file already queued
    adds nothing (the flush that takes it reads the file after every change), and the
    notes stay pending, for every worker, until that flush is done."""
    from nfsd.index.writer_channel import NoteCounts
    counts = NoteCounts.create(2)
    counts.attach(0)
    writer.note_counts, writer.siblings = counts, [writer]
    ino = os.stat(export / "src").st_ino
    writer.note_ino(ino)
    writer.note_ino(ino)
    assert counts.snapshot() == [1, 0] and counts.pending()
    writer.note_ino(ino, force=True)     # a forced one is always queued and counted
    assert counts.snapshot() == [2, 0]
    writer.flush()
    assert not counts.pending()
    writer.note_ino(ino)                 # taken by that flush: queued and counted again
    assert counts.snapshot() == [3, 0] and counts.pending()
