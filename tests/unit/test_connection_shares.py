"""``ConnectionShares.yield_for``: which worker takes the next TCP connection
(nfsd/workers.py ``BalancedAcceptor``)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nfsd.workers import ConnectionShares


@pytest.fixture
def three() -> Iterator[list[ConnectionShares]]:
    """Three workers' views of one shared table."""
    table = ConnectionShares.create(3)
    views = [ConnectionShares(table.fd, 3) for _ in range(3)]
    for slot, view in enumerate(views):
        view.attach(slot)
    yield views
    os.close(table.fd)


def test_a_tie_goes_to_the_lowest_slot_so_a_lone_client_reaches_the_primary(three: list[ConnectionShares]) -> None:
    assert [view.yield_for(0) > 0 for view in three] == [False, True, True]


def test_connections_then_go_round_the_workers(three: list[ConnectionShares]) -> None:
    """The worker with the shortest wait takes the connection (one serving none while a
    lower slot serves one waits only a grace, for a close that slot may not have read yet):
    the connections go 0, 1, 2, 0, ..."""
    counts = [0, 0, 0]
    order = []
    for _ in range(7):
        waits = [view.yield_for(counts[slot]) for slot, view in enumerate(three)]
        takers = [slot for slot, wait in enumerate(waits) if wait == min(waits)]
        assert len(takers) == 1, (counts, waits)
        counts[takers[0]] += 1
        three[takers[0]].publish(counts[takers[0]])
        order.append(takers[0])
    assert order == [0, 1, 2, 0, 1, 2, 0]


def test_a_worker_serving_more_yields_to_any_serving_fewer(three: list[ConnectionShares]) -> None:
    three[0].publish(5)
    three[1].publish(2)
    three[2].publish(3)
    waits = [three[0].yield_for(5), three[1].yield_for(2), three[2].yield_for(3)]
    assert waits[1] < min(waits[0], waits[2])


def test_unattached_shares_never_yield() -> None:
    table = ConnectionShares.create(2)
    try:
        assert not ConnectionShares(table.fd, 2).yield_for(10)
    finally:
        os.close(table.fd)


def test_others_idle_counts_only_the_other_workers(three: list[ConnectionShares]) -> None:
    """The primary journals lone bursts only while no other worker serves a connection
    (nfsd/state/store.py): its own connections do not count."""
    three[0].publish(4)
    assert three[0].others_idle() and not three[1].others_idle()
    three[2].publish(1)
    assert not three[0].others_idle()
    three[2].publish(0)
    assert three[0].others_idle()


def test_others_idle_reads_the_workers_on_both_sides(three: list[ConnectionShares]) -> None:
    """A middle worker's others are before and after its own cell."""
    three[1].publish(7)
    assert three[1].others_idle()
    three[0].publish(1)
    assert not three[1].others_idle()
    three[0].publish(0)
    three[2].publish(1 << 40)  # (a count whose low bytes are zero)
    assert not three[1].others_idle() and not three[0].others_idle()
    three[2].publish(0)
    assert three[1].others_idle() and not three[0].others_idle() and not three[2].others_idle()


def test_unattached_shares_are_never_alone() -> None:
    table = ConnectionShares.create(2)
    try:
        assert not ConnectionShares(table.fd, 2).others_idle()
    finally:
        os.close(table.fd)
