"""The index's per-new-file shortcuts (nfsd/index/extract.py) give what the transducers give:
the stat tier remembered per (extension, owner, group, size, day, kind) and the content tier
of a new empty file remembered per extension."""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

import lmdb
import pytest

from nfsd.index import Index
from nfsd.index import index as index_module
from nfsd.index.extract import Extractor
from nfsd.index.transducers.builtin import default_transducers


@contextlib.contextmanager
def indexed_export(tmp_path: Path) -> Iterator[tuple[Index, lmdb.Environment, Path, int]]:
    """An empty export, its index scanned: (index, environment, export, root inode)."""
    export = tmp_path / "export"
    export.mkdir()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=128, map_size=1 << 30, sync=False)
    idx = Index(env, str(export), 1)
    try:
        idx.scan(False)
        yield idx, env, export, os.stat(export).st_ino
    finally:
        idx.close()
        env.close()


def _files(tmp_path: Path) -> list[tuple[bytes, os.stat_result]]:
    out = []
    for name, size, mode in ((b"a.txt", 0, 0o644), (b"b.txt", 0, 0o644), (b"c.TXT", 0, 0o600),
                             (b"noext", 0, 0o644), (b"d.txt", 5, 0o644), (b".hidden", 0, 0o644),
                             (b"e.c", 0, 0o644), (b"f.c", 3, 0o644)):
        p = tmp_path / os.fsdecode(name)
        p.write_bytes(b"x" * size)
        p.chmod(mode)
        out.append((name, os.stat(p)))
    os.utime(tmp_path / "b.txt", ns=(0, 86_400 * 10**9 * 400))  # another day: other mtime keys
    out[1] = (b"b.txt", os.stat(tmp_path / "b.txt"))
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    out.append((b"pipe.txt", os.stat(fifo)))  # a FIFO gets no ext
    return out


def test_remembered_stat_tier_is_the_transducers_own(tmp_path: Path) -> None:
    files = _files(tmp_path)
    fast, slow = Extractor(default_transducers()), Extractor(default_transducers())
    for _ in range(2):  # the second round answers from the remembered rules
        for name, st in files:
            got = fast.stat_keys(name, st)
            want = slow._stat_keys(name, st)
            assert got.keys == want.keys, name
            assert got.failures == want.failures == []
            assert b"name\0" + name in got.keys
    # another owner with otherwise the same rule gets its own owner key
    name, st = files[0]
    twin = tmp_path / "twin.txt"
    twin.write_bytes(b"")
    os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    os.chown(twin, st.st_uid + 4242, st.st_gid)
    other = os.stat(twin)
    assert fast.stat_keys(name, other).keys == slow._stat_keys(name, other).keys
    assert fast.stat_keys(name, other).keys != fast.stat_keys(name, st).keys


def test_remembered_empty_content_is_the_transducers_own(tmp_path: Path) -> None:
    files = [(n, st) for n, st in _files(tmp_path) if st.st_size == 0 and stat.S_ISREG(st.st_mode)]
    fast = Extractor(default_transducers())
    for _ in range(2):
        for name, st in files:
            slow = Extractor(default_transducers())
            todo = [t for t in slow.content_tier if slow._applies(t, name, st)]
            want = slow.empty_content(name, st, todo)
            got = fast.empty_new(name, st)
            assert got is not None and want is not None
            assert got[0].keys == want.keys and got[0].failures == want.failures
            assert got[1] == slow.xver_for(name, st)


