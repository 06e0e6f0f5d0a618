"""READDIRPLUS from the encoded-entry cache (nfsd/nfs3/dirlist.py ``EntryCache``): a listing of an
unchanged directory is served from kept entry bytes, but never shows what changed, through
the server or behind it, and never what the caller may not see."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from protocol import nfs3
from tests.conftest import ServerProcess, serving
from tests.nfs3_helpers import (OK, ZERO_VERF, create_ok, cred, list_dir, lookup, mkdir_ok, sattr,
                                write)
from tests.rpc_client import RpcClient, fh
from tests.waiting import eventually

from nfsd.nfs3.dirlist import EntryCache
from nfsd.fs.localfs import LocalFS
from nfsd.rpc.call import CallContext
from nfsd.nfs3.service import Nfs3Service
from nfsd.state.store import Store
from protocol.rpc import AUTH_SYS, Credentials
from xdr import decode, encode

OTHER = cred(1001, 1001, (1001,))


def _sizes(rpc: RpcClient, d: bytes) -> dict[bytes, int]:
    return {e.name: e.name_attributes.size for e in list_dir(rpc, d) if e.name not in (b".", b"..")}


@pytest.fixture
def env(tmp_path: Path):
    with serving(tmp_path) as srv, RpcClient(srv.port) as rpc:
        root = rpc.mount(srv.export_b)
        d = mkdir_ok(rpc, root, b"d", 0o755)
        yield srv, rpc, d, srv.export / "d"


def test_the_servers_own_write_shows_at_once(env) -> None:
    """A WRITE through the server changes the size listed by the very next READDIRPLUS: the
    server's own changes do not wait for the watcher's event."""
    _, rpc, d, _ = env
    files = [create_ok(rpc, d, b"f%d" % i) for i in range(20)]
    assert set(_sizes(rpc, d).values()) == {0}
    assert _sizes(rpc, d)[b"f3"] == 0  # served from the cache now
    for size in (10, 5000, 70000):
        status, _ = write(rpc, files[3], 0, b"x" * size, stable=0)
        assert status == OK
        assert _sizes(rpc, d)[b"f3"] == size


def test_setattr_and_unchecked_create_show_at_once(env) -> None:
    _, rpc, d, _ = env
    f = create_ok(rpc, d, b"f")
    write(rpc, f, 0, b"y" * 100, stable=0)
    assert _sizes(rpc, d)[b"f"] == 100
    status, _ = rpc.nfs(2, nfs3.SETATTR3args.cls(fh(f), sattr(size=7), None))
    assert status == OK
    assert _sizes(rpc, d)[b"f"] == 7
    # CREATE UNCHECKED of an existing name with size 0 truncates it: same inode, new size
    status, _ = rpc.nfs(8, nfs3.CREATE3args.cls(nfs3.diropargs3.cls(fh(d), b"f"),
                                                (nfs3.createmode3.UNCHECKED, sattr(size=0))))
    assert status == OK
    assert _sizes(rpc, d)[b"f"] == 0


def test_changes_behind_the_servers_back_show(env) -> None:
    """Changed on the host: the watcher's event (or at worst the cache's maximum age, 1 s by
    default) makes the listing show it."""
    _, rpc, d, path = env
    for i in range(10):
        (path / f"h{i}").write_bytes(b"")
    assert set(_sizes(rpc, d).values()) == {0}
    (path / "h4").write_bytes(b"z" * 1234)
    os.truncate(path / "h7", 99)

    def shown() -> object:
        sizes = _sizes(rpc, d)
        return (sizes[b"h4"] == 1234 and sizes[b"h7"] == 99) or sizes
    eventually(shown, every=0.02)  # (a fixed 3 s was a bet on the load; "never" still fails)


def test_change_inotify_cannot_see_shows_within_the_maximum_age(tmp_path: Path) -> None:
    """A write through a hard link in an unwatched place raises no event in the listed
    directory: the entry's attributes are re-read once they are older than the maximum age."""
    (tmp_path / "export").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state", args=("--attr-cache-seconds", "0.3"))
    srv.start()
    try:
        with RpcClient(srv.port) as rpc:
            root = rpc.mount(srv.export_b)
            d = mkdir_ok(rpc, root, b"d", 0o755)
            create_ok(rpc, d, b"f")
            os.link(srv.export / "d" / "f", outside / "f")
            assert _sizes(rpc, d)[b"f"] == 0
            assert _sizes(rpc, d)[b"f"] == 0
            with open(outside / "f", "r+b") as f:  # the watch on d sees nothing of this
                f.write(b"q" * 4321)
            time.sleep(0.4)
            assert _sizes(rpc, d)[b"f"] == 4321
    finally:
        srv.stop()


