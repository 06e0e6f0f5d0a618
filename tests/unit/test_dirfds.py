"""The directory fsync's kept descriptors (nfsd/fs/dirfds.py): one fsync per directory, no
open and close each time, and never more than the limit held open."""
import os

from nfsd.fs import dirfds
from nfsd.fs.dirfds import DirFds
from nfsd.fs.localfs import LocalFS
from nfsd.state.store import Store


def _open_counter(path, opened):
    def open_fd():
        opened.append(path)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return open_fd


def test_a_directory_fsynced_again_is_not_opened_again(tmp_path):
    fds = DirFds(limit=4)
    opened: list[str] = []
    for _ in range(3):
        fds.fsync("a", _open_counter(str(tmp_path), opened))
    assert opened == [str(tmp_path)]
    fds.close()
    assert len(fds) == 0


def test_descriptors_are_bounded_least_recently_used_out(tmp_path):
    dirs = []
    for i in range(5):
        (tmp_path / str(i)).mkdir()
        dirs.append(str(tmp_path / str(i)))
    fds = DirFds(limit=2)
    opened: list[str] = []
    before = len(os.listdir("/proc/self/fd"))
    for d in dirs:
        fds.fsync(d, _open_counter(d, opened))
    assert len(fds) == 2
    assert len(os.listdir("/proc/self/fd")) == before + 2  # the others were closed
    fds.fsync(dirs[-1], _open_counter(dirs[-1], opened))  # kept: not opened again
    fds.fsync(dirs[0], _open_counter(dirs[0], opened))    # dropped: opened again
    assert opened == dirs + [dirs[0]]
    fds.close()
    assert len(os.listdir("/proc/self/fd")) == before


def _readable_dirs(under):
    """This process's descriptors of directories under ``under`` that are not O_PATH."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        if target.startswith(str(under) + "/") and os.path.isdir(target) and not flags & 0o10000000:
            found.append(target)
    return found


def test_localfs_fsync_dir_holds_at_most_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(dirfds, "LIMIT", 3)
    (tmp_path / "exp").mkdir()
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    try:
        nodes = [fs.mkdir(fs.root, b"d%d" % i, 0o755) for i in range(8)]
        for n in nodes:  # new files in each: every directory fsynced
            fs.create_file(n, b"f", 0o644, False)
        assert len(fs._dir_fds) == 3
        held = len(_readable_dirs(tmp_path / "exp"))
        fs._dir_fds.close()
        assert len(_readable_dirs(tmp_path / "exp")) == held - 3
    finally:
        fs.close()
        store.close()
