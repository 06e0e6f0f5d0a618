"""``Uncounted``: how the directory watcher notes into an index (nfsd/index/writer_channel.py).

A cluster head's index is a ``PublishingIndex`` (nfsd/shared/publishing.py): what its watcher
finds must also be published to the other heads.  ``Uncounted`` used to call ``Index``'s
methods on the wrapper, which noted into the wrapped index and published nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb

from nfsd.index import Index
from nfsd.index.writer_channel import Uncounted, WriterIndex
from nfsd.shared.publishing import PublishingIndex


class Recorder:
    """The shared state's and the shared content's side: records what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def note_entry(self, *args: Any) -> None:
        self.calls.append(("entry", *args))

    def mine_entry(self, *args: Any) -> None:
        self.calls.append(("mine", *args))


def test_what_a_cluster_heads_watcher_finds_is_published(env: lmdb.Environment, tmp_path: Path) -> None:
    index = Index(env, str(tmp_path), 1)
    shared, content = Recorder(), Recorder()
    watched = Uncounted(PublishingIndex(index, shared, 7, content).found())
    assert not index.has_notes()
    watched.note_entry(11, b"changed")
    assert index.has_notes()  # noted in the head's own index too
    watched.note_create_event(11, b"created")
    watched.note_delete_event(11, b"deleted")
    assert shared.calls == [("entry", 7, 11, b"changed", False), ("entry", 7, 11, b"created", False),
                            ("entry", 7, 11, b"deleted", False)]
    assert content.calls == [("mine", 11, b"changed"), ("mine", 11, b"created"), ("mine", 11, b"deleted")]


class Counts:
    """``NoteCounts``' side of a writer: records what it is told to count."""

    def __init__(self) -> None:
        self.added: list[tuple[int, int]] = []

    def add(self, slot: int, count: int) -> None:
        self.added.append((slot, count))


def test_what_the_writers_watcher_finds_is_queued_but_not_counted(env: lmdb.Environment, tmp_path: Path) -> None:
    """A writer counts the notes of its own calls (acknowledged to a client); changes found
    behind the server's back are acknowledged to nobody."""
    writer = WriterIndex(env, str(tmp_path), 1)
    counts = Counts()
    writer.note_counts = counts  # type: ignore[assignment]
    watched = Uncounted(writer)
    for note in (lambda: watched.note_entry(11, b"a"), lambda: watched.note_create_event(11, b"b"),
                 lambda: watched.note_delete_event(11, b"d"), lambda: watched.note_ino(12), lambda: watched.note_dir(13)):
        note()
    assert writer.has_notes() and counts.added == []
    writer.note_entry(11, b"c")  # the writer's own call
    assert counts.added == [(0, 1)]
