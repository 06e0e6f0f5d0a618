"""The ring carrying the primary watcher's entry changes to followers' entry caches
(nfsd/nfs3/entry_events.py)."""
from __future__ import annotations

from nfsd.nfs3.entry_events import CLEAR, DIRECTORY, ENTRY, EntryEvents, FollowerEntryCache, PublishedEntryCache
from nfsd.nfs3.dirlist import EntryCache


def ring(slots: int = 8) -> EntryEvents:
    events = EntryEvents.create(slots)
    events.attach()
    return events


def test_changes_are_read_in_order_and_a_reused_slot_is_refused() -> None:
    events = ring(8)
    published = PublishedEntryCache(EntryCache(), events)
    published.changed(3, 41, b"before.c")
    assert events.head() == 0             # no follower caches entries yet: nothing published
    events.want()
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
    events.want()   # what the follower's first get() does
    published.changed(3, 42, b"a.c")
    follower.complete(3, 42, None)
    assert follower._seen == 1
    for i in range(3000):   # more than LAG behind: the cache is cleared, not replayed
        published.changed(3, 42, b"n%d" % i)
    follower.complete(3, 42, None)
    assert follower._seen == events.head() == 3001