def test_a_caller_who_may_not_search_gets_no_cached_entries(env) -> None:
    """Root lists a directory (its entries are cached); a caller with read but no search
    permission is refused as before (entry attributes need search permission), not served
    the cached entries."""
    _, rpc, d, path = env
    sub = mkdir_ok(rpc, d, b"private", 0o755)
    for i in range(5):
        create_ok(rpc, sub, b"p%d" % i)
    os.chmod(path / "private", 0o744)  # others: read, no search
    time.sleep(0.1)  # past the listing cache's trust delay: root's listing stays current
    assert len(list_dir(rpc, sub)) == 7
    listed = list_dir(rpc, sub)
    status, _ = rpc.nfs(17, nfs3.READDIRPLUS3args.cls(fh(sub), 0, ZERO_VERF, 8192, 8192), OTHER)
    assert status == nfs3.nfsstat3.NFS3ERR_ACCES
    # a page past "." and "..", which alone would not need the parent looked up
    status, res = rpc.nfs(17, nfs3.READDIRPLUS3args.cls(fh(sub), listed[2].cookie, ZERO_VERF, 8192, 8192), OTHER)
    assert status == nfs3.nfsstat3.NFS3ERR_ACCES, res
    os.chmod(path / "private", 0o755)
    status, res = rpc.nfs(17, nfs3.READDIRPLUS3args.cls(fh(sub), 0, ZERO_VERF, 8192, 8192), OTHER)
    assert status == OK and len(res.reply.entries) == 7


def test_paged_listing_from_the_cache_is_complete(env) -> None:
    """Small pages from the cached entries: every entry exactly once, and the same
    attributes and handles as LOOKUP gives."""
    _, rpc, d, _ = env
    for i in range(300):
        create_ok(rpc, d, b"n%03d" % i)
    first = list_dir(rpc, d, maxcount=4096)
    again = list_dir(rpc, d, maxcount=4096)
    names = [e.name for e in again if e.name not in (b".", b"..")]
    assert sorted(names) == [b"n%03d" % i for i in range(300)]
    assert [(e.name, e.cookie, e.name_handle) for e in first] == [(e.name, e.cookie, e.name_handle) for e in again]
    for e in again[2:50]:
        status, res = lookup(rpc, d, e.name)
        assert status == OK and res.object.data == e.name_handle.data
        assert res.obj_attributes.fileid == e.name_attributes.fileid


# -- in-process: the service alone, its cache enabled with no watcher, so that nothing but
# the server's own bookkeeping (or the maximum age) can make a change visible

@pytest.fixture
def service(tmp_path: Path):
    (tmp_path / "exp" / "d").mkdir(parents=True)
    for i in range(20):
        (tmp_path / "exp" / "d" / f"f{i}").touch()
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    cache = EntryCache(max_age=0.3)
    cache.enable(1)
    yield Nfs3Service({1: fs}, store, b"verifier", cache), fs, tmp_path / "exp" / "d"
    fs.close()
    store.close()


