"""The duplicate-request cache the workers share (nfsd/rpc/shared_drc.py): a reply cached
by one worker answers a retransmission that reaches another, in any probe window
(wrapping at the partition's end too), and a key's bytes inside a cached reply are not
taken for a slot."""
from __future__ import annotations

import os
import struct

import pytest

from nfsd.rpc.drc import IN_PROGRESS
from nfsd.rpc.shared_drc import SharedDuplicateRequestCache

SLOTS = 64


def workers() -> tuple[SharedDuplicateRequestCache, SharedDuplicateRequestCache]:
    first = SharedDuplicateRequestCache.create(2, SLOTS)
    second = SharedDuplicateRequestCache(first.fd, 2, SLOTS)
    first.attach(0)
    second.attach(1)
    return first, second


def key(bucket: int, xid: int) -> bytes:
    return struct.pack("=qII", bucket, xid, 7)


@pytest.mark.parametrize("bucket", [5, SLOTS - 2, SLOTS - 1])   # the last two wrap
def test_a_reply_cached_by_one_worker_answers_the_other(bucket: int) -> None:
    a, b = workers()
    k = key(bucket, 1)
    assert a.begin(k) is None
    assert b.begin(k) is IN_PROGRESS      # the original is still being served
    a.finish(k, b"reply-1")
    assert b.begin(k) == b"reply-1"
    assert a.begin(k) == b"reply-1"
    for xid in range(2, 6):               # the window fills; the oldest is pushed out last
        other = key(bucket, xid)
        assert a.begin(other) is None
        a.finish(other, b"reply-%d" % xid)
    assert b.begin(key(bucket, 5)) == b"reply-5"


def test_key_bytes_inside_a_reply_are_not_a_slot() -> None:
    a, b = workers()
    hidden = key(9, 77)
    carrier = key(9, 1)
    assert a.begin(carrier) is None
    a.finish(carrier, b"xx" + hidden + b"yy")   # the other key's bytes, mid-slot
    assert b.begin(hidden) is None              # new: not found inside the reply
    assert b.begin(carrier) == b"xx" + hidden + b"yy"


def test_a_call_in_progress_is_not_pushed_out_by_later_ones_that_finished() -> None:
    """A slow call (a CREATE waiting for its directory's fsync) keeps its slot while quicker
    calls of its set come and go; its retransmission is answered from the cache."""
    a, b = workers()
    slow = key(11, 1)
    assert a.begin(slow) is None
    for xid in range(2, 12):
        quick = key(11, xid)
        assert a.begin(quick) is None
        a.finish(quick, b"quick-%d" % xid)
    assert b.begin(slow) is IN_PROGRESS
    a.finish(slow, b"slow")
    assert b.begin(slow) == b"slow"


def test_short_arguments_with_equal_checksums_are_not_confused() -> None:
    """As the per-process cache (test_drc.py): a reused xid whose short arguments differ
    but have the same CRC-32 and length is a new call, in whichever worker it arrives."""
    import zlib

    from tests.unit.test_drc import SAME_CRC_A, SAME_CRC_B
    assert zlib.crc32(SAME_CRC_A) == zlib.crc32(SAME_CRC_B) and len(SAME_CRC_A) == len(SAME_CRC_B)
    a, b = workers()
    first = a.key("10.0.0.1", 7, 100003, 3, 12, SAME_CRC_A)
    assert a.begin(first) is None
    a.finish(first, b"reply to A")
    other = b.key("10.0.0.1", 7, 100003, 3, 12, memoryview(SAME_CRC_B))
    assert b.begin(other) is None
    assert b.begin(b.key("10.0.0.1", 7, 100003, 3, 12, SAME_CRC_A)) == b"reply to A"


def test_a_bursts_replies_are_cached_together() -> None:
    """``finish_all`` (the dispatcher's end of a burst): each reply answers the other worker;
    a call finished with None (its reply is not to be kept) is forgotten, so it is new
    again; a reply too long for a slot is not kept either; a key this worker never began
    is ignored."""
    a, b = workers()
    keys = [key(21 + 2 * n, n) for n in range(4)]  # each in a set of its own
    for k in keys[:3]:
        assert a.begin(k) is None
    a.finish_all(keys, [b"one", None, b"x" * 1000, b"never begun"])
    assert b.begin(keys[0]) == b"one"
    assert b.begin(keys[1]) is None   # forgotten: new, now b's own
    assert b.begin(keys[2]) is None   # too long to keep
    assert b.begin(keys[3]) is None   # a never began it
    assert a.begin(keys[1]) is IN_PROGRESS


def test_a_restarted_worker_stamps_above_what_its_partition_holds() -> None:
    """A worker started again (same partition) goes on from the highest stamp its earlier
    incarnation left, so a reader never takes a rewritten slot for the one it read."""
    a, b = workers()
    for xid in range(1, 40):
        k = key(xid % SLOTS, xid)
        assert a.begin(k) is None
        a.finish(k, b"r")
    again = SharedDuplicateRequestCache(a.fd, 2, SLOTS)
    again.attach(0)
    assert again._stamp == a._stamp == 2 * 39
    other = SharedDuplicateRequestCache(a.fd, 2, SLOTS)
    other.attach(1)
    assert other._stamp == 0


def _resident_kib(fd: int) -> int:
    """KiB resident of this process's mappings of the memfd ``fd`` (by its inode)."""
    ino = str(os.fstat(fd).st_ino)
    kib, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            inside = fields[4] == ino and "pysfsd-drc" in line
        elif inside and line.startswith("Rss:"):
            kib += int(line.split()[1])
    return kib


def test_attaching_leaves_the_table_unwritten_pages_out_of_memory() -> None:
    """``attach`` reads its partition's stamps through the descriptor: the 2 MiB table of a
    worker that has cached nothing yet takes no memory (it did: every page read in)."""
    table = SharedDuplicateRequestCache.create(2)     # the server's size
    table.attach(0)
    assert _resident_kib(table.fd) == 0
    k = key(3, 1)
    assert table.begin(k) is None
    table.finish(k, b"reply")
    assert 0 < _resident_kib(table.fd) <= 8
    again = SharedDuplicateRequestCache(table.fd, 2, table.slots)
    again.attach(0)
    assert again._stamp == table._stamp
