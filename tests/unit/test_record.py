"""Record marking (RFC 5531 section 11): reassembly, bounds and framing.

The reader faces untrusted peers, so besides reassembly the tests pin down that a forged or
endless record is refused as soon as its size is known, not after buffering it.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.record import HEAD, LAST_FRAGMENT, SCRATCH, RecordReader, RecordTooLarge, frame, set_mark

MAX = 1 << 20


def mark(length: int, last: bool = True) -> bytes:
    return struct.pack(">I", (LAST_FRAGMENT if last else 0) | length)


def test_single_fragment_record() -> None:
    r = RecordReader(MAX)
    assert r.feed(mark(5) + b"hello") == [b"hello"]
    assert r.buffered == 0


def test_multi_fragment_record() -> None:
    r = RecordReader(MAX)
    assert r.feed(mark(3, last=False) + b"abc") == []
    assert r.buffered == 3
    assert r.feed(mark(2, last=False) + b"de" + mark(1) + b"f") == [b"abcdef"]
    assert r.buffered == 0


def test_bytes_fed_one_at_a_time() -> None:
    stream = mark(4, last=False) + b"head" + mark(4) + b"tail" + mark(0) + mark(2) + b"xy"
    r = RecordReader(MAX)
    out: list[bytes | bytearray] = []
    for i in range(len(stream)):
        out += r.feed(stream[i:i + 1])
    assert out == [b"headtail", b"", b"xy"]
    assert r.buffered == 0


def test_several_records_in_one_feed_and_a_partial_tail() -> None:
    r = RecordReader(MAX)
    records = r.feed(mark(1) + b"a" + mark(2) + b"bb" + mark(3, last=False) + b"ccc" + mark(3) + b"dd")
    assert records == [b"a", b"bb"]
    assert r.feed(b"d") == [b"cccddd"]


def test_record_mark_claiming_2gib_is_refused_before_its_data() -> None:
    r = RecordReader(MAX)
    with pytest.raises(RecordTooLarge):
        r.feed(mark(0x7FFFFFFF))
    with pytest.raises(RecordTooLarge):
        RecordReader(MAX).feed(mark(0x7FFFFFFF, last=False))


def test_fragment_pushing_record_past_bound_is_refused_before_its_data() -> None:
    # A non-final fragment counts its data and its 4-byte mark: 64 of the 100 here.
    r = RecordReader(100)
    assert r.feed(mark(60, last=False) + bytes(60)) == []
    with pytest.raises(RecordTooLarge):
        r.feed(mark(37))
    assert RecordReader(100).feed(mark(60, last=False) + bytes(60) + mark(36) + bytes(36)) == [bytes(96)]
    assert RecordReader(100).feed(mark(100) + bytes(100)) == [bytes(100)]  # one fragment: all data


def test_endless_non_final_fragments_exceed_the_bound() -> None:
    r = RecordReader(4096)
    chunk = mark(16, last=False) + bytes(16)
    with pytest.raises(RecordTooLarge):
        for _ in range(4096):
            r.feed(chunk)
    # What it holds: the bound's worth of fragments, plus the chunk that tripped it.
    assert r.buffered <= 4096 + len(chunk)


def test_zero_length_fragments() -> None:
    r = RecordReader(20)
    # Empty fragments carry nothing and are not stored ...
    assert r.feed(mark(0, last=False) * 2 + mark(2, last=False) + b"ab" + mark(0, last=False)) == []
    assert r.buffered == 2
    assert r.feed(mark(0)) == [b"ab"]
    assert r.feed(mark(0)) == [b""]
    # ... but each costs its mark, so an endless stream of them ends at the bound.
    with pytest.raises(RecordTooLarge):
        RecordReader(16).feed(mark(0, last=False) * 5)


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(max_size=200), max_fragment=st.integers(1, 17), chunk=st.integers(1, 23))
def test_frame_round_trips_through_reader(payload: bytes, max_fragment: int, chunk: int) -> None:
    framed = frame(payload, max_fragment)
    fragments = max(1, -(-len(payload) // max_fragment))
    assert len(framed) == len(payload) + 4 * fragments
    r = RecordReader(len(framed) - 4)  # the bound counts non-final marks: exactly enough
    out: list[bytes | bytearray] = []
    for i in range(0, len(framed), chunk):
        out += r.feed(framed[i:i + chunk])
    assert out == [payload]


def test_frame_marks_only_the_last_fragment() -> None:
    assert frame(b"abcde", 2) == mark(2, False) + b"ab" + mark(2, False) + b"cd" + mark(1) + b"e"
    assert frame(b"abcd", 2) == mark(2, False) + b"ab" + mark(2) + b"cd"
    assert frame(b"") == mark(0)
    assert frame(bytearray(b"xyz")) == mark(3) + b"xyz"


def test_set_mark_fills_reserved_prefix() -> None:
    buf = bytearray(4) + b"payload"
    assert set_mark(buf) is buf
    assert bytes(buf) == frame(b"payload")
    assert RecordReader(MAX).feed(bytes(set_mark(bytearray(4)))) == [b""]


def _receive(r: RecordReader, stream: bytes, chunk: int) -> list[bytes]:
    """Deliver ``stream`` as asyncio.BufferedProtocol does: into get_buffer(), at most
    ``chunk`` bytes at a time."""
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        buf = r.get_buffer()
        n = min(len(buf), chunk, len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        pos += n
        out += [bytes(rec) for rec in r.received(n)]
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200_000), st.booleans()), max_size=6),
       st.integers(1, 300_000))
def test_received_into_its_buffers_as_fed(fragments: list[tuple[int, bool]], chunk: int) -> None:
    """Receiving into the reader's buffers (large records into their own) yields the same
    records as feeding the bytes, however the stream is cut."""
    stream = b"".join(mark(n, last) + bytes([n % 251]) * n for n, last in fragments)
    fed = RecordReader(MAX).feed(stream)
    assert _receive(RecordReader(MAX), stream, chunk) == [bytes(r) for r in fed]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=40), st.integers(1, 2000))
def test_bursts_of_small_records_are_received_as_fed(fragments: list[tuple[int, bool]], chunk: int) -> None:
    """The receive path cuts whole single-fragment records straight out of the shared buffer
    (pipelined calls); fragments, partial tails and what follows them still come out as
    ``feed`` gives them."""
    stream = b"".join(mark(n, last) + bytes([n % 251]) * n for n, last in fragments)
    fed = RecordReader(MAX).feed(stream)
    got = _receive(RecordReader(MAX), stream, chunk)
    assert got == [bytes(r) for r in fed]
    assert all(type(r) is bytes for r in RecordReader(MAX).feed(stream))


def test_a_record_past_the_bound_after_whole_ones_in_one_receive_is_refused() -> None:
    r = RecordReader(100)
    stream = mark(3) + b"abc" + mark(100) + bytes(100) + mark(101) + bytes(101)
    buf = r.get_buffer()
    buf[:len(stream)] = stream
    with pytest.raises(RecordTooLarge):
        r.received(len(stream))


def test_a_large_record_is_received_into_its_own_buffer() -> None:
    r = RecordReader(MAX)
    payload = bytes(range(256)) * 1024  # 256 KiB
    buf = r.get_buffer()
    head = mark(len(payload)) + payload[:1000]
    buf[:len(head)] = head
    assert r.received(len(head)) == []
    direct = r.get_buffer()
    assert len(direct) == len(payload) - 1000  # the rest goes straight to the record's buffer
    direct[:] = payload[1000:]
    records = r.received(len(payload) - 1000)
    assert records == [payload] and isinstance(records[0], bytearray)
    assert r.buffered == 0


def test_after_a_large_record_only_the_next_head_is_received_into_scratch() -> None:
    """A stream of large records (1 MiB WRITEs): after one, the next receive is small, so
    the next record's data goes into its own buffer instead of being copied there from the
    shared buffer; small calls bring the shared buffer back whole."""
    r = RecordReader(MAX)
    assert len(r.get_buffer()) == SCRATCH
    payload = bytes(range(256)) * 1024
    stream = (mark(len(payload)) + payload) * 2
    assert _receive(r, stream, 1 << 30) == [payload, payload]
    head = r.get_buffer()
    assert len(head) == HEAD
    small = mark(3) + b"abc"
    head[:len(small)] = small
    assert r.received(len(small)) == [b"abc"]
    assert len(r.get_buffer()) == SCRATCH


def test_a_large_mark_past_the_bound_is_refused_before_any_buffer() -> None:
    r = RecordReader(MAX)
    buf = r.get_buffer()
    buf[:4] = mark(MAX + 1)
    with pytest.raises(RecordTooLarge):
        r.received(4)


def test_bytes_kept_from_a_reused_receive_buffer_are_copies() -> None:
    """``feed`` parses a chunk where it was received (the shared scratch buffer, reused by
    the next receive): a partial record it keeps must not change when that buffer does."""
    stream = mark(3) + b"abc" + mark(6) + b"defghi" + mark(2) + b"jk"
    scratch = bytearray(7)
    view = memoryview(scratch)
    r = RecordReader(MAX)
    out = []
    for i in range(0, len(stream), 7):
        chunk = stream[i:i + 7]
        scratch[:len(chunk)] = chunk
        out += r.feed(view[:len(chunk)])
        scratch[:] = b"\xff" * 7  # the next receive overwrites it
    assert out == [b"abc", b"defghi", b"jk"]


def _large_records(r: RecordReader, payloads: list[bytes]) -> list[bytes | bytearray]:
    """Receive ``payloads`` as asyncio.BufferedProtocol delivers them (large ones into their
    own buffers), one record at a time."""
    out: list[bytes | bytearray] = []
    for payload in payloads:
        got = _receive_one(r, mark(len(payload)) + payload)
        assert len(got) == 1
        out += got
    return out


def _receive_one(r: RecordReader, stream: bytes) -> list[bytes | bytearray]:
    out: list[bytes | bytearray] = []
    pos = 0
    while pos < len(stream):
        buf = r.get_buffer()
        n = min(len(buf), len(stream) - pos, 100_000)
        buf[:n] = stream[pos:pos + n]
        pos += n
        out += r.received(n)
    return out


def test_a_large_records_buffer_is_reused_only_once_nothing_refers_to_it() -> None:
    """1 MiB WRITEs reuse their records' buffers (no allocation and memset of 1 MiB per
    call), but never one a record, a slice of its data or anything else still refers to."""
    r = RecordReader(MAX)
    size = 300_000
    first, = _large_records(r, [b"a" * size])
    data = memoryview(first)[100:]  # the WRITE data handed to pwrite() in a thread
    del first
    second, = _large_records(r, [b"b" * size])
    assert bytes(data[:3]) == b"aaa" and bytes(data[-3:]) == b"aaa"  # untouched
    assert data.obj is not second
    kept = id(data.obj)  # the pool holds it: the id stays its own
    del data
    filler = bytearray(size)  # had the buffer been freed, this would take its place (and id)
    third, = _large_records(r, [b"c" * size])
    assert id(third) == kept and third == b"c" * size  # reused once released
    assert second == b"b" * size
    fourth, = _large_records(r, [b"d" * (size + 4)])  # another length: a buffer of its own
    assert id(fourth) != kept and fourth == b"d" * (size + 4)
    assert id(filler) != kept


def test_record_buffers_are_bounded() -> None:
    from protocol.record import RecordBuffers
    pool = RecordBuffers(max_bytes=250_000)
    held = [pool.take(100_000) for _ in range(4)]  # all in use
    assert pool.held == 200_000
    del held
    again = pool.take(100_000)
    assert pool.held == 200_000 and len(again) == 100_000
    other = pool.take(120_000)  # an unused buffer of another length makes room
    assert pool.held == 220_000 and len(other) == 120_000


def test_record_buffers_unused_between_two_trims_are_let_go() -> None:
    from protocol.record import RecordBuffers
    pool = RecordBuffers(max_bytes=1 << 20)
    busy = pool.take(1000)
    idle = pool.take(2000)
    del idle
    pool.trim()  # both were taken since the pool began: kept
    assert pool.held == 3000
    pool.trim()  # the idle one was not taken again: let go; the busy one is in use
    assert pool.held == 1000
    del busy
    pool.trim()
    assert pool.held == 0


def test_record_buffers_stats_tell_the_buffers_in_use() -> None:
    from protocol.record import RecordBuffers
    pool = RecordBuffers(max_bytes=1 << 20)
    busy, idle = pool.take(1000), pool.take(2000)
    assert pool.stats() == {"buffers": 2, "bytes": 3000, "in_use": 2, "in_use_bytes": 3000}
    view = memoryview(idle)[10:]  # a view keeps its buffer in use
    del idle
    assert pool.stats()["in_use"] == 2
    del view, busy
    assert pool.stats() == {"buffers": 2, "bytes": 3000, "in_use": 0, "in_use_bytes": 0}
