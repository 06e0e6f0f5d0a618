"""The ring carrying the primary watcher's entry changes to followers' entry caches
(nfsd/nfs3/entry_events.py)."""
from __future__ import annotations

from nfsd.nfs3.entry_events import CLEAR, DIRECTORY, ENTRY, EntryEvents, FollowerEntryCache, PublishedEntryCache
from nfsd.nfs3.dirlist import EntryCache, Listing


def ring(slots: int = 8) -> EntryEvents:
    events = EntryEvents.create(slots)
    events.attach()
    return events


def test_changes_are_read_in_order_and_a_reused_slot_is_refused() -> None:
    events = ring(8)
    published = PublishedEntryCache(EntryCache(), events)
    published.changed(3, 41, b"before.c")
    assert events.head() == 0             # no follower caches entries yet: nothing published
    for d_ino in [42, 43, 7] + list(range(100, 108)):
        events.want(3 if d_ino != 7 else 1, d_ino)
    published.changed(3, 42, b"a.c")
    published.changed(3, 43)
    published.clear(3)
    assert events.head() == 3
    assert events.read(0) == (ENTRY, 3, 42, b"a.c")
    assert events.read(1) == (DIRECTORY, 3, 43, None)
    assert events.read(2) == (CLEAR, 3, 0, None)
    for i in range(8):
        published.changed(3, 100 + i, b"n%d" % i)
    assert events.read(0) is None          # slot 0 now holds change 8
    assert events.read(8) == (ENTRY, 3, 105, b"n5")   # changes 3..10 are n0..n7
    long = b"x" * 300
    published.changed(1, 7, long)
    assert events.read(11) == (ENTRY, 1, 7, long[:255])


def test_a_follower_catches_up_before_each_use_and_forgets_all_when_far_behind() -> None:
    events = ring(4096)
    follower = FollowerEntryCache(events, 1 << 20, 60.0)
    published = PublishedEntryCache(EntryCache(), events)
    follower.complete(3, 42, None)
    assert follower._seen == 0
    events.want(3, 42)   # what the follower's first get() of that directory does
    published.changed(3, 42, b"a.c")
    follower.complete(3, 42, None)
    assert follower._seen == 1
    for i in range(3000):   # more than LAG behind: the cache is cleared, not replayed
        published.changed(3, 42, b"n%d" % i)
    follower.complete(3, 42, None)
    assert follower._seen == events.head() == 3001


def test_only_the_changes_of_a_directory_some_follower_cached_are_published() -> None:
    """A follower's cache forgets nothing of a directory it never cached: the primary
    publishes no slot for such a change (each cost it a slot and every follower a replay)."""
    events = ring(64)
    follower = FollowerEntryCache(events, 1 << 20, 60.0)
    published = PublishedEntryCache(EntryCache(), events)
    follower.get(3, 42, b"fh", None, Listing([], [], [], "k", 0), len)
    published.changed(3, 43, b"x.c")       # another directory
    published.changed(4, 42, b"x.c")       # the same inode number in another export
    assert events.head() == 0
    published.changed(3, 42, b"a.c")
    published.changed(3, 42)
    published.clear(4)                      # forgetting a whole export: always
    assert events.head() == 3
    assert [events.read(i) for i in range(3)] == [(ENTRY, 3, 42, b"a.c"), (DIRECTORY, 3, 42, None),
                                                  (CLEAR, 4, 0, None)]
