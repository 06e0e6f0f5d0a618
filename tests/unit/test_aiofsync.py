"""A burst's directory fsyncs go through Linux AIO (nfsd/fs/aiofsync.py), not a pool thread:
the replies still wait for them, and a directory the caller cannot read (opened as the
server by ``LocalFS.fsync_dir``'s ``open_fd``) is fsynced the same way."""
import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from nfsd.fs.dirsync import DirSync


class CountingPool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.jobs = 0

    def submit(self, *args, **kwargs):
        self.jobs += 1
        return super().submit(*args, **kwargs)


def _fsync_of(path: str, opened: list[str]):
    def fsync() -> None:
        raise AssertionError("fsynced in a thread, not through AIO")

    def open_fd() -> int:
        opened.append(path)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fsync.open_fd = open_fd  # type: ignore[attr-defined]
    return fsync


def test_a_burst_of_several_directories_is_fsynced_without_a_pool_thread(tmp_path):
    dirs = [str(tmp_path / name) for name in ("a", "b", "c")]
    for d in dirs:
        os.mkdir(d)
    pool = CountingPool()
    sync = DirSync()
    sync.defer_in_bursts(pool)
    opened: list[str] = []
    before = len(os.listdir("/proc/self/fd"))

    async def burst() -> None:
        sync.begin_burst()
        for d in dirs:
            sync.sync(d, _fsync_of(d, opened))
        done = sync.end_burst()
        assert done is not None and not done.done()  # the replies wait for the fsyncs
        await asyncio.wait_for(done, 10)
        assert done.result() is None

    try:
        asyncio.run(burst())
    finally:
        pool.shutdown()
    assert pool.jobs == 0
    assert sorted(opened) == dirs
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # the directories' closed (the eventfd and AIO ring stay)


def test_a_kernel_without_aio_fsync_falls_back_to_the_pool(tmp_path, monkeypatch):
    """Before Linux 4.18 an AIO fsync ends with EINVAL: the replies must not fail for it;
    the fsyncs are done in the pool instead, and from then on."""
    from nfsd.fs import aiofsync

    def einval(self, fds, done):
        for fd in fds:
            os.close(fd)
        asyncio.get_running_loop().call_soon(done, OSError(22, "Invalid argument"))
    monkeypatch.setattr(aiofsync.AioFsync, "submit", einval)
    pool = CountingPool()
    sync = DirSync()
    sync.defer_in_bursts(pool)
    fsynced: list[str] = []
    opened: list[str] = []

    def fsync_of(path: str):
        fsync = _fsync_of(path, opened)

        def real() -> None:
            fsynced.append(path)
        real.open_fd = fsync.open_fd  # type: ignore[attr-defined]
        return real

    async def burst(name: str) -> None:
        sync.begin_burst()
        sync.sync(name, fsync_of(str(tmp_path)))
        done = sync.end_burst()
        assert done is not None
        await asyncio.wait_for(done, 10)
        assert done.result() is None

    try:
        asyncio.run(burst("a"))
        asyncio.run(burst("b"))
    finally:
        pool.shutdown()
    assert fsynced == [str(tmp_path)] * 2 and pool.jobs == 2
    assert len(opened) == 1  # the second burst went straight to the pool
