"""The duplicate-request cache (nfsd/rpc/drc.py): what tells calls apart, and its bound."""
from __future__ import annotations

from nfsd.rpc.drc import IN_PROGRESS, DuplicateRequestCache

ARGS = b"\x00\x00\x00\x10" + bytes(range(16)) + b"\x00\x00\x00\x01\x00\x00\x01\xa4"


def test_a_retransmission_is_in_progress_then_replayed() -> None:
    drc = DuplicateRequestCache()
    key = drc.key("10.0.0.1", 7, 100003, 3, 2, ARGS)
    assert drc.begin(key) is None  # new: now in progress
    assert drc.begin(drc.key("10.0.0.1", 7, 100003, 3, 2, memoryview(ARGS))) is IN_PROGRESS
    drc.finish(key, b"reply")
    assert drc.begin(drc.key("10.0.0.1", 7, 100003, 3, 2, memoryview(bytearray(ARGS)))) == b"reply"


def test_calls_differing_in_any_field_are_not_confused() -> None:
    drc = DuplicateRequestCache()
    base = ("10.0.0.1", 7, 100003, 3, 2, ARGS)
    drc.finish(drc.key(*base), None)
    assert drc.begin(drc.key(*base)) is None
    drc.finish(drc.key(*base), b"reply")
    variants = [("10.0.0.2", 7, 100003, 3, 2, ARGS), ("10.0.0.1", 8, 100003, 3, 2, ARGS),
                ("10.0.0.1", 7, 100005, 3, 2, ARGS), ("10.0.0.1", 7, 100003, 4, 2, ARGS),
                ("10.0.0.1", 7, 100003, 3, 7, ARGS), ("10.0.0.1", 7, 100003, 3, 2, ARGS[:-1] + b"\xa5"),
                ("10.0.0.1", 7, 100003, 3, 2, ARGS + bytes(4)), ("10.0.0.11", 7, 100003, 3, 2, ARGS),
                ("::1", 7, 100003, 3, 2, ARGS)]
    for v in variants:
        assert drc.begin(drc.key(*v)) is None, v  # a new call, not a replay of the first
    assert drc.begin(drc.key(*base)) == b"reply"


def test_a_failed_call_is_forgotten_and_the_cache_is_bounded() -> None:
    drc = DuplicateRequestCache(max_entries=3)
    key = drc.key("h", 1, 1, 1, 1, b"")
    drc.begin(key)
    drc.finish(key, None)  # no reply cached: a retransmission runs again
    assert drc.begin(key) is None
    for xid in range(2, 10):
        k = drc.key("h", xid, 1, 1, 1, b"")
        drc.begin(k)
        drc.finish(k, b"r%d" % xid)
    assert len(drc._entries) == 3
    assert drc.begin(drc.key("h", 9, 1, 1, 1, b"")) == b"r9"
    assert drc.begin(drc.key("h", 2, 1, 1, 1, b"")) is None  # the oldest went first


# Two REMOVE-sized argument bodies (a 16-byte handle, an 8-byte name) of equal length whose
# CRC-32s are equal too (found by a birthday search): a checksum cannot tell them apart.
SAME_CRC_A = bytes.fromhex("00000010000102030405060708090a0b0c0d0e0f000000088113b75359f7fea2")
SAME_CRC_B = bytes.fromhex("00000010000102030405060708090a0b0c0d0e0f0000000875e368e3256fffd3")


def test_short_arguments_with_equal_checksums_are_not_confused() -> None:
    import zlib
    assert SAME_CRC_A != SAME_CRC_B and len(SAME_CRC_A) == len(SAME_CRC_B)
    assert zlib.crc32(SAME_CRC_A) == zlib.crc32(SAME_CRC_B)
    drc = DuplicateRequestCache()
    first = drc.key("10.0.0.1", 7, 100003, 3, 12, SAME_CRC_A)
    assert drc.begin(first) is None
    drc.finish(first, b"reply to A")
    # the same xid reused for another call (some clients do, within a second): a new call
    assert drc.begin(drc.key("10.0.0.1", 7, 100003, 3, 12, memoryview(SAME_CRC_B))) is None
    assert drc.begin(drc.key("10.0.0.1", 7, 100003, 3, 12, SAME_CRC_A)) == b"reply to A"


def test_long_arguments_are_keyed_by_checksum_and_length() -> None:
    drc = DuplicateRequestCache()
    big = bytes(range(256)) * 4096  # a 1 MiB WRITE's arguments: not kept in the key
    key = drc.key("h", 1, 100003, 3, 7, memoryview(big))
    assert all(not isinstance(part, (bytes, memoryview)) for part in key)  # type: ignore[attr-defined]
    drc.begin(key)
    drc.finish(key, b"w")
    assert drc.begin(drc.key("h", 1, 100003, 3, 7, big)) == b"w"
    assert drc.begin(drc.key("h", 1, 100003, 3, 7, big + b"\0\0\0\0")) is None
