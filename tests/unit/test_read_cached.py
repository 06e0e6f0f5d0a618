"""READ on the event loop from the page cache alone (nfsd/fs/cachedread.py): a READ whose
data is cached is answered inline, whatever its size (before, every READ over 64 KiB took a
thread round trip); one that would wait for the disk, in whole or in part, is run again in
the thread pool (``WouldBlock``) and answers the same bytes."""
from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from nfsd.exports.guard import GuardedNfs3
from nfsd.nfs3.procedures import offloads
from nfsd.rpc.dispatch import Dispatcher
from nfsd.rpc.drc import DuplicateRequestCache
from protocol import nfs3
from protocol.nfs3 import nfsstat3
from protocol.rpc import decode_reply, encode_call

from tests.nfs3_helpers import cred
from tests.served_export import served_export

READ = nfs3.NFS3.procedures[6]
CLIENT = ("127.0.0.1", 801)
MiB = 1 << 20
SIZE = 2 * MiB + 100
DATA = os.urandom(SIZE)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Dispatcher, bytes, Path]]:
    """A served export holding ``big`` (DATA, written and synced: its pages are clean, so
    ``POSIX_FADV_DONTNEED`` drops them), wired as app.py wires the service's burst."""
    export = tmp_path / "export"
    export.mkdir()
    big = export / "big"
    with open(big, "wb") as f:
        f.write(DATA)
        os.fsync(f.fileno())
    with served_export(export, tmp_path / "state") as (_, fs, nfs, policy), ThreadPoolExecutor(2) as pool:
        d = Dispatcher(pool, drc=DuplicateRequestCache())
        nfs.burst = d.burst
        d.register(nfs3.NFS3, None, offloads(nfs), GuardedNfs3(nfs, policy, acting=False).handlers)
        yield d, fs.lookup(fs.root, b"big").fh, big


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cache(path: Path) -> None:
    path.read_bytes()


def _nowait_refusal(path: Path) -> OSError | None:
    """What a ``RWF_NOWAIT`` read of ``path``'s first page raises, None if it reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, (bytearray(4096),), 0, os.RWF_NOWAIT)
        return None
    except OSError as exc:
        return exc
    finally:
        os.close(fd)


@pytest.fixture
def evictable(tmp_path: Path) -> None:
    """Skip where dropped pages stay (tmpfs keeps a file's pages: they are the file)."""
    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        f.write(bytes(1 << 16))
        os.fsync(f.fileno())
    _evict(probe)
    refusal = _nowait_refusal(probe)
    if refusal is None:
        pytest.skip("this file system keeps pages POSIX_FADV_DONTNEED drops")
    if not isinstance(refusal, BlockingIOError):
        raise refusal


def _read(d: Dispatcher, fh: bytes, offset: int, count: int, xid: int) -> Any:
    """Dispatch a READ as the transport serves a burst inline: the reply, or an awaitable
    when the call went to the pool."""
    buf = encode_call(xid, nfs3.NFS3.number, 3, READ.number, cred(0, 0))
    READ.args.pack(buf, nfs3.READ3args.cls(nfs3.nfs_fh3.cls(fh), offset, count))
    d.begin_burst()
    try:
        return d.dispatch(bytes(buf), CLIENT, 0)
    finally:
        assert d.end_burst() is None


def _data(reply: Any, offset: int, count: int) -> None:
    assert isinstance(reply, (bytes, bytearray)), reply
    _, _, off = decode_reply(bytes(reply))
    status, ok = READ.res.unpack(memoryview(reply), off)[0]
    assert status == nfsstat3.NFS3_OK
    assert bytes(ok.data) == DATA[offset:offset + count]
    assert ok.count == len(ok.data) and ok.eof == (offset + count >= SIZE)


def test_a_1mib_read_of_cached_data_is_answered_inline(served: Any) -> None:
    d, fh, big = served
    _cache(big)

    async def go() -> None:
        first = _read(d, fh, 0, MiB, 1)
        second = _read(d, fh, MiB, MiB, 2)  # (the same scratch buffer: the first reply kept its bytes)
        _data(first, 0, MiB)
        _data(second, MiB, MiB)
        _data(_read(d, fh, 2 * MiB, MiB, 3), 2 * MiB, 100)  # short at the end of the file, at EOF
    asyncio.run(go())


def test_a_read_of_data_not_cached_runs_in_the_pool(served: Any, evictable: None) -> None:
    """Before, a small READ read the disk on the event loop, stalling every connection."""
    d, fh, big = served
    _evict(big)

    async def go() -> None:
        later = _read(d, fh, 4096, 4096, 1)
        assert not isinstance(later, (bytes, bytearray))  # an awaitable: the pool's pread
        _data(await asyncio.wait_for(asyncio.ensure_future(later), 10), 4096, 4096)
        _data(_read(d, fh, 4096, 4096, 2), 4096, 4096)  # cached by then: inline
    asyncio.run(go())


def test_a_read_cached_only_in_part_runs_in_the_pool_and_is_whole(served: Any, evictable: None) -> None:
    """``RWF_NOWAIT`` copies the cached head and stops: that short count is not an answer."""
    d, fh, big = served
    _evict(big)
    fd = os.open(big, os.O_RDONLY)
    try:  # its first 256 KiB cached, no more (no readahead on this descriptor)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        os.pread(fd, 256 << 10, 0)
    finally:
        os.close(fd)

    async def go() -> None:
        later = _read(d, fh, 0, MiB, 1)
        assert not isinstance(later, (bytes, bytearray))
        _data(await asyncio.wait_for(asyncio.ensure_future(later), 10), 0, MiB)
    asyncio.run(go())


@pytest.fixture
def no_nowait_dir() -> Iterator[Path]:
    """A directory on tmpfs (/dev/shm), whose files take no ``RWF_NOWAIT`` on this kernel."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as where:
        probe = Path(where) / "probe"
        probe.write_bytes(bytes(4096))
        refusal = _nowait_refusal(probe)
        if refusal is None:
            pytest.skip("tmpfs takes RWF_NOWAIT on this kernel")
        if refusal.errno != errno.EOPNOTSUPP:
            raise refusal
        yield Path(where)


def test_a_small_read_where_nowait_is_unsupported_stays_inline(no_nowait_dir: Path, tmp_path: Path) -> None:
    """On tmpfs every READ went to the pool (EOPNOTSUPP read as WouldBlock): a small one is
    read inline again, as before; a large one still goes to the pool, and both are whole."""
    export = no_nowait_dir / "export"
    export.mkdir()
    (export / "big").write_bytes(DATA)
    with served_export(export, tmp_path / "state") as (_, fs, nfs, policy), ThreadPoolExecutor(2) as pool:
        d = Dispatcher(pool, drc=DuplicateRequestCache())
        nfs.burst = d.burst
        d.register(nfs3.NFS3, None, offloads(nfs), GuardedNfs3(nfs, policy, acting=False).handlers)
        fh = fs.lookup(fs.root, b"big").fh

        async def go() -> None:
            _data(_read(d, fh, 4096, 4096, 1), 4096, 4096)  # inline: a reply, not an awaitable
            _data(_read(d, fh, 0, 64 << 10, 2), 0, 64 << 10)
            later = _read(d, fh, 0, MiB, 3)
            assert not isinstance(later, (bytes, bytearray))
            _data(await asyncio.wait_for(asyncio.ensure_future(later), 10), 0, MiB)
        asyncio.run(go())
