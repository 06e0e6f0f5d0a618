"""Listing pages of a changing directory: which come from the cached listing, and which are
read and sorted again (half a second for 100k entries) in a thread rather than inline.

scripts/load/bigdir.py showed both problems this guards against: with every page of a
100k-entry directory under constant creates read and sorted again inline, each stalled
every other client, and a listing by the Linux client took 400 s to 1300 s.
"""
from __future__ import annotations

import os
import time

import pytest

from nfsd.nfs3.dirlist import FIRST_NAME_COOKIE, ListingCache
from nfsd.fs.localfs import LocalFS
from nfsd.rpc.call import CallContext
from nfsd.nfs3.service import Nfs3Service
from nfsd.state.store import Store
from protocol import nfs3
from protocol.rpc import AUTH_SYS, Credentials

TRUST_S = 0.06  # a listing serves first pages only when read 50 ms after the last change
LATER = FIRST_NAME_COOKIE + 1  # any cookie past "." and ".."


def _names(listing) -> list[bytes]:
    return sorted(listing.names)


def test_first_pages_need_a_current_listing_later_pages_any() -> None:
    cache = ListingCache()
    old = time.time_ns() - 10**9
    cache.get(b"d", old, old, lambda: [(b"a", 1), (b"b", 2)])
    assert cache.is_fresh(b"d", old, old)
    assert not cache.is_fresh(b"d", old + 1, old)               # mtime moved
    assert not cache.is_fresh(b"d", old, old + 1)               # ctime moved
    assert cache.is_fresh(b"d", old + 1, old + 1, resume=True)  # a later page: still served
    assert not cache.is_fresh(b"other", old, old, resume=True)  # never listed
    new = [(b"a", 1), (b"b", 2), (b"c", 3)]
    assert _names(cache.get(b"d", old + 1, old, lambda: new, resume=True)) == [b"a", b"b"]
    assert _names(cache.get(b"d", old + 1, old, lambda: new)) == [b"a", b"b", b"c"]
    recent = time.time_ns()
    cache.get(b"r", recent, recent, lambda: [(b"a", 1)])
    assert not cache.is_fresh(b"r", recent, recent)             # changed too recently to trust


def test_invalidated_listing_serves_only_later_pages() -> None:
    cache = ListingCache()
    old = time.time_ns() - 10**9
    cache.get(b"d", old, old, lambda: [(b"a", 1)])
    cache.invalidate(b"d")
    assert not cache.is_fresh(b"d", old, old)
    assert cache.is_fresh(b"d", old, old, resume=True)
    assert _names(cache.get(b"d", old, old, lambda: [(b"a", 1), (b"n", 2)])) == [b"a", b"n"]


def test_an_older_read_never_replaces_a_newer_one() -> None:
    """Two threads read the directory; the one that began first finishes last: later pages
    must keep being served from the newer listing (every listing begun before it is in it)."""
    cache = ListingCache()
    old = time.time_ns() - 10**9

    def slow_read():
        cache.get(b"d", old + 1, old + 1, lambda: [(b"a", 1), (b"new", 2)])  # begins and ends meanwhile
        return [(b"a", 1)]
    assert _names(cache.get(b"d", old, old, slow_read)) == [b"a"]
    assert _names(cache.get(b"d", old + 2, old + 2, lambda: [], resume=True)) == [b"a", b"new"]


@pytest.fixture
def service(tmp_path):
    (tmp_path / "exp" / "d").mkdir(parents=True)
    for i in range(20):
        (tmp_path / "exp" / "d" / f"f{i}").touch()
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    yield Nfs3Service({1: fs}, store, b"verifier"), fs, tmp_path / "exp" / "d"
    fs.close()
    store.close()


def _list_page(nfs: Nfs3Service, fh: bytes, cookie: int = 0) -> list[bytes]:
    ctx = CallContext(Credentials(AUTH_SYS, 0, 0, (), b"t"), ("127.0.0.1", 1))
    status, res = nfs.READDIR(ctx, nfs3.READDIR3args.cls(nfs3.nfs_fh3.cls(fh), cookie, bytes(8), 4096))
    assert status == nfs3.NFS3_OK
    return [e.name for e in res.reply.entries]


def test_listing_ready_follows_the_directory(service) -> None:
    nfs, fs, path = service
    d = fs.lookup(fs.root, b"d")
    assert not nfs.listing_ready(d.fh, 0)           # never listed: read it in a thread
    assert not nfs.listing_ready(d.fh, LATER)
    time.sleep(TRUST_S)
    _list_page(nfs, d.fh)
    assert nfs.listing_ready(d.fh, 0)               # cached and current: inline
    (path / "new").touch()                          # changed behind the server's back
    assert not nfs.listing_ready(d.fh, 0)           # a new listing reads it again
    assert nfs.listing_ready(d.fh, LATER)           # a listing under way goes on with the cached one
    os.unlink(path / "new")
    assert not nfs.listing_ready(d.fh, 0)


def test_a_listing_under_way_keeps_its_entries_while_the_directory_changes(service) -> None:
    nfs, fs, path = service
    d = fs.lookup(fs.root, b"d")
    first = _list_page(nfs, d.fh)
    assert {f"f{i}".encode() for i in range(20)} <= set(first)
    for i in range(20, 40):
        (path / f"f{i}").touch()
    assert b"f30" not in _list_page(nfs, d.fh, LATER)  # created after the listing began
    time.sleep(TRUST_S)
    assert b"f30" in _list_page(nfs, d.fh)            # a new listing shows it


def test_listing_ready_leaves_bad_handles_inline(service) -> None:
    nfs, _, _ = service
    assert nfs.listing_ready(b"\x09" * 16, 0)       # not one of our handles: BADHANDLE at once
