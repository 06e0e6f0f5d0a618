"""On a ``sync`` export a new object's own inode is made durable, not only its directory's
entry (``LocalFS.fsync_new``): on ext4 without a journal the directory's fsync leaves the new
inode unwritten.  Regular files and directories are fsynced by a descriptor of the inode
itself; symbolic links and FIFOs, which cannot be opened for that, by a syncfs of their file
system.  On an ``async`` export nothing is synced."""
from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from nfsd.fs import localfs as localfs_module
from nfsd.fs.dirsync import durability
from nfsd.fs.localfs import LocalFS, Node
from nfsd.state.store import Store


class Synced:
    """os.fsync and syncfs, recorded: the (device, inode) each fsync's descriptor refers to,
    and the device each syncfs wrote back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsynced: list[tuple[int, int]] = []
        self.syncfs: list[int] = []
        real_fsync = os.fsync
        real_syncfs = getattr(localfs_module, "syncfs", None)

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            self.fsynced.append((st.st_dev, st.st_ino))
            real_fsync(fd)

        def syncfs(fd: int) -> None:
            self.syncfs.append(os.fstat(fd).st_dev)
            assert real_syncfs is not None
            real_syncfs(fd)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(localfs_module, "syncfs", syncfs, raising=False)


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[LocalFS]:
    (tmp_path / "exp" / "d").mkdir(parents=True)
    (tmp_path / "exp" / "d" / "old").write_bytes(b"x")
    store = Store(str(tmp_path / "state"))
    f = LocalFS(str(tmp_path / "exp"), 1, store)
    yield f
    f.close()
    store.close()


def _create(fs: LocalFS, d: Node) -> Node:
    return fs.create_file(d, b"new", 0o644, exclusive=True)


def _mkdir(fs: LocalFS, d: Node) -> Node:
    return fs.mkdir(d, b"new", 0o755)


def _link(fs: LocalFS, d: Node) -> Node:
    old = fs.lookup(d, b"old")  # looked up: held by an O_PATH descriptor only
    fs.link(old, d, b"new")
    return old


def _symlink(fs: LocalFS, d: Node) -> Node:
    return fs.symlink(d, b"new", b"old")


def _fifo(fs: LocalFS, d: Node) -> Node:
    return fs.mknod(d, b"new", stat.S_IFIFO | 0o644)


OPS: dict[str, Callable[[LocalFS, Node], Node]] = {
    "create": _create, "mkdir": _mkdir, "link": _link, "symlink": _symlink, "mknod": _fifo}
OPENABLE = {"create", "mkdir", "link"}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("relaxed", [False, True], ids=["sync", "async"])
def test_a_new_objects_inode_is_synced_with_its_directory(fs: LocalFS, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          op: str, relaxed: bool) -> None:
    d = fs.lookup(fs.root, b"d")
    synced = Synced(monkeypatch)
    monkeypatch.setattr(durability, "relaxed", relaxed)
    OPS[op](fs, d)
    new = os.lstat(tmp_path / "exp" / "d" / "new")
    parent = (new.st_dev, d.ino)
    mine = [s for s in synced.fsynced if s[0] == new.st_dev]  # not the handle table's
    if relaxed:
        assert mine == [] and synced.syncfs == []
    elif op in OPENABLE:
        child = (new.st_dev, new.st_ino)
        assert parent in mine and child in mine, mine
        assert mine.index(child) < mine.index(parent)  # (LocalFS.fsync_new: why)
        assert synced.syncfs == []
    else:  # a symbolic link or FIFO: its whole file system
        assert parent in mine and synced.syncfs == [new.st_dev]


@pytest.mark.parametrize("op", sorted(OPENABLE))
def test_the_new_inodes_fsync_says_how_to_open_it_for_aio(fs: LocalFS, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    """DirSync's AIO jobs open what they fsync through ``open_fd``: for the new inode an
    ordinary descriptor (fsync refuses ``O_PATH``) of that very inode."""
    d = fs.lookup(fs.root, b"d")
    asked: dict[Any, Any] = {}
    monkeypatch.setattr(fs._dirsync, "sync", lambda key, fsync: asked.__setitem__(key, fsync))
    OPS[op](fs, d)
    new = os.lstat(tmp_path / "exp" / "d" / "new")
    fd = asked[(fs.fsid, new.st_ino)].open_fd()
    try:
        assert os.fstat(fd).st_ino == new.st_ino
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH
        os.fsync(fd)
    finally:
        os.close(fd)
