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
def fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFS]:
    """An export whose file system is taken for one without a journal, whatever the host's."""
    monkeypatch.setattr(localfs_module, "dir_fsync_covers_new_inodes", lambda dev: False)
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


@pytest.mark.parametrize("op", list(OPS))
def test_where_a_journal_commits_the_new_inode_with_its_entry_only_the_directory_is_synced(
        fs: LocalFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    d = fs.lookup(fs.root, b"d")
    asked: list[int] = []

    def journaled(dev: int) -> bool:
        asked.append(dev)
        return True
    monkeypatch.setattr(localfs_module, "dir_fsync_covers_new_inodes", journaled)
    synced = Synced(monkeypatch)
    OPS[op](fs, d)
    new = os.lstat(tmp_path / "exp" / "d" / "new")
    assert asked == [new.st_dev]
    assert [s for s in synced.fsynced if s[0] == new.st_dev] == [(new.st_dev, d.ino)]
    assert synced.syncfs == []


def _proc_and_sys(tmp_path: Path, fstype: str, journals: list[str]) -> tuple[str, str]:
    """/proc and /sys look-alikes: device 7:2 (loop2) mounted with ``fstype``."""
    proc, sysfs = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        f"90 27 7:2 / /srv/export rw,relatime shared:5 - {fstype} /dev/loop2 rw\n")
    (proc / "fs" / "jbd2").mkdir(parents=True)
    for j in journals:
        (proc / "fs" / "jbd2" / j).mkdir()
    (sysfs / "dev" / "block").mkdir(parents=True)
    (sysfs / "dev" / "block" / "7:2").symlink_to("../../devices/virtual/block/loop2")
    return str(proc), str(sysfs)


@pytest.mark.parametrize("fstype, journals, expected", [
    ("ext4", ["loop2-8"], True),
    ("ext4", [], False),                    # ext4 without a journal (this project's root fs)
    ("ext4", ["loop22-8", "vda-8"], False),  # other devices' journals
    ("xfs", [], True),
    ("btrfs", [], False),
    ("ext2", [], False),
])
def test_which_file_systems_commit_new_inodes_with_the_directory(tmp_path: Path, fstype: str,
                                                                 journals: list[str], expected: bool) -> None:
    from nfsd.fs.journaled import covers
    proc, sysfs = _proc_and_sys(tmp_path, fstype, journals)
    assert covers(os.makedev(7, 2), proc, sysfs) is expected
    assert covers(os.makedev(7, 3), proc, sysfs) is False  # not mounted: not known


def test_an_unreadable_proc_means_sync_the_new_inode(tmp_path: Path) -> None:
    from nfsd.fs.journaled import covers
    assert covers(os.makedev(7, 2), str(tmp_path / "none"), str(tmp_path / "none")) is False
