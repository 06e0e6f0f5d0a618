"""The entry cache's memory (nfsd/nfs3/dirlist.py ``EntryCache``): expired directories go."""
from __future__ import annotations

import pytest

from nfsd.nfs3 import dirlist
from nfsd.nfs3.dirlist import EntryCache, build_listing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(dirlist.time, "monotonic", c)
    return c


def _list(cache: EntryCache, d_ino: int, names: int = 8) -> None:
    listing = build_listing(((b"f%d" % i, d_ino * 100 + i) for i in range(names)), ("k", d_ino))
    enc = cache.get(1, d_ino, b"fh%d" % d_ino, (1, b"d%d" % d_ino), listing, lambda name: 100 + len(name))
    for i in range(names):
        cache.fill(enc, i, b"x" * 100, enc.version)


def test_a_tree_listed_and_removed_again_and_again_leaves_one_max_age_of_directories(clock: Clock) -> None:
    """The soak's shape: each round lists 20 new directories (a copied tree: new inode
    numbers), then they are removed.  Before, every round's directories stayed until
    ``max_bytes`` (32 MiB of estimate) pushed them out: 200 rounds kept 4,000."""
    cache = EntryCache(max_bytes=32 << 20, max_age=1.0)
    for round_ in range(200):
        for d in range(20):
            _list(cache, 1000 + round_ * 20 + d)
        clock.now += 0.4
    stats = cache.stats()
    assert stats["dirs"] <= 3 * 20           # those listed within the last max_age
    assert len(cache._parent_of) == stats["dirs"]
    assert cache.nbytes == sum(e.nbytes for e in cache._dirs.values())


def test_a_young_directory_is_still_served_and_a_hit_keeps_its_place(clock: Clock) -> None:
    cache = EntryCache(max_bytes=32 << 20, max_age=1.0)
    listing = build_listing([(b"a", 5)], ("k", 1))
    first = cache.get(1, 1, b"fh", None, listing, len)
    clock.now += 0.5
    _list(cache, 2)
    assert cache.get(1, 1, b"fh", None, listing, len) is first   # young: a hit
    clock.now += 0.6
    _list(cache, 3)        # 1 expired, but was listed after 2, which is young: both stay
    assert list(cache._dirs) == [(1, 2), (1, 1), (1, 3)]
    clock.now += 0.5
    _list(cache, 4)        # 2 expired too: both go, 3 (young) stays
    assert list(cache._dirs) == [(1, 3), (1, 4)]


def test_a_dropped_directorys_items_are_not_kept_by_a_copy_begun_before(clock: Clock) -> None:
    """Dropping an expired directory bumps its version, as replacing it does: a ``get`` that
    read it just before it expired starts from nothing rather than keep items no change
    can reach any more."""
    cache = EntryCache(max_bytes=32 << 20, max_age=1.0)
    _list(cache, 1)
    enc = cache._dirs[(1, 1)]
    version = enc.version
    clock.now += 1.5
    _list(cache, 2)
    assert (1, 1) not in cache._dirs and enc.version == version + 1
