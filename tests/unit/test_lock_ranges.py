"""The lock table's POSIX range logic against a byte-by-byte model (hypothesis), and the
mirror onto real files: OFD locks that a local process's fcntl lock excludes, and the reverse."""
from __future__ import annotations

import fcntl
import multiprocessing
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nfsd.locks import ofd
from nfsd.locks.manager import Host, LockManager, Owner, Status
from nfsd.locks.ranges import (
    END,
    MAX_OFFSET,
    Span,
    TooBig,
    apply_lock,
    covers,
    cut,
    nlm_length,
    span,
)

SIZE = 24  # model domain: bytes 0..SIZE-1, and SIZE stands for "to end of file"
OWNERS = [Owner(Host("a", "127.0.0.1"), 1, b"p1"), Owner(Host("a", "127.0.0.1"), 2, b"p2"),
          Owner(Host("b", "127.0.0.2"), 1, b"p1")]


def bytes_of(spans: list[Span]) -> dict[int, bool]:
    return {b: s.exclusive for s in spans for b in range(s.start, min(s.end, SIZE))}


def well_formed(spans: list[Span]) -> None:
    for a, b in zip(spans, spans[1:]):
        assert a.end <= b.start, spans
        assert not (a.end == b.start and a.exclusive == b.exclusive), f"unmerged {spans}"
    for s in spans:
        assert s.start < s.end


ranges = st.tuples(st.integers(0, SIZE - 1), st.integers(1, SIZE)).map(
    lambda t: (t[0], max(t[1], t[0] + 1)))


ops = st.lists(st.tuples(st.sampled_from(["lock", "unlock"]), ranges, st.booleans())
               .map(lambda t: (t[0], t[1][0], t[1][1], t[2])), max_size=12)


@given(ops)
@settings(max_examples=400, deadline=None)
def test_one_owner_matches_byte_model(seq: list[tuple[str, int, int, bool]]) -> None:
    """Locks of one owner: each byte ends with the kind of the last lock covering it, unless
    an unlock covered it later; spans stay sorted, disjoint and merged."""
    spans: list[Span] = []
    model: dict[int, bool] = {}
    for op, start, end, excl in seq:
        if op == "lock":
            spans = apply_lock(spans, start, end, excl)
            model.update({b: excl for b in range(start, end)})
        else:
            spans = cut(spans, start, end)
            for b in range(start, end):
                model.pop(b, None)
        well_formed(spans)
        assert bytes_of(spans) == model
        for s, e in [(start, end), (0, SIZE)]:
            for kind in (True, False):
                assert covers(spans, s, e, kind) == all(model.get(b) is kind for b in range(s, e))


def test_span_of_length_zero_is_to_end_and_64_bit_ranges() -> None:
    """As NFS-Ganesha: past 2**63-1 is FBIG for a start and "to end of file" for an end."""
    assert span(10, 0) == (10, END)
    assert span(MAX_OFFSET, 0) == (MAX_OFFSET, END)
    assert span(MAX_OFFSET - 5, 5) == (MAX_OFFSET - 5, MAX_OFFSET)
    assert span(MAX_OFFSET - 5, 6) == (MAX_OFFSET - 5, END)
    assert span(1 << 40, (1 << 64) - (1 << 40) - 1) == (1 << 40, END)
    assert span(5, (1 << 64) - 5) == (5, END)      # its last byte is 2**64-1: to end of file
    assert span(5, (1 << 64) - 1) == (5, END)      # even past 2**64
    for offset, length in [(MAX_OFFSET + 1, 0), ((1 << 64) - 5, 1)]:
        with pytest.raises(TooBig):
            span(offset, length)
    assert nlm_length(10, END) == 0 and nlm_length(10, 15) == 5
    # a lock at the very top of the 64-bit space splits and merges like any other
    spans = apply_lock([], 1 << 63, END, True)
    spans = cut(spans, (1 << 63) + 10, (1 << 63) + 20)
    assert spans == [Span(1 << 63, (1 << 63) + 10, True), Span((1 << 63) + 20, END, True)]


