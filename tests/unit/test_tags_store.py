"""Where tags live (nfsd/fs/tags.py), without a server: the user attribute, read by the index
with the stat tier; and the state store where a file system has no user attributes
(simulated here by making the attribute calls fail with EOPNOTSUPP)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import lmdb
import pytest

from nfsd.fs import tags
from nfsd.index import Index


@pytest.fixture
def env(tmp_path: Path):
    e = lmdb.open(str(tmp_path / "state"), max_dbs=64, map_size=1 << 30)
    yield e
    e.close()


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.txt").write_text("one\n")
    (root / "a" / "two.txt").write_text("two\n")
    return root


def tagged(index: Index, value: bytes) -> list[bytes]:
    index.flush()
    return [r.path for r in index.query(index.root_ino, [(b"tag", value)])]


def test_attribute_format_and_rules(export: Path) -> None:
    f = str(export / "a" / "one.txt")
    assert tags.change_values(f, b"tag", add=[b"x", b"y/z", b"x"]) == ([], [b"x", b"y/z"])
    assert os.getxattr(f, "user.pysfsd.tags") == b"x\ny/z"
    assert tags.change_values(f, b"tag", drop=[b"x"]) == ([b"x", b"y/z"], [b"y/z"])
    assert tags.change_values(f, b"tag", drop=[b"y/z"])[1] == []
    with pytest.raises(OSError):
        os.getxattr(f, "user.pysfsd.tags")  # the last tag gone: no empty attribute left
    for bad in (b"", b"a\nb", b"nul\0", b".", b"..", b"x" * 256):
        with pytest.raises(tags.TagError) as info:
            tags.change_values(f, b"tag", add=[bad])
        assert info.value.errno == errno.EINVAL
    assert tags.value_of_name(b"a%2Fb%25") == b"a/b%"
    with pytest.raises(tags.TagError):
        tags.value_of_name(b"bad%zz")
    with pytest.raises(tags.TagError):
        tags.change_values(str(export / "a"), b"tag", add=[b"x"])  # directories carry none
    assert tags.parse(b"a\n\nb\na\n" + b"c" * 300) == [b"a", b"b"]  # malformed lines ignored


def test_index_reads_the_attribute(env, export: Path) -> None:
    os.setxattr(export / "a" / "one.txt", "user.pysfsd.tags", b"vacation\nwork")
    index = Index(env, str(export), 1)
    index.scan(progress=False)
    assert tagged(index, b"vacation") == [b"a/one.txt"]
    assert index.values(b"tag", index.root_ino) == [b"vacation", b"work"]
    # set behind the index's back: the ctime moved, so the next look at the entry sees it
    os.setxattr(export / "a" / "two.txt", "user.pysfsd.tags", b"vacation")
    index.note_entry(index.ino_of(b"a") or 0, b"two.txt")
    assert tagged(index, b"vacation") == [b"a/one.txt", b"a/two.txt"]
    os.rename(export / "a" / "two.txt", export / "moved.txt")
    index.note_entry(index.ino_of(b"a") or 0, b"two.txt")
    index.note_entry(index.root_ino, b"moved.txt")
    assert tagged(index, b"vacation") == [b"a/one.txt", b"moved.txt"]
    index.close()


def test_state_store_where_there_are_no_user_attributes(env, export: Path, monkeypatch) -> None:
    def unsupported(*args, **kwargs):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    for name in ("getxattr", "setxattr", "removexattr"):
        monkeypatch.setattr(os, name, unsupported)
    index = Index(env, str(export), 1)
    index.scan(progress=False)
    one = export / "a" / "one.txt"
    store = index.user_values
    with pytest.raises(OSError) as info:  # what the CLI meets: no fallback there
        tags.change_values(str(one), b"tag", add=[b"t"])
    assert info.value.errno == errno.EOPNOTSUPP
    assert tags.change_values(str(one), b"tag", add=[b"t"], fallback=store) == ([], [b"t"])
    assert not one.with_name("one.txt.tags").exists()
    # the ctime did not move: the server asks for the stat tier to be derived again
    index.note_ino(one.stat().st_ino, force=True)
    assert tagged(index, b"t") == [b"a/one.txt"]
    # a move keeps the inode, so the tag follows it
    os.rename(one, export / "renamed.txt")
    index.note_entry(index.ino_of(b"a") or 0, b"one.txt")
    index.note_entry(index.root_ino, b"renamed.txt")
    assert tagged(index, b"t") == [b"renamed.txt"]
    # the values survive a new index (a restart)
    index.close()
    again = Index(env, str(export), 1)
    again.scan(progress=False)
    assert tagged(again, b"t") == [b"renamed.txt"]
    # a new file on a reused inode number with another generation does not inherit them
    ino = (export / "renamed.txt").stat().st_ino
    assert store.get(ino, 0, b"tag") == [b"t"]
    raw_gen = 7
    store.put(ino, raw_gen, b"tag", [b"t"])
    assert store.get(ino, raw_gen + 1, b"tag") == []
    assert tags.change_values(str(export / "renamed.txt"), b"tag", drop=[b"t"], fallback=store)[1] == []
    again.note_ino(ino, force=True)
    assert tagged(again, b"t") == []
    again.close()


def test_declared_tags_persist(env) -> None:
    store = tags.FallbackStore(env, 3)
    assert store.declare(b"tag", b"b") and store.declare(b"tag", b"a")
    assert not store.declare(b"tag", b"a")
    assert tags.FallbackStore(env, 3).declared(b"tag") == [b"a", b"b"]
    assert tags.FallbackStore(env, 4).declared(b"tag") == []
    assert store.declare(b"tag", b"a", present=False)
    assert not store.declare(b"tag", b"a", present=False)
    assert store.declared(b"tag") == [b"b"] and store.is_declared(b"tag", b"b")
    assert store.entries() == 1
