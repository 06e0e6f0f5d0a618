"""A burst's directory fsyncs go through Linux AIO (nfsd/fs/aiofsync.py), not a pool thread:
the replies still wait for them, and a directory the caller cannot read (opened as the
server by ``LocalFS.fsync_dir``'s ``open_fd``) is fsynced the same way."""
import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

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


# -- a lone call's fsync, started as soon as its change is made -----------------------------

class Recorder:
    """Wraps ``AioFsync.start`` and ``wait``: what had been changed when each fsync was
    submitted, and when the burst's end waited for them."""

    def __init__(self, monkeypatch, fail: OSError | None = None) -> None:
        from nfsd.fs import aiofsync
        self.log: list[tuple[str, object]] = []
        real_start, real_wait = aiofsync.AioFsync.start, aiofsync.AioFsync.wait
        recorder = self

        def start(aio, fd):
            tag = real_start(aio, fd)
            recorder.log.append(("start", tag))
            return tag

        def wait(aio, tag):
            ended = real_wait(aio, tag)
            recorder.log.append(("waited", tag))
            return fail if fail is not None else ended
        monkeypatch.setattr(aiofsync.AioFsync, "start", start)
        monkeypatch.setattr(aiofsync.AioFsync, "wait", wait)

    def note(self, what: str) -> None:
        self.log.append((what, None))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.log]


def _lone_sync(pool) -> DirSync:
    sync = DirSync()
    sync.defer_in_bursts(pool)
    sync.inline_when(lambda: True, lambda: True, lambda: True)
    return sync


def test_a_lone_calls_fsync_starts_at_its_change_and_the_burst_ends_after_it(tmp_path, monkeypatch):
    """Submitted when ``sync`` is told of the change (so it began after it), reaped by
    ``end_burst`` before the replies may leave; a second change to the same directory gets
    an fsync of its own, begun after it; no pool thread, no descriptor left open."""
    recorder = Recorder(monkeypatch)
    pool = CountingPool()
    sync = _lone_sync(pool)
    opened: list[str] = []
    before = len(os.listdir("/proc/self/fd"))

    async def burst() -> None:
        sync.begin_burst()
        recorder.note("change 1")
        sync.sync("d", _fsync_of(str(tmp_path), opened))
        recorder.note("rest of the call")
        recorder.note("change 2")
        sync.sync("d", _fsync_of(str(tmp_path), opened))
        assert sync.end_burst() is None  # done: the replies may leave
        recorder.note("replies")

    try:
        asyncio.run(burst())
    finally:
        pool.shutdown()
    assert recorder.kinds() == ["change 1", "start", "rest of the call", "change 2", "start",
                                "waited", "waited", "replies"]
    assert pool.jobs == 0 and len(opened) == 2
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # (the eventfd and AIO ring stay)


def test_a_pipelined_burst_still_shares_one_fsync_at_its_end(tmp_path, monkeypatch):
    """Not a lone call: nothing starts early, the burst's changes share one fsync job."""
    recorder = Recorder(monkeypatch)
    pool = CountingPool()
    sync = DirSync()
    sync.defer_in_bursts(pool)
    sync.inline_when(lambda: False, lambda: True, lambda: False)  # a burst of several calls, others waiting
    opened: list[str] = []

    async def burst() -> None:
        sync.begin_burst()
        for _ in range(2):
            sync.sync("d", _fsync_of(str(tmp_path), opened))
        done = sync.end_burst()
        if done is not None:
            await asyncio.wait_for(done, 10)

    try:
        asyncio.run(burst())
    finally:
        pool.shutdown()
    assert "start" not in recorder.kinds() and len(opened) == 1


def test_a_failed_early_fsync_fails_the_replies(tmp_path, monkeypatch):
    Recorder(monkeypatch, fail=OSError(5, "injected EIO"))
    pool = CountingPool()
    sync = _lone_sync(pool)

    async def burst() -> None:
        sync.begin_burst()
        sync.sync("d", _fsync_of(str(tmp_path), []))
        done = sync.end_burst()
        assert done is not None and done.done()
        assert isinstance(done.exception(), OSError) and done.exception().errno == 5

    try:
        asyncio.run(burst())
    finally:
        pool.shutdown()


def test_an_early_fsync_aio_cannot_do_is_done_on_the_loop_and_aio_given_up(tmp_path, monkeypatch):
    """EINVAL at the end of an AIO fsync (a kernel before 4.18): the replies must not fail
    for it: the directory is fsynced on the loop, and no AIO is tried again."""
    recorder = Recorder(monkeypatch, fail=OSError(22, "Invalid argument"))
    pool = CountingPool()
    sync = _lone_sync(pool)
    fsynced: list[str] = []

    def fsync_of(path: str):
        def fsync() -> None:
            fsynced.append(path)
        fsync.open_fd = _fsync_of(path, []).open_fd  # type: ignore[attr-defined]
        return fsync

    async def burst() -> None:
        sync.begin_burst()
        sync.sync("d", fsync_of(str(tmp_path)))
        assert sync.end_burst() is None

    try:
        asyncio.run(burst())
        asyncio.run(burst())
    finally:
        pool.shutdown()
    assert fsynced == [str(tmp_path)] * 2 and recorder.kinds().count("start") == 1 and pool.jobs == 0


@pytest.mark.parametrize("fails", [False, True], ids=["done", "failed"])
def test_a_lone_connections_create_is_answered_only_after_its_early_fsync(tmp_path, monkeypatch, fails):
    """Through a server: the fsync of a lone CREATE's directory is submitted once the file
    exists, the reply waits until it is reaped, and a failed one answers SYSTEM_ERR."""
    from nfsd.fs import aiofsync
    from protocol import nfs3
    from protocol.rpc import accept_stat, reply_stat
    from tests.rpc_client import RpcClient
    from tests.unit.test_dirsync import _create_record, _gated_server, _nothing_arrives, _quiet, _replies
    for port, gate, export in _gated_server(tmp_path, monkeypatch, "rw,no_root_squash,insecure", inline=True):
        monkeypatch.setattr(os, "fsync", gate.real)  # not gated: through AIO
        _quiet(monkeypatch, 0.05)
        existed: list[bool] = []
        waiting, opened = threading.Event(), threading.Event()
        real_start, real_wait = aiofsync.AioFsync.start, aiofsync.AioFsync.wait

        def start(aio, fd):
            existed.append((export / "lone").exists())
            return real_start(aio, fd)

        def wait(aio, tag):
            waiting.set()
            assert opened.wait(20)
            ended = real_wait(aio, tag)
            return OSError(5, "injected EIO") if fails else ended
        monkeypatch.setattr(aiofsync.AioFsync, "start", start)
        monkeypatch.setattr(aiofsync.AioFsync, "wait", wait)
        with RpcClient(port) as rpc:
            root = rpc.mount(str(export).encode())
            _quiet(monkeypatch, 0.05)
            rpc.sock.sendall(_framed(_create_record(0xC600, root, b"lone")))
            assert waiting.wait(10)
            assert existed == [True] and (export / "lone").exists()
            assert _nothing_arrives(rpc)
            opened.set()
            body, res = _replies(rpc, 1)[0xC600]
            assert body[0] == reply_stat.MSG_ACCEPTED
            if fails:
                assert body[1].reply_data[0] == accept_stat.SYSTEM_ERR
            else:
                assert nfs3.CREATE3res.unpack(res, 0)[0][0] == 0


def _framed(record: bytes) -> bytes:
    from protocol.record import frame
    return frame(record)
