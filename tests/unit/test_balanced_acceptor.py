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
    assert BalancedAcceptor.TIE_DEFER > BalancedAcceptor.DEFER


def test_a_lone_clients_connections_one_after_another_all_reach_the_primary(table: ConnectionShares) -> None:
    async def run() -> list[int]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        second = socket.socket(fileno=os.dup(listener.fileno()))  # the other worker's descriptor
        made: asyncio.Queue[int] = asyncio.Queue()
        acceptors, views = [], []
        for slot, sock in enumerate((listener, second)):
            view = ConnectionShares(table.fd, 2)
            view.attach(slot)
            mine: set[Served] = set()
            acceptor = BalancedAcceptor(sock, lambda m=mine, s=slot: Served(m, made, s), view,  # type: ignore[misc]
                                        lambda m=mine: len(m))  # type: ignore[misc]
            acceptor._resume()  # (not start: no once-a-second publication, only accepts and ends)
            acceptors.append((acceptor, mine))
            views.append(view)
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