_CTX = CallContext(Credentials(AUTH_SYS, 0, 0, (), b"t"), ("127.0.0.1", 1))


def _listed(nfs: Nfs3Service, d: bytes) -> dict[bytes, Any]:
    status, res = nfs.READDIRPLUS(_CTX, nfs3.READDIRPLUS3args.cls(fh(d), 0, ZERO_VERF, 65536, 65536))
    assert status == OK and res.reply.eof
    # the reply as a client sees it: encoded, then decoded
    entries = decode(nfs3.READDIRPLUS3res, encode(nfs3.READDIRPLUS3res, (status, res)))[1].reply.entries
    return {e.name: e.name_attributes for e in entries if e.name not in (b".", b"..")}


def _fh_of(fs: LocalFS, d: Any, name: bytes) -> Any:
    return fh(fs.lookup(d, name).fh)


def test_in_process_own_changes_show_at_once(service) -> None:
    nfs, fs, _ = service
    d = fs.lookup(fs.root, b"d")
    assert _listed(nfs, d.fh)[b"f1"].size == 0
    assert nfs.entries.stats()["entries"] == 20
    f1 = _fh_of(fs, d, b"f1")
    status, _ = nfs.WRITE(_CTX, nfs3.WRITE3args.cls(f1, 0, 3, 0, memoryview(b"abc")))
    assert status == OK
    assert _listed(nfs, d.fh)[b"f1"].size == 3
    status, _ = nfs.SETATTR(_CTX, nfs3.SETATTR3args.cls(_fh_of(fs, d, b"f2"), sattr(mode=0o600), None))
    assert status == OK
    assert _listed(nfs, d.fh)[b"f2"].mode == 0o600
    status, _ = nfs.CREATE(_CTX, nfs3.CREATE3args.cls(nfs3.diropargs3.cls(fh(d.fh), b"f1"),
                                                       (nfs3.createmode3.UNCHECKED, sattr(size=0))))
    assert status == OK
    assert _listed(nfs, d.fh)[b"f1"].size == 0
    before = _listed(nfs, d.fh)[b"f4"].fileid
    status, _ = nfs.RENAME(_CTX, nfs3.RENAME3args.cls(nfs3.diropargs3.cls(fh(d.fh), b"f5"),
                                                       nfs3.diropargs3.cls(fh(d.fh), b"f4")))
    assert status == OK
    after = _listed(nfs, d.fh)
    assert b"f5" not in after and after[b"f4"].fileid != before


def test_in_process_unseen_changes_show_after_the_maximum_age(service) -> None:
    nfs, fs, path = service
    d = fs.lookup(fs.root, b"d")
    assert _listed(nfs, d.fh)[b"f7"].size == 0
    (path / "f7").write_bytes(b"w" * 77)  # no watcher here: nothing tells the cache
    assert _listed(nfs, d.fh)[b"f7"].size == 0  # served from the cache: stale, as allowed
    time.sleep(0.35)
    assert _listed(nfs, d.fh)[b"f7"].size == 77


def test_in_process_memory_is_bounded(tmp_path: Path) -> None:
    """The cache holds no more than its byte budget, whatever is listed."""
    for k in range(6):
        (tmp_path / "exp" / f"d{k}").mkdir(parents=True)
        for i in range(200):
            (tmp_path / "exp" / f"d{k}" / f"entry-{i:04d}").touch()
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    cache = EntryCache(max_bytes=100_000, max_age=60)
    cache.enable(1)
    nfs = Nfs3Service({1: fs}, store, b"verifier", cache)
    try:
        for _ in range(2):
            for k in range(6):
                assert len(_listed(nfs, fs.lookup(fs.root, b"d%d" % k).fh)) == 200
                assert cache.nbytes <= 100_000
        stats = cache.stats()
        assert 0 < stats["dirs"] < 6 and stats["bytes_per_entry"] > 0
    finally:
        fs.close()
        store.close()


