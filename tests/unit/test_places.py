"""``places``: where each file of a placed posting lies, beside the posting (nfsd/index/tables.py).

A value directory over ext, owner, group or exact sizes is placed from it (a few pages in key
order) instead of one ``files`` record per result; the answers must be the same as from the
records, hard links, scopes and filters included, and an index of the previous layout is
brought up to date in place, without a rescan.
"""
from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Iterable

import lmdb
import pytest

from nfsd.index import Index
from nfsd.index.search import Search
from nfsd.index.tables import SCHEMA, Tables
from nfsd.nfs3.dirlist import name_cookie
from nfsd.query.language import size_key
from nfsd.query.names import parse_query_path


def make_tree(root: Path) -> None:
    for d in range(4):
        (root / f"d{d}" / "sub").mkdir(parents=True)
        for i in range(30):
            ext = ("c", "h", "txt")[i % 3]
            where = root / f"d{d}" / ("sub" if i % 2 else "")
            f = where / f"f{d}_{i}.{ext}"
            f.write_bytes(b"x" * i)
        (root / f"d{d}" / "same.c").write_bytes(b"")  # one name in every directory: renamed in listings
        (root / f"d{d}" / "noext").write_bytes(b"")
    os.link(root / "d0" / "f0_0.c", root / "d1" / "sub" / "linked.h")  # a file with two names, two exts
    os.link(root / "d0" / "sub" / "f0_3.c", root / "d2" / "again.c")


@pytest.fixture
def index(env: lmdb.Environment, tmp_path: Path) -> Iterable[Index]:
    root = tmp_path / "export"
    root.mkdir()
    make_tree(root)
    idx = Index(env, str(root), 1)
    idx.scan(progress=False)
    yield idx
    idx.close()
    with env.begin() as txn:
        assert Tables(env, 1).places_differences(txn) == (0, 0)


QUERIES = ["ext:/c", "ext:/c|h", "ext:/!txt", "ext:/!c", "ext:/h", "size:/<10", "size:/5..25", "ext:/c/size:/>10",
           "ext:/!c/size:/1..20", "size:/!<5", "ext:/txt/name:/f1*", "owner:/%s" % pwd.getpwuid(os.geteuid()).pw_name]


def terms_of(query: str) -> list[tuple[bytes, bytes]]:
    return parse_query_path(query.encode())[1]


def by_records(index: Index, monkeypatch: pytest.MonkeyPatch, scope: int, terms: list) -> list:
    """The same query answered from the records, one by one (the route before places)."""
    with monkeypatch.context() as m:
        m.setattr(Search, "_linked_few", lambda self, txn, keys: None)
        return sorted(index.query_entries(scope, terms))


@pytest.mark.parametrize("query", QUERIES)
def test_places_answer_as_the_records_do(index: Index, monkeypatch: pytest.MonkeyPatch, query: str) -> None:
    terms = terms_of(query)
    for scope in (index.root_ino, index.ino_of(b"d1"), index.ino_of(b"d0")):
        assert scope is not None
        got = sorted(index.query_entries(scope, terms))
        assert got == by_records(index, monkeypatch, scope, terms)
        assert all(cookie == name_cookie(name) and path.endswith(name) for cookie, name, _, path in got)
        assert sorted((ino, path) for _, _, ino, path in got) == sorted((r.ino, r.path) for r in index.query(scope, terms))
    assert index.query_entries(index.root_ino, terms), terms  # every query of the list has results


def test_hard_links_listed_under_each_name_that_matches(index: Index) -> None:
    paths = sorted(p for _, _, _, p in index.query_entries(index.root_ino, terms_of("ext:/h")))
    assert b"d1/sub/linked.h" in paths and b"d0/f0_0.c" not in paths
    c = sorted(p for _, _, _, p in index.query_entries(index.root_ino, terms_of("ext:/c")))
    assert b"d0/f0_0.c" in c and b"d0/sub/f0_3.c" in c and b"d2/again.c" in c and b"d1/sub/linked.h" not in c


def test_places_follow_renames_moves_and_removals(index: Index) -> None:
    root = Path(index.root_path)
    os.rename(root / "d0" / "f0_6.c", root / "d3" / "sub" / "moved.c")
    os.rename(root / "d1", root / "d9")  # a directory: its files' paths change, not their places
    (root / "d2" / "sub" / "f2_9.c").unlink()
    (root / "d3" / "new.c").write_bytes(b"new")
    os.chmod(root / "d3" / "f3_0.c", 0o600)
    index.scan(progress=False)
    c = {p for _, _, _, p in index.query_entries(index.root_ino, terms_of("ext:/c"))}
    assert b"d3/sub/moved.c" in c and b"d0/f0_6.c" not in c and b"d2/sub/f2_9.c" not in c and b"d3/new.c" in c
    assert b"d9/f1_0.c" in c and not any(p.startswith(b"d1/") for p in c)
    sized = {p for _, _, _, p in index.query_entries(index.root_ino, terms_of("size:/3..3"))}
    assert b"d3/new.c" in sized


