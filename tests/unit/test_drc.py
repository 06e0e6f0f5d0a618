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
