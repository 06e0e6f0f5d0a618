"""The dispatcher's burst (nfsd/rpc/burst.py) as the server wires it (``share_burst``): the
handle table's waiting writes and the deferred directory fsyncs run at a burst's end only
when the burst deferred them, and still before its replies leave."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from nfsd.app import share_burst
from nfsd.fs.dirsync import DirSync
from nfsd.rpc.dispatch import Dispatcher
from nfsd.state.store import Store


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[tuple[Dispatcher, Store, DirSync]]:
    store = Store(str(tmp_path / "state"))
    dirsync = DirSync()
    with ThreadPoolExecutor(2) as pool:
        dirsync.defer_in_bursts(pool)
        dispatcher = Dispatcher(pool)
        share_burst(dispatcher, store, dirsync)
        try:
            yield dispatcher, store, dirsync
        finally:
            store.close()


def _committed(store: Store, ino: int) -> Any:
    """The place LMDB holds for ``ino`` (export 1), not what waits in memory."""
    from nfsd.state.store import _OBJ_KEY
    with store.env.begin(db=store.objects) as txn:
        return txn.get(_OBJ_KEY.pack(1, ino))


def _held_burst_writing(wired: tuple[Dispatcher, Store, DirSync], ino: int, gen: int,
                        name: bytes) -> "asyncio.Future[Any]":
    """A burst that writes a place and changes a directory (on the loop): its replies'
    future, done once the directory's fsync is."""
    dispatcher, store, dirsync = wired
    dispatcher.begin_burst()
    store.put_place(1, ino, 2, gen, name, True)
    dirsync.sync("d", lambda: None)
    held = dispatcher.end_burst()
    assert held is not None
    return held


def test_a_place_written_in_a_burst_is_committed_at_its_end(wired: tuple[Dispatcher, Store, DirSync]) -> None:
    dispatcher, store, _ = wired
    dispatcher.begin_burst()
    store.put_place(1, 10, 2, 7, b"f", True)
    assert _committed(store, 10) is None  # waits for the burst's end
    assert dispatcher.end_burst() is None
    assert _committed(store, 10) is not None
    assert store.get_object(1, 10) == (2, 7, b"f", False)
    # outside a burst, a write goes at once
    store.put_place(1, 11, 2, 8, b"g", True)
    assert _committed(store, 11) is not None


def test_a_burst_that_defers_nothing_calls_no_end_and_waits_for_nothing(
        wired: tuple[Dispatcher, Store, DirSync]) -> None:
    dispatcher, _, dirsync = wired
    fsyncs: list[str] = []

    async def scenario() -> None:
        dispatcher.begin_burst()
        dirsync.sync("d", lambda: fsyncs.append("d"))
        dirsync.sync("d", lambda: fsyncs.append("d again"))
        assert fsyncs == []  # deferred to the burst's end
        assert dispatcher.burst.due == [dirsync.end_burst]  # registered once
        held = dispatcher.end_burst()
        assert held is not None  # the replies wait for the directory's fsync
        await asyncio.wait_for(held, 10)
        assert len(fsyncs) == 1
        assert dispatcher.burst.due == []
        dispatcher.begin_burst()  # a burst that changed nothing
        assert dispatcher.end_burst() is None
        assert len(fsyncs) == 1

    asyncio.run(scenario())


def test_places_are_committed_before_held_replies(wired: tuple[Dispatcher, Store, DirSync]) -> None:
    dispatcher, store, _ = wired
    seen: list[Any] = []

    async def scenario() -> None:
        held = _held_burst_writing(wired, 12, 9, b"h")
        # a reply sent once ``held`` is done finds the place committed (the commit's callback
        # was added first, so it runs first)
        held.add_done_callback(lambda _: seen.append(_committed(store, 12)))
        dispatcher.begin_burst()  # a burst that changed nothing while the fsync runs
        assert dispatcher.end_burst() is None
        await asyncio.wait_for(held, 10)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert seen and seen[0] is not None


def test_a_tombstone_a_thread_adds_to_a_waiting_place_is_committed_with_it(
        wired: tuple[Dispatcher, Store, DirSync]) -> None:
    store = wired[1]

    async def scenario() -> None:
        held = _held_burst_writing(wired, 13, 5, b"i")  # a place that waits for an fsync ...
        # ... removed meanwhile by a thread-pool call: the tombstone waits with it
        await asyncio.get_running_loop().run_in_executor(None, store.mark_deleted, 1, 13)
        await asyncio.wait_for(held, 10)
        await asyncio.sleep(0)
        assert store.get_object(1, 13) == (2, 5, b"i", True)

    asyncio.run(scenario())


def test_the_free_space_check_is_made_once_per_burst(wired: tuple[Dispatcher, Store, DirSync]) -> None:
    dispatcher, store, _ = wired
    dispatcher.begin_burst()
    assert store.roomy()
    store.full = True  # (as after a failed write)
    assert store.roomy()  # the burst keeps what it read at its first write
    dispatcher.end_burst()
    dispatcher.begin_burst()
    assert not store.roomy()
    dispatcher.end_burst()
    store.full = False


def test_a_dirsync_of_its_own_registers_nothing(tmp_path: Path) -> None:
    # used alone (tests, benchmarks), begin_burst and end_burst still bracket a burst
    dirsync = DirSync()
    done: list[int] = []

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            dirsync.defer_in_bursts(pool)
            dirsync.begin_burst()
            dirsync.sync("d", lambda: done.append(os.getpid()))
            assert dirsync.burst.due == []
            held = dirsync.end_burst()
            assert held is not None
            await asyncio.wait_for(held, 10)

    asyncio.run(scenario())
    assert len(done) == 1