def test_in_process_cached_first_pages_run_inline(service) -> None:
    """A first READDIRPLUS page runs on the event loop only when its listing and every
    entry are cached; otherwise (and for READDIR first pages) in the thread pool."""
    nfs, fs, path = service
    d = fs.lookup(fs.root, b"d")
    assert nfs.offload_listing(d.fh, 0, True)
    time.sleep(0.06)  # past the listing cache's trust delay
    _listed(nfs, d.fh)
    assert not nfs.offload_listing(d.fh, 0, True)
    assert nfs.offload_listing(d.fh, 0, False)
    (path / "new").touch()
    assert nfs.offload_listing(d.fh, 0, True)


def test_a_guarded_create_raises_one_event(env) -> None:
    """The server's own create costs the watcher one inotify event (IN_CREATE): the file is
    created read-only (no IN_CLOSE_WRITE) with the requested mode (no chmod, no IN_ATTRIB)
    when the umask keeps it."""
    import asyncio

    from asyncinotify import Inotify, Mask

    from nfsd.fs.watch import EVENTS  # what the server's watcher asks for

    _, rpc, d, path = env

    async def events_of_create() -> list[Any]:
        with Inotify() as inotify:
            inotify.add_watch(path, EVENTS)
            loop = asyncio.get_running_loop()
            status, _ = await loop.run_in_executor(None, lambda: rpc.nfs(8, nfs3.CREATE3args.cls(
                nfs3.diropargs3.cls(fh(d), b"new"), (nfs3.createmode3.GUARDED, sattr(mode=0o644)))))
            assert status == OK
            seen = []
            try:
                while True:
                    event = await asyncio.wait_for(inotify.get(), 0.5)
                    if event.name is not None and str(event.name) == "new":
                        seen.append(event.mask & ~Mask.ISDIR)
            except asyncio.TimeoutError:
                return seen

    assert asyncio.run(events_of_create()) == [Mask.CREATE]
    assert (path / "new").stat().st_mode & 0o7777 == 0o644


def test_in_process_empty_directories_are_bounded_too(tmp_path: Path) -> None:
    """Listing endless empty directories cannot grow the cache past its budget."""
    for k in range(300):
        (tmp_path / "exp" / f"e{k}").mkdir(parents=True)
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    cache = EntryCache(max_bytes=20_000, max_age=60)
    cache.enable(1)
    nfs = Nfs3Service({1: fs}, store, b"verifier", cache)
    try:
        for k in range(300):
            assert _listed(nfs, fs.lookup(fs.root, b"e%d" % k).fh) == {}
        assert cache.nbytes <= 20_000 and cache.stats()["dirs"] < 300
    finally:
        fs.close()
        store.close()


def test_in_process_a_subdirectory_entry_follows_changes_inside_it(service) -> None:
    """Creating in a subdirectory through the server changes the subdirectory's mtime and
    nlink: its entry in the parent's listing shows that at once, whether or not the
    subdirectory itself was ever listed."""
    nfs, fs, _ = service
    d = fs.lookup(fs.root, b"d")
    status, _ = nfs.MKDIR(_CTX, nfs3.MKDIR3args.cls(nfs3.diropargs3.cls(fh(d.fh), b"sub"), sattr(mode=0o755)))
    assert status == OK
    time.sleep(0.06)  # past the listing cache's trust delay
    before = _listed(nfs, d.fh)[b"sub"]
    assert _listed(nfs, d.fh)[b"sub"] == before  # cached
    sub = fs.lookup(d, b"sub")
    time.sleep(0.01)
    status, _ = nfs.MKDIR(_CTX, nfs3.MKDIR3args.cls(nfs3.diropargs3.cls(fh(sub.fh), b"inner"), sattr(mode=0o755)))
    assert status == OK
    after = _listed(nfs, d.fh)[b"sub"]
    assert after.nlink == before.nlink + 1 and after.mtime != before.mtime