class TableMachine(RuleBasedStateMachine):
    """Several owners through LockManager (no real file): a grant never overlaps a
    conflicting holder, a denial always has one, and what each owner holds follows the
    per-owner byte model."""

    def __init__(self) -> None:
        super().__init__()
        self.granted: list[Any] = []
        self.m = LockManager(on_grant=lambda w, f: self.granted.append(w))
        self.model: dict[Owner, dict[int, bool]] = {o: {} for o in OWNERS}

    def f(self) -> Any:
        return self.m.file("k", None)

    def conflicting(self, owner: Owner, start: int, end: int, excl: bool) -> bool:
        return any(b in held and (excl or held[b])
                   for o, held in self.model.items() if o != owner for b in range(start, end))

    @rule(owner=st.sampled_from(OWNERS), r=ranges, excl=st.booleans())
    def lock(self, owner: Owner, r: tuple[int, int], excl: bool) -> None:
        start, end = r
        expect_conflict = self.conflicting(owner, start, end, excl)
        found = self.m.test(self.f(), owner, start, end, excl)
        assert (found is not None) == expect_conflict
        status = self.m.lock(self.f(), owner, start, end, excl)
        assert status == (Status.DENIED if expect_conflict else Status.GRANTED)
        if not expect_conflict:
            self.model[owner].update({b: excl for b in range(start, end)})

    @rule(owner=st.sampled_from(OWNERS), r=ranges)
    def unlock(self, owner: Owner, r: tuple[int, int]) -> None:
        assert self.m.unlock(self.f(), owner, *r) == Status.GRANTED
        for b in range(*r):
            self.model[owner].pop(b, None)

    @rule(owner=st.sampled_from(OWNERS))
    def owner_goes(self, owner: Owner) -> None:
        self.m.free_host(lambda h: h == owner.host)
        for o in OWNERS:
            if o.host == owner.host:
                self.model[o] = {}

    @invariant()
    def table_matches_model(self) -> None:
        f = self.m.files.get("k")
        for o in OWNERS:
            spans = f.spans.get(o, []) if f else []
            well_formed(spans)
            assert bytes_of(spans) == self.model[o]
        assert self.m.counts()[1] == sum(len(s) for s in (f.spans.values() if f else []))


TestTable = TableMachine.TestCase
TestTable.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


def test_blocked_waiter_is_granted_in_order_and_capped() -> None:
    granted: list[Any] = []
    m = LockManager(on_grant=lambda w, f: granted.append(w.owner))
    f = m.file("k", None)
    a, b, c = OWNERS
    assert m.lock(f, a, 0, END, True) == Status.GRANTED
    assert m.lock(f, b, 0, 10, True, block=True) == Status.BLOCKED
    assert m.lock(f, c, 5, 6, False, block=True) == Status.BLOCKED
    assert m.lock(f, b, 0, 10, True, block=True) == Status.BLOCKED  # a poll: no second waiter
    assert m.counts()[2] == 2
    m.unlock(f, a, 0, END)
    assert granted == [b]            # c still conflicts with b's new lock
    m.unlock(f, b, 0, 10)
    assert granted == [b, c]
    assert m.counts() == (1, 1, 0)
    assert m.cancel(f, a, 0, 1, True) == Status.GRANTED   # nothing to cancel: still fine


def test_waiters_expire_and_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    m = LockManager(clock=lambda: now[0])
    f = m.file("k", None)
    a = OWNERS[0]
    m.lock(f, a, 0, END, True)
    monkeypatch.setattr("nfsd.locks.manager.MAX_WAITERS_PER_HOST", 3)
    others = [Owner(Host("z", "127.0.0.9"), i, b"") for i in range(5)]
    got = [m.lock(f, o, 0, 1, True, block=True) for o in others]
    assert got == [Status.BLOCKED] * 3 + [Status.NOLOCKS] * 2
    now[0] = 1000.0
    m.tick()
    assert m.counts()[2] == 0


def test_locks_per_host_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nfsd.locks.manager.MAX_LOCKS_PER_HOST", 4)
    m = LockManager()
    f = m.file("k", None)
    a = OWNERS[0]
    got = [m.lock(f, a, 2 * i, 2 * i + 1, True) for i in range(6)]
    assert got == [Status.GRANTED] * 4 + [Status.NOLOCKS] * 2
    assert m.lock(f, a, 0, 100, True) == Status.GRANTED   # merging them all is fewer spans