def test_an_index_of_the_previous_layout_is_migrated_in_place(env: lmdb.Environment, index: Index) -> None:
    t = Tables(env, 1)
    before = sorted(index.query_entries(index.root_ino, terms_of("ext:/c|h")))
    with env.begin(write=True) as txn:
        txn.drop(t.places, delete=False)  # what schema 3 had: no places
        txn.put(b"schema", b"3", db=t.meta)
        version = t.version(txn)
        assert t.places_differences(txn)[0] > 0
    again = Index(env, index.root_path, 1)
    try:
        with env.begin() as txn:
            assert txn.get(b"schema", db=t.meta) == SCHEMA
            assert t.places_differences(txn) == (0, 0)
            assert t.version(txn) == version  # no rescan, no new version: the answers are the same
            assert txn.stat(t.files)["entries"] > 100
        assert sorted(again.query_entries(again.root_ino, terms_of("ext:/c|h"))) == before
    finally:
        again.close()


def test_exact_size_keys_of_a_range_are_walked_in_order(index: Index) -> None:
    """Many keys (a size range) are read in one walk, stopping past the last one."""
    with index._tables.env.begin() as txn:
        keys = [size_key(n) for n in range(5, 26)]
        got = list(index._search._place_values(txn, keys))
        assert got and len(got) == len(index.query_entries(index.root_ino, terms_of("size:/5..25")))


def test_migration_in_small_steps_gives_the_same_places(env: lmdb.Environment, index: Index) -> None:
    """Each step commits whole keys (bounded dirty pages); together they make every place."""
    t = Tables(env, 1)
    with env.begin() as txn:
        entries = txn.stat(t.places)["entries"]
    steps: list[int] = []
    assert t.migrate_places(lambda: steps.append(1), step=7) == entries
    assert len(steps) > 5
    with env.begin() as txn:
        assert t.places_differences(txn) == (0, 0)


def test_an_inode_number_taken_by_an_unrelated_file_shows_only_that_file(
        index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CREATE after removals often gets the inode number of a removed file whose tombstone
    the index still holds (``Writer.reuse``): the new file is indexed as itself, with nothing
    of the old one left in postings, places, attrs or tombstones.  Seen here as the index
    sees it: a name vanished in one flush, its inode back under another name, with other
    content, in the next."""
    root = Path(index.root_path)
    old = root / "d0" / "f0_6.c"  # 6 bytes
    ino = index.ino_of(b"d0/f0_6.c")
    assert ino is not None
    fresh = root / "d3" / "fresh.h"
    os.rename(old, fresh)
    index.note_entry(index.ino_of(b"d0") or 0, b"f0_6.c")
    index.flush()  # the old name is gone: a tombstone
    t: Tables = index._tables
    with t.env.begin() as txn:
        assert txn.get(ino.to_bytes(8, "big"), db=t.tombs) is not None
    fresh.write_bytes(b"h" * 40)  # other content, size and times
    index.note_entry(index.ino_of(b"d3") or 0, b"fresh.h")
    index.flush()
    with t.env.begin() as txn:
        assert txn.get(ino.to_bytes(8, "big"), db=t.tombs) is None
        rec = t.file(txn, ino)
        assert rec is not None and not rec.tomb and rec.name == b"fresh.h" and rec.size == 40
        stat_keys, _ = t.keys_of(txn, ino)
        assert b"ext\0h" in stat_keys and b"ext\0c" not in stat_keys and b"name\0f0_6.c" not in stat_keys
    h = {p for _, _, _, p in index.query_entries(index.root_ino, terms_of("ext:/h"))}
    c = {p for _, _, _, p in index.query_entries(index.root_ino, terms_of("ext:/c"))}
    assert b"d3/fresh.h" in h and b"d0/f0_6.c" not in c and b"d3/fresh.h" not in c
    assert {p for _, _, _, p in index.query_entries(index.root_ino, terms_of("size:/40..40"))} == {b"d3/fresh.h"}
    for query in ("ext:/c", "ext:/h", "size:/5..25"):
        terms = terms_of(query)
        assert sorted(index.query_entries(index.root_ino, terms)) == by_records(index, monkeypatch, index.root_ino, terms)


def test_a_removal_drops_places_that_differ_from_the_record(index: Index, env: lmdb.Environment) -> None:
    # a removal deletes its places by their whole value (the record's parent and name);
    # a place that holds anything else is still found and deleted (by a walk)
    root = Path(index.root_path)
    victim = root / "d3" / "f3_0.c"
    ino = victim.stat().st_ino
    ino8 = ino.to_bytes(8, "big")
    t = Tables(env, 1)
    with env.begin(write=True) as txn:
        cur = txn.cursor(db=t.places)
        assert cur.set_range_dup(b"ext\0c", ino8) and cur.value()[:8] == ino8
        odd = ino8 + bytes(16) + b"elsewhere"  # another parent and name than the record's
        cur.delete()
        txn.put(b"ext\0c", odd, db=t.places, dupdata=True)
    victim.unlink()
    index.note_entry((root / "d3").stat().st_ino, b"f3_0.c")
    index.flush()
    with env.begin() as txn:
        cur = txn.cursor(db=t.places)
        for key in (b"ext\0c", b"owner\0" + pwd.getpwuid(os.getuid()).pw_name.encode()):
            found = cur.set_range_dup(key, ino8) and cur.value()[:8] == ino8
            assert not found, key