def test_an_inode_back_from_the_dead_empty_gets_the_tiers_of_a_new_empty_file(tmp_path: Path) -> None:
    """A file that left the export (tombstoned), emptied and back under another name takes the
    new-empty-file shortcut: its old content keys go, and it is indexed as a fresh empty file
    of that name would be."""
    outside = tmp_path / "outside"
    outside.mkdir()
    with indexed_export(tmp_path) as (idx, env, export, root):
        (export / "lib.c").write_bytes(b"int answer(void) { return 42; }\n")
        idx.note_entry(root, b"lib.c")
        idx.flush()
        ino = os.stat(export / "lib.c").st_ino
        os.rename(export / "lib.c", outside / "lib.c")
        idx.note_entry(root, b"lib.c")
        idx.flush()
        with env.begin() as txn:
            rec = idx._tables.file(txn, ino)
            assert rec is not None and rec.tomb
        os.truncate(outside / "lib.c", 0)
        os.rename(outside / "lib.c", export / "back.txt")
        (export / "fresh.txt").write_bytes(b"")
        for name in ("back.txt", "fresh.txt"):  # one mtime day for both, whatever the clock
            os.utime(export / name, ns=(10**18, 10**18))
        idx.note_entry(root, b"back.txt")
        idx.note_entry(root, b"fresh.txt")
        idx.flush()
        fresh = os.stat(export / "fresh.txt").st_ino
        with env.begin() as txn:
            rec = idx._tables.file(txn, ino)
            assert rec is not None and not rec.tomb and rec.name == b"back.txt"
            back_keys = idx._tables.keys_of(txn, ino)
            fresh_keys = idx._tables.keys_of(txn, fresh)
            fresh_rec = idx._tables.file(txn, fresh)
        assert fresh_rec is not None and rec.xver == fresh_rec.xver != 0
        assert back_keys[1] == fresh_keys[1]  # the content tier of an empty .txt
        assert {k for k in back_keys[0] if not k.startswith(b"name\0")} == \
               {k for k in fresh_keys[0] if not k.startswith(b"name\0")}
        assert b"name\0back.txt" in back_keys[0]
        assert not any(b"answer" in k for k in back_keys[0] | back_keys[1])
        assert [f.path for f in idx.query(root, [(b"ext", b"txt")])] == [b"back.txt", b"fresh.txt"]
        assert idx.query(root, [(b"ext", b"c")]) == []


def test_remembered_content_rules_are_the_transducers_own(tmp_path: Path) -> None:
    """``xver_for`` (and which transducers apply) remembered per (extension, kind, size)."""
    files = _files(tmp_path)
    x = Extractor(default_transducers())
    for _ in range(2):
        for name, st in files:
            todo = [t for t in x.content_tier if x._applies(t, name, st)]
            assert x._applying(name, st)[0] == todo, name
            assert x.xver_for(name, st) == x._xver_of(name, todo), name


def test_maintain_leaves_a_burst_of_changes_for_one_batch_but_not_for_long(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic ``maintain`` applies a trickle of notes at once, but leaves a burst (at
    least BUSY_NOTES since its last call) queued while it lasts, up to DEFER_SECONDS or
    DEFER_NOTES; a flush (what a query directory does) applies it whatever the burst."""
    monkeypatch.setattr(index_module, "BUSY_NOTES", 10)
    monkeypatch.setattr(index_module, "DEFER_NOTES", 45)
    clock = [1000.0]
    monkeypatch.setattr(index_module.time, "monotonic", lambda: clock[0])
    with indexed_export(tmp_path) as (idx, _env, export, root):
        made = 0

        def make(n: int) -> None:
            nonlocal made
            for _ in range(n):
                name = f"f{made}.txt"
                (export / name).write_bytes(b"")
                idx.note_entry(root, name.encode())
                made += 1

        def indexed() -> int:
            return len(idx.query(root, [(b"ext", b"txt")]))

        make(3)  # a trickle: applied at once
        idx.maintain()
        assert indexed() == 3
        make(12)  # a burst: left for later
        idx.maintain()
        assert indexed() == 3
        clock[0] += 0.5
        make(12)  # still going on
        idx.maintain()
        assert indexed() == 3
        clock[0] += 0.5
        idx.maintain()  # it stopped: one batch
        assert indexed() == 27
        make(20)  # a new burst...
        idx.maintain()
        assert indexed() == 27
        make(30)  # ...past DEFER_NOTES waiting: applied although it goes on
        idx.maintain()
        assert indexed() == 77
        make(20)
        idx.maintain()
        assert indexed() == 77
        clock[0] += index_module.DEFER_SECONDS + 0.1
        make(20)  # past DEFER_SECONDS since the first waiting note
        idx.maintain()
        assert indexed() == 117
        make(20)
        idx.maintain()
        assert indexed() == 117
        idx.flush()  # a query directory's flush does not wait
        assert indexed() == 137
