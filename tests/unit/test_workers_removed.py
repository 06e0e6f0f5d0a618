"""``--workers``: a file a follower removed reaches the index writer as removed (an ``R``
note: the flush takes it for gone without an ``lstat``, the watcher drops its echo), but only
when no flush of the writer took its queue between the removal and the note's arrival, and
no note of the name waits already: a re-creation meanwhile is never taken for gone."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import lmdb
import pytest

from nfsd.index.writer_channel import (FollowerIndex, NoteCounts, NotesInbox, NoteSender, Uncounted, WriterIndex,
                                      channel_pair)
from tests.unit.test_index_created import Reads, create, q, src_tree


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return src_tree(tmp_path)


class Workers:
    """A writer and one follower in one process, their notes counted as the server's are."""

    def __init__(self, env: lmdb.Environment, export: Path) -> None:
        self.export = export
        self.counts = NoteCounts.create(2)
        self.counts.attach(0)
        theirs = NoteCounts(self.counts.fd, 2)
        theirs.attach(1)
        self.writer = WriterIndex(env, str(export), 1)
        self.writer.scan(progress=False)
        self.writer.note_counts, self.writer.siblings = self.counts, [self.writer]
        self.w_end, f_end = channel_pair()
        self.f_end = f_end
        self.sender = NoteSender(f_end, theirs, 1)
        self.follower = FollowerIndex(env, str(export), 1, self.sender)
        self.inbox = NotesInbox({1: self.writer}, [self.w_end], lambda eid: 0)
        self.src = os.stat(export / "src").st_ino

    def close(self) -> None:
        self.writer.close()
        self.w_end.close()
        self.f_end.close()
        os.close(self.counts.fd)

    def follower_removes(self, name: str, meanwhile: object = None) -> None:
        """The follower serves a REMOVE of src/NAME in a burst (``meanwhile()`` runs between
        its unlink and its note, as another worker's calls may)."""
        self.sender.begin_burst()
        os.unlink(self.export / "src" / name)
        if callable(meanwhile):
            meanwhile()
        self.follower.note_removed(self.src, name.encode())
        self.sender.end_burst()

    def taken_for_gone_unread(self, name: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
        """The note taken in, the name is queued as removed, and the flush tombstones it
        without reading it."""
        self.inbox.drain()
        assert self.writer.is_removed(self.src, name)  # (the watcher drops its echo)
        reads = Reads(monkeypatch)
        self.writer.flush()
        assert reads.lstat == 0
        assert q(self.writer, (b"name", name)) == []

    def writer_recreates(self, flush: bool) -> None:
        """The writer's own CREATE of src/old.c (its note with the creation's stat)."""
        self.writer.note_created(self.src, b"old.c", create(self.export / "src", "old.c"))
        if flush:
            self.writer.flush()


@pytest.fixture
def workers(env: lmdb.Environment, export: Path) -> Iterable[Workers]:
    w = Workers(env, export)
    yield w
    w.close()


@pytest.mark.parametrize("taken_in", ["by the inbox", "by the flush"])
def test_a_followers_removal_costs_the_flush_no_read(workers: Workers, monkeypatch: pytest.MonkeyPatch,
                                                     taken_in: str) -> None:
    assert q(workers.writer, (b"name", b"old.c")) == [b"src/old.c"]
    workers.follower_removes("old.c")
    if taken_in == "by the inbox":
        workers.taken_for_gone_unread(b"old.c", monkeypatch)
        return
    reads = Reads(monkeypatch)
    workers.writer.flush()  # (its drain takes the note in first, once no flush took the queue)
    assert reads.lstat == 0
    assert q(workers.writer, (b"name", b"old.c")) == []


def test_a_re_creation_flushed_before_the_note_came_is_not_taken_for_gone(workers: Workers) -> None:
    """The writer re-created the name and a flush indexed it between the follower's unlink
    and its note: the note must have the name read (fails if any ``R`` note is trusted)."""
    workers.follower_removes("old.c", meanwhile=lambda: workers.writer_recreates(flush=True))
    workers.inbox.drain()
    assert not workers.writer.is_removed(workers.src, b"old.c")
    workers.writer.flush()
    assert q(workers.writer, (b"name", b"old.c")) == [b"src/old.c"]


def test_a_re_creation_noted_before_the_note_came_is_not_taken_for_gone(workers: Workers) -> None:
    """The writer re-created the name and noted it, not flushed yet, before the follower's
    note came: that note must not make the queued entry a removal."""
    workers.follower_removes("old.c", meanwhile=lambda: workers.writer_recreates(flush=False))
    workers.writer.flush()
    assert q(workers.writer, (b"name", b"old.c")) == [b"src/old.c"]


def test_a_re_creation_after_the_note_has_the_name_read(workers: Workers) -> None:
    workers.follower_removes("old.c")
    workers.inbox.drain()
    workers.writer_recreates(flush=False)
    assert not workers.writer.is_removed(workers.src, b"old.c")
    workers.writer.flush()
    assert q(workers.writer, (b"name", b"old.c")) == [b"src/old.c"]


def test_a_removal_while_the_writer_flushes_is_a_plain_note(workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush running when the follower's burst began may read the name after the
    removal: no mark, so the writer reads the name."""
    workers.counts.flush_begun()
    try:
        workers.follower_removes("old.c")
    finally:
        workers.counts.flush_ended()
    workers.inbox.drain()
    assert not workers.writer.is_removed(workers.src, b"old.c")
    reads = Reads(monkeypatch)
    workers.writer.flush()
    assert reads.lstat == 1
    assert q(workers.writer, (b"name", b"old.c")) == []


def test_a_removal_outside_a_burst_is_a_plain_note(workers: Workers) -> None:
    os.unlink(workers.export / "src" / "old.c")
    workers.follower.note_removed(workers.src, b"old.c")
    workers.inbox.drain()
    assert not workers.writer.is_removed(workers.src, b"old.c")
    workers.writer.flush()
    assert q(workers.writer, (b"name", b"old.c")) == []


def test_the_echo_of_a_followers_removal_before_its_note_still_costs_the_flush_no_read(
        workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's watcher often reads the unlink's IN_DELETE before the follower's note
    (taken in every 20 ms) comes: a name queued by deletions alone is still taken for gone."""
    watched = Uncounted(workers.writer)
    workers.follower_removes("old.c", meanwhile=lambda: watched.note_delete_event(workers.src, b"old.c"))
    workers.taken_for_gone_unread(b"old.c", monkeypatch)


def test_a_re_creation_after_the_echo_of_the_removal_is_not_taken_for_gone(workers: Workers) -> None:
    watched = Uncounted(workers.writer)

    def echo_then_recreate() -> None:
        watched.note_delete_event(workers.src, b"old.c")
        workers.writer_recreates(flush=False)

    workers.follower_removes("old.c", meanwhile=echo_then_recreate)
    workers.inbox.drain()
    assert not workers.writer.is_removed(workers.src, b"old.c")
    workers.writer.flush()
    assert q(workers.writer, (b"name", b"old.c")) == [b"src/old.c"]


def test_a_file_created_then_removed_before_a_flush_costs_the_flush_no_read(
        workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A create storm's notes wait for the storm to calm down (``Index.maintain``), so the
    removals that follow it find their names queued by their own creations: notes that
    came before the removal began, which do not make it plain."""
    workers.follower.note_created(workers.src, b"new.c", create(workers.export / "src", "new.c"))
    workers.inbox.drain()
    workers.follower_removes("new.c")
    workers.taken_for_gone_unread(b"new.c", monkeypatch)


def test_a_rename_onto_the_name_after_the_echo_of_the_removal_is_not_taken_for_gone(workers: Workers) -> None:
    """A name queued by the removal's echo alone, then named by a plain note (the writer's
    RENAME onto it): the follower's note must have it read."""
    watched = Uncounted(workers.writer)
    (workers.export / "src" / "other.c").write_text("int other;\n")
    workers.writer.flush()

    def echo_then_rename() -> None:
        watched.note_delete_event(workers.src, b"old.c")
        os.rename(workers.export / "src" / "other.c", workers.export / "src" / "old.c")
        workers.writer.note_entry(workers.src, b"other.c")
        workers.writer.note_entry(workers.src, b"old.c")

    workers.follower_removes("old.c", meanwhile=echo_then_rename)
    workers.inbox.drain()
    assert not workers.writer.is_removed(workers.src, b"old.c")
    workers.writer.flush()
    assert q(workers.writer, (b"name", b"old.c")) == [b"src/old.c"]
