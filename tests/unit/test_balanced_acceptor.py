"""``BalancedAcceptor`` (nfsd/workers.py): a lone client's connections, one after another
(a re-mount; the MOUNT call's connection, then the NFS one), all reach the primary.  Two
acceptors, slots 0 and 1, share one listening socket and one table in one event loop, as
two workers do across processes."""
from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import pytest

from nfsd.workers import BalancedAcceptor, ConnectionShares


class Served(asyncio.Protocol):
    """A connection one acceptor took: known to that acceptor's set while it is open."""

    def __init__(self, mine: set[Served], made: asyncio.Queue[int], slot: int) -> None:
        self.mine, self.made, self.slot = mine, made, slot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.mine.add(self)
        self.made.put_nowait(self.slot)

    def connection_lost(self, exc: Exception | None) -> None:
        self.mine.discard(self)


@pytest.fixture
def table() -> Iterator[ConnectionShares]:
    shares = ConnectionShares.create(2)
    yield shares
    os.close(shares.fd)


def test_a_tie_waits_longer_than_a_worker_serving_fewer(table: ConnectionShares) -> None:
    primary, follower = ConnectionShares(table.fd, 2), ConnectionShares(table.fd, 2)
    primary.attach(0)
    follower.attach(1)
    assert primary.yield_for(0) == 0 and follower.yield_for(0) == BalancedAcceptor.TIE_DEFER
    primary.publish(2)
    assert primary.yield_for(2) == BalancedAcceptor.DEFER and follower.yield_for(0) == 0
    assert BalancedAcceptor.TIE_DEFER > BalancedAcceptor.AHEAD_DEFER > BalancedAcceptor.GRACE > BalancedAcceptor.DEFER


def test_a_worker_ahead_waits_longer_than_one_behind_a_lower_slot(table: ConnectionShares) -> None:
    """The follower serving none, while the primary serves one (or one it has not seen
    closed yet), waits a grace, and takes the connection before the primary gives up
    waiting: a second client still goes to the follower.  Past one connection, no grace:
    a burst of connections pays it once."""
    primary, follower = ConnectionShares(table.fd, 2), ConnectionShares(table.fd, 2)
    primary.attach(0)
    follower.attach(1)
    primary.publish(1)
    assert follower.yield_for(0) == BalancedAcceptor.GRACE < primary.yield_for(1)
    primary.publish(3)
    follower.publish(2)
    assert follower.yield_for(2) == 0 < primary.yield_for(3)


Pair = list[tuple[BalancedAcceptor, set[Served]]]


def pair(table: ConnectionShares, made: asyncio.Queue[int]) -> tuple[socket.socket, socket.socket, Pair,
                                                                      list[ConnectionShares]]:
    """Two acceptors (slots 0 and 1) on one listening socket, not yet reading it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    second = socket.socket(fileno=os.dup(listener.fileno()))  # the other worker's descriptor
    acceptors, views = [], []
    for slot, sock in enumerate((listener, second)):
        view = ConnectionShares(table.fd, 2)
        view.attach(slot)
        mine: set[Served] = set()
        acceptor = BalancedAcceptor(sock, lambda m=mine, s=slot: Served(m, made, s), view,  # type: ignore[misc]
                                    lambda m=mine: len(m))  # type: ignore[misc]
        acceptors.append((acceptor, mine))
        views.append(view)
    return listener, second, acceptors, views


def test_a_lone_clients_connections_one_after_another_all_reach_the_primary(table: ConnectionShares) -> None:
    async def run() -> list[int]:
        made: asyncio.Queue[int] = asyncio.Queue()
        listener, second, acceptors, views = pair(table, made)
        for acceptor, _ in acceptors:
            acceptor._resume()  # (not start: no once-a-second publication, only accepts and ends)
        takers = []
        try:
            for _ in range(6):
                client = socket.create_connection(listener.getsockname())
                takers.append(await asyncio.wait_for(made.get(), 10))
                _, mine = acceptors[takers[-1]]
                client.close()
                for _ in range(1000):  # until the server's end has seen the close (10 s at most)
                    if not mine:
                        break
                    await asyncio.sleep(0.01)
                assert not mine
                # published at once, not by the once-a-second tick (which is not running)
                assert [c for _, c in views[1]._elsewhere()] == [0]
        finally:
            for acceptor, _ in acceptors:
                acceptor.stop()
            listener.close()
            second.close()
        return takers

    assert asyncio.run(run()) == [0] * 6


def test_a_reconnection_before_the_primary_saw_the_close_still_reaches_it(table: ConnectionShares) -> None:
    """A client closes its connection and opens another at once: the follower wakes for
    the new one while the primary still counts the old one (its loop has not read the end
    yet).  Before the grace the follower took it at once (a connection in three or four
    with a real client: docs/design.rst, "A kernel client reconnecting at once")."""
    async def run() -> int:
        made: asyncio.Queue[int] = asyncio.Queue()
        listener, second, acceptors, views = pair(table, made)
        (primary, served), (follower, _) = acceptors
        old = Served(served, made, 0)
        served.add(old)  # the closed connection, not yet seen ended by the primary
        views[0].publish(1)
        client = socket.create_connection(listener.getsockname())
        try:
            follower._ready()  # the follower woken first
            await asyncio.sleep(0)
            old.connection_lost(None)  # the primary's loop reads the end and publishes
            views[0].publish(len(served))
            primary._resume()
            return await asyncio.wait_for(made.get(), 10)
        finally:
            client.close()
            for acceptor, _ in acceptors:
                acceptor.stop()
            listener.close()
            second.close()

    assert asyncio.run(run()) == 0


def test_clients_opening_connections_at_once_are_spread_over_both_workers(table: ConnectionShares) -> None:
    """Four connections opened together and kept open: two each (the follower takes its
    share after its grace, before the primary, ahead, stops waiting)."""
    async def run() -> list[int]:
        made: asyncio.Queue[int] = asyncio.Queue()
        listener, second, acceptors, views = pair(table, made)
        for acceptor, _ in acceptors:
            acceptor._resume()
        clients = [socket.create_connection(listener.getsockname()) for _ in range(4)]
        try:
            return sorted([await asyncio.wait_for(made.get(), 10) for _ in clients])
        finally:
            for client in clients:
                client.close()
            for acceptor, _ in acceptors:
                acceptor.stop()
            listener.close()
            second.close()

    assert asyncio.run(run()) == [0, 0, 1, 1]
