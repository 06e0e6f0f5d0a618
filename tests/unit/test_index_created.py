"""The index's fast path for files the server itself just created (``Index.note_created``):
added from the creation's own ``fstat``, without reading the entry again, and read in full at
the next look whatever its ctime says (``FLAG_UNREAD``)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

import lmdb
import pytest

from nfsd.fs.localfs import LocalFS
from nfsd.fs.semantic import SemanticFS
from nfsd.index import Index, fsread
from nfsd.index.tables import FLAG_UNREAD, Tables
from nfsd.query.names import Query
from nfsd.state.store import Store

TAGS = "user.pysfsd.tags"


def src_tree(tmp_path: Path) -> Path:
    """An export holding ``src/old.c`` (test_workers_created's too)."""
    root = tmp_path / "export"
    (root / "src").mkdir(parents=True)
    (root / "src" / "old.c").write_text("int old;\n")
    return root


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return src_tree(tmp_path)


@pytest.fixture
def index(env: lmdb.Environment, export: Path) -> Iterable[Index]:
    idx = Index(env, str(export), 1)
    idx.scan(progress=False)
    yield idx
    idx.close()
    with env.begin() as txn:  # the places beside the postings are what these and the records give
        assert Tables(env, 1).places_differences(txn) == (0, 0)


class Reads:
    """Counts the index's own reads of an entry: its ``lstat`` and the user-field ``getxattr``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lstat = self.getxattr = 0
        real_lstat, real_getxattr = fsread.lstat_at, os.getxattr

        def lstat_at(*args: object) -> object:
            self.lstat += 1
            return real_lstat(*args)  # type: ignore[arg-type]

        def getxattr(*args: object, **kwargs: object) -> object:
            self.getxattr += 1
            return real_getxattr(*args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(fsread, "lstat_at", lstat_at)
        monkeypatch.setattr(os, "getxattr", getxattr)


@contextlib.contextmanager
def semantic_fs(tmp_path: Path, export: Path) -> Iterator[SemanticFS]:
    """A SemanticFS over ``export`` with its index scanned and ready (no server)."""
    store = Store(str(tmp_path / "state.lmdb"))
    eid = store.export_id(str(export))
    fs = SemanticFS(LocalFS(str(export), eid, store), Index(store.env, str(export), eid))
    try:
        fs.index.scan()
        fs.ready.set()
        yield fs
    finally:
        fs.index.close()
        fs.close()
        store.close()


def create(d: Path, name: str) -> os.stat_result:
    """An empty file made as CREATE makes it; its creation's ``fstat``."""
    fd = os.open(d / name, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def q(idx: Index, *terms: tuple[bytes, bytes]) -> list[bytes]:
    idx.flush()
    return sorted(r.path for r in idx.query(idx.root_ino, list(terms)))


def record_flags(env: lmdb.Environment, ino: int) -> int:
    with env.begin() as txn:
        rec = Tables(env, 1).file(txn, ino)
    assert rec is not None
    return rec.flags


def test_a_created_file_is_added_without_reading_it_again(index: Index, export: Path, env: lmdb.Environment,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = os.stat(export / "src").st_ino
    st = create(export / "src", "new.c")
    reads = Reads(monkeypatch)
    index.note_created(src, b"new.c", st)
    assert index.is_fresh(src, b"new.c")
    index.flush()
    assert (reads.lstat, reads.getxattr) == (0, 0)
    assert not index.is_fresh(src, b"new.c")  # taken by the flush
    assert q(index, (b"ext", b"c")) == [b"src/new.c", b"src/old.c"]
    assert q(index, (b"name", b"new.c")) == [b"src/new.c"]
    assert q(index, (b"size", b"empty")) == [b"src/new.c"]
    assert record_flags(env, st.st_ino) & FLAG_UNREAD
    # the next look at it reads it in full (and clears the mark), though nothing changed
    index.note_entry(src, b"new.c")
    index.flush()
    assert reads.lstat == 1 and reads.getxattr >= 1
    assert not record_flags(env, st.st_ino) & FLAG_UNREAD
    assert q(index, (b"ext", b"c")) == [b"src/new.c", b"src/old.c"]


def test_a_change_noted_before_the_flush_has_the_entry_read(index: Index, export: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = os.stat(export / "src").st_ino
    st = create(export / "src", "a.c")
    index.note_created(src, b"a.c", st)
    (export / "src" / "a.c").write_bytes(b"x" * 5000)  # written behind the server: inotify notes it
    index.note_entry(src, b"a.c")
    assert not index.is_fresh(src, b"a.c")
    st_b = create(export / "src", "b.c")
    index.note_created(src, b"b.c", st_b)
    (export / "src" / "b.c").write_bytes(b"y" * 5000)  # written through the server: its inode noted
    index.note_ino(st_b.st_ino)
    reads = Reads(monkeypatch)
    assert q(index, (b"size", b"empty")) == []
    assert reads.lstat == 2
    assert q(index, (b"ext", b"c")) == [b"src/a.c", b"src/b.c", b"src/old.c"]


def test_a_user_field_set_in_the_creations_clock_tick_is_read_at_the_next_look(
        index: Index, export: Path) -> None:
    """A tagger sets a field between the server's ``open`` and its ``fstat``: the creation's
    stat has the ctime after that change, so a second look whose ``lstat`` matches it would
    take the file as unchanged; the record's FLAG_UNREAD has it read anyway."""
    src = os.stat(export / "src").st_ino
    fd = os.open(export / "src" / "t.txt", os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.setxattr(export / "src" / "t.txt", TAGS, b"urgent")
        st = os.fstat(fd)
    finally:
        os.close(fd)
    index.note_created(src, b"t.txt", st)
    assert q(index, (b"tag", b"urgent")) == []  # the fast path does not read it...
    index.note_entry(src, b"t.txt")  # ...the inotify event of the setxattr comes after the flush
    assert q(index, (b"tag", b"urgent")) == [b"src/t.txt"]


def test_a_name_removed_and_created_again_in_one_batch(index: Index, export: Path) -> None:
    src = os.stat(export / "src").st_ino
    os.unlink(export / "src" / "old.c")
    index.note_entry(src, b"old.c")
    st = create(export / "src", "old.c")
    index.note_created(src, b"old.c", st)
    assert q(index, (b"ext", b"c")) == [b"src/old.c"]
    assert q(index, (b"size", b"empty")) == [b"src/old.c"]
    assert [r.ino for r in index.query(index.root_ino, [(b"name", b"old.c")])] == [st.st_ino]


class Routing(Index):
    """An index that routes its notes (as a follower's does): it records them, then queues them."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.routed: list[tuple[int, bytes]] = []

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        self.routed.append((dir_ino, name))
        super().note_entry(dir_ino, name)


def test_an_index_that_routes_its_notes_gets_a_plain_note(env: lmdb.Environment, export: Path) -> None:
    idx = Routing(env, str(export), 1)
    try:
        idx.scan(progress=False)
        src = os.stat(export / "src").st_ino
        idx.note_created(src, b"r.c", create(export / "src", "r.c"))
        assert idx.routed == [(src, b"r.c")]
        assert not idx.is_fresh(src, b"r.c")
        assert q(idx, (b"name", b"r.c")) == [b"src/r.c"]
    finally:
        idx.close()


def test_a_create_through_the_file_system_takes_the_fast_path(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "export"
    (export / "src").mkdir(parents=True)
    with semantic_fs(tmp_path, export) as fs:
        src = fs.local.lookup(fs.root, b"src")
        fs.create_file(src, b"new.c", 0o644, True)
        assert fs.index.is_fresh(src.ino, b"new.c")
        (export / "src" / "old.c").write_text("int old;\n")
        fs.create_file(src, b"old.c", 0o644, False)  # an existing file, reused: read as any change
        assert not fs.index.is_fresh(src.ino, b"old.c")
        reads = Reads(monkeypatch)
        v = fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"c"),)))
        assert sorted(fs._fault(v).names) == [b"new.c", b"old.c"]  # the fault flushed the queue first
        assert reads.lstat == 1  # old.c's


def test_a_hard_link_made_before_the_flush_keeps_both_names(index: Index, export: Path) -> None:
    """The link's name sorts first, so the flush meets the inode there before the created
    name: the created name is then read as any entry (its creation stat says one link)."""
    src = os.stat(export / "src").st_ino
    st = create(export / "src", "new.c")
    index.note_created(src, b"new.c", st)
    os.link(export / "src" / "new.c", export / "src" / "a_link.c")
    index.note_entry(src, b"a_link.c")  # as the server's LINK notes it
    assert q(index, (b"name", b"new.c")) == [b"src/new.c"]
    assert q(index, (b"name", b"a_link.c")) == [b"src/a_link.c"]
    assert q(index, (b"ext", b"c")) == [b"src/a_link.c", b"src/new.c", b"src/old.c"]


def test_a_create_storm_queues_a_bounded_number_of_stats(index: Index, export: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_FRESH waiting, created files are plain notes (read by the flush); each one
    waits as a compact ``CreatedStat`` holding what the index reads of the stat."""
    from nfsd.index import index as index_module
    monkeypatch.setattr(index_module, "MAX_FRESH", 2)
    src = os.stat(export / "src").st_ino
    stats = {n: create(export / "src", n) for n in ("a.c", "b.c", "c.c")}
    for n, st in stats.items():
        index.note_created(src, n.encode(), st)
    assert [index.is_fresh(src, n.encode()) for n in stats] == [True, True, False]
    queued = index._fresh[(src, b"a.c")]
    assert isinstance(queued, index_module.CreatedStat)
    for field in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size", "st_mtime_ns",
                  "st_ctime_ns"):
        assert getattr(queued, field) == getattr(stats["a.c"], field)
    reads = Reads(monkeypatch)
    assert q(index, (b"ext", b"c")) == [b"src/a.c", b"src/b.c", b"src/c.c", b"src/old.c"]
    assert reads.lstat == 1  # c.c's


def test_files_created_in_a_new_directory_are_read_once_by_the_flush(
        index: Index, export: Path, env: lmdb.Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory made and filled before a flush (MKDIR, then CREATEs in it): the flush lists
    the new directory once, adding the created files from their stats as their own notes
    would, and does not reconcile each noted file again after that listing."""
    root = os.stat(export).st_ino
    (export / "new").mkdir()
    new = os.stat(export / "new").st_ino
    index.note_entry(root, b"new")
    index.note_dir(new)  # as the watcher notes a directory it starts watching
    stats = {name: create(export / "new", name) for name in ("a.c", "b.c", "c.txt")}
    for name, st in stats.items():
        index.note_created(new, name.encode(), st)
    entries: list[bytes] = []
    from nfsd.index import scanner
    real_entry = scanner.Reconciler.entry

    def entry(self: scanner.Reconciler, dir_fd: int, dir_ino: int, name: bytes, st: os.stat_result) -> bool:
        entries.append(name)
        return real_entry(self, dir_fd, dir_ino, name, st)
    monkeypatch.setattr(scanner.Reconciler, "entry", entry)
    reads = Reads(monkeypatch)
    index.flush()
    assert entries == [b"new"]  # the directory itself, under its parent; its files by their stats
    assert reads.getxattr == 0
    assert q(index, (b"ext", b"c")) == [b"new/a.c", b"new/b.c", b"src/old.c"]
    assert q(index, (b"name", b"c.txt")) == [b"new/c.txt"]
    for st in stats.values():
        assert record_flags(env, st.st_ino) & FLAG_UNREAD


def keys_and_record(env: lmdb.Environment, ino: int) -> tuple[frozenset[bytes], frozenset[bytes], tuple[object, ...]]:
    """A file's two tiers of keys, its name and mtime keys left out (two files made a moment
    apart may be on two sides of midnight), and its record but the name."""
    t = Tables(env, 1)
    with env.begin() as txn:
        stat_keys, content_keys = t.keys_of(txn, ino)
        rec = t.file(txn, ino)
    assert rec is not None
    return (frozenset(k for k in stat_keys if not k.startswith((b"name\0", b"mtime\0"))), content_keys,
            tuple(rec[:-1]))


def test_files_added_from_the_memos_are_indexed_as_the_first_one(index: Index, export: Path, env: lmdb.Environment,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The first created file of a kind fills the extractor's memos (``stat_keys``,
    ``empty_new``); the next ones are added from them alone (``Extractor.created_keys``):
    the same keys and record as the first one's, but their names, and the same as a full
    read of them gives (places checked by the fixture)."""
    src = os.stat(export / "src").st_ino
    stats = {n: create(export / "src", n) for n in ("a.c", "b.c", "c.c")}
    st_a = stats["a.c"]
    index.note_created(src, b"a.c", st_a)
    index.flush()
    x = index._extractor
    assert x.created_keys(b"b.c", stats["b.c"]) is not None  # the memos answer now
    from nfsd.index import scanner
    general: list[bytes] = []
    real_add = scanner.Reconciler._add

    def _add(self: scanner.Reconciler, dir_fd: int, dir_ino: int, name: bytes, *args: object, **kw: object) -> None:
        general.append(name)
        real_add(self, dir_fd, dir_ino, name, *args, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(scanner.Reconciler, "_add", _add)
    for n in ("b.c", "c.c"):
        index.note_created(src, n.encode(), stats[n])
    index.flush()
    assert general == []  # both from the memos
    first = keys_and_record(env, st_a.st_ino)
    for n in ("b.c", "c.c"):
        st = stats[n]
        stat_keys, content_keys, rec = keys_and_record(env, st.st_ino)
        assert (stat_keys, content_keys, rec[0]) == (first[0], first[1], first[2][0])
        # kind, flags (FLAG_UNREAD), gen, size, times, xver
        assert rec[1:] == (first[2][1], FLAG_UNREAD, 0, 0, st.st_mtime_ns, st.st_ctime_ns, first[2][7])
        with env.begin() as txn:
            from_memos = Tables(env, 1).keys_of(txn, st.st_ino)
        index.note_entry(src, n.encode())  # a full read gives the same keys
        index.flush()
        with env.begin() as txn:
            assert Tables(env, 1).keys_of(txn, st.st_ino) == from_memos
    assert q(index, (b"ext", b"c")) == [b"src/a.c", b"src/b.c", b"src/c.c", b"src/old.c"]
    assert q(index, (b"size", b"empty")) == [b"src/a.c", b"src/b.c", b"src/c.c"]


def test_a_created_file_on_a_removed_files_inode_takes_none_of_its_keys(index: Index, export: Path,
                                                                        env: lmdb.Environment) -> None:
    """A CREATE after removals gets a freed inode number, whose tombstone the index holds:
    the file is added as new (the tombstone forgotten), from the memos as any other."""
    src = os.stat(export / "src").st_ino
    index.note_created(src, b"memo.c", create(export / "src", "memo.c"))  # fills the memos
    (export / "src" / "gone.txt").write_text("words to be forgotten\n")
    index.note_entry(src, b"gone.txt")
    assert q(index, (b"name", b"gone.txt")) == [b"src/gone.txt"]
    gone = os.stat(export / "src" / "gone.txt").st_ino
    os.unlink(export / "src" / "gone.txt")
    index.note_entry(src, b"gone.txt")
    index.flush()
    for i in range(64):  # ext4 and tmpfs give the freed number back soon: look for it
        st = create(export / "src", f"new{i}.c")
        if st.st_ino == gone:
            break
        os.unlink(export / "src" / f"new{i}.c")
    else:
        pytest.skip("this file system did not reuse the inode number")
    with env.begin() as txn:
        tomb = Tables(env, 1).file(txn, gone)
    assert tomb is not None and tomb.tomb
    assert index._extractor.created_keys(f"new{i}.c".encode(), st) is not None
    index.note_created(src, f"new{i}.c".encode(), st)
    assert q(index, (b"name", f"new{i}.c".encode())) == [f"src/new{i}.c".encode()]
    assert q(index, (b"name", b"gone.txt")) == []
    assert q(index, (b"ext", b"txt")) == []
    assert q(index, (b"size", b"empty")) == [b"src/memo.c", f"src/new{i}.c".encode()]
    assert record_flags(env, gone) & FLAG_UNREAD
    stat_keys, content_keys, _ = keys_and_record(env, gone)
    assert stat_keys == keys_and_record(env, os.stat(export / "src" / "memo.c").st_ino)[0]


def test_created_files_without_an_extension_are_placed_as_such(index: Index, export: Path,
                                                               env: lmdb.Environment) -> None:
    """Their "no ext" key is placed beside its postings (``is_placed``), from the memos as
    from a full read (the fixture compares the places with the postings and records)."""
    src = os.stat(export / "src").st_ino
    names = [f"notes{i}" for i in range(3)]
    for n in names:
        index.note_created(src, n.encode(), create(export / "src", n))
        index.flush()  # the first fills the memos, the next ones come from them
    for n in names:
        assert q(index, (b"name", n.encode())) == [f"src/{n}".encode()]
    with env.begin() as txn:
        assert all(b"#none\0ext" in Tables(env, 1).keys_of(txn, os.stat(export / "src" / n).st_ino)[0]
                   for n in names)