def test_share_modes() -> None:
    m = LockManager()
    f = m.file("k", None)
    a, b, _ = OWNERS
    assert m.share(f, a, mode=2, access=1) == Status.GRANTED     # read, deny write
    assert m.share(f, b, mode=0, access=2) == Status.DENIED      # wants write: denied
    assert m.share(f, b, mode=0, access=1) == Status.GRANTED     # read: fine
    assert m.share(f, b, mode=1, access=1) == Status.DENIED      # would deny a's read
    assert m.unshare(f, a) == Status.GRANTED
    assert m.share(f, b, mode=0, access=3) == Status.GRANTED


def test_hosts_are_reported_when_they_first_and_last_hold_something() -> None:
    events: list[tuple[str, bool]] = []
    m = LockManager(on_hosts=lambda h, held: events.append((h.name, held)))
    f = m.file("k", None)
    a, b, c = OWNERS
    m.lock(f, a, 0, 1, True)
    m.lock(f, b, 5, 6, True)
    m.unlock(f, a, 0, 1)
    assert events == [("a", True)]
    m.unlock(f, b, 0, END)
    assert events == [("a", True), ("a", False)]


# --- the mirror on real files ------------------------------------------------------------------

def _local_lock(path: str, start: int, length: int, ready: Any, done: Any) -> None:
    """A separate process holding a classic POSIX lock until told to stop."""
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
    ready.set()
    done.wait(30)


def test_local_posix_lock_and_nlm_lock_exclude_each_other(tmp_path: Any) -> None:
    path = str(tmp_path / "f")
    with open(path, "wb") as fh:
        fh.write(b"x" * 100)
    m = LockManager()
    f = m.file("k", lambda: ofd.open_for_locks(path))
    a = OWNERS[0]
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_local_lock, args=(path, 10, 10, ready, done))
    p.start()
    try:
        assert ready.wait(10)
        assert m.lock(f, a, 15, 16, True) == Status.DENIED
        holder = m.test(f, a, 0, END, False)
        assert holder is not None and holder[0] is None and holder[1].start == 10
        assert m.lock(f, a, 20, 30, True) == Status.GRANTED     # next to it: fine
        assert m.lock(f, a, 0, 1, False, block=True) == Status.GRANTED
        assert m.lock(f, OWNERS[2], 12, 13, False, block=True) == Status.BLOCKED
    finally:
        done.set()
        p.join(10)
    assert p.exitcode == 0
    m.tick()   # the local holder is gone: the waiter gets its lock
    assert m.counts()[2] == 0, (f.waiters, f.spans)
    # and the reverse: our lock keeps a local process out
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError):
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 22)
        m.unlock(f, a, 0, END)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 22)
    finally:
        os.close(fd)


def test_client_records_are_durable_and_forgotten_once_idle(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client is recorded before its first lock, kept while it holds nothing for a while
    (no fsync per LOCK+UNLOCK), then forgotten; the NSM state number is odd and grows."""
    from nfsd.locks import service
    from nfsd.locks.monitor import MonitorRecords
    records = MonitorRecords(str(tmp_path / "nlm"))
    assert [MonitorRecords(str(tmp_path / "nlm")).next_state() for _ in range(3)] == [1, 3, 5]
    svc = service.LockService({}, records)
    assert svc.state == 7
    host = Host("alpha", "127.0.0.1")
    svc._hosts_changed(host, True)
    assert list(records.hosts()) == [host]
    svc._hosts_changed(host, False)
    svc._forget_idle_hosts()
    assert list(MonitorRecords(str(tmp_path / "nlm")).hosts()) == [host]   # idle, not yet forgotten
    monkeypatch.setattr(service, "HOST_IDLE", 0.0)
    svc._forget_idle_hosts()
    assert list(records.hosts()) == []
    # after a restart the recorded clients are the ones to notify
    svc._hosts_changed(host, True)
    again = service.LockService({}, MonitorRecords(str(tmp_path / "nlm")))
    assert again.to_notify == [host] and again.state == 9
