"""Calls held until what they wait for is ready, instead of answered "try again later".

A handler that cannot answer yet (a handle only a walk of the export can place) raises
``CallPending`` (nfsd/rpc/call.py) before it changed anything.  Told "try again later"
(NFS3ERR_JUKEBOX), the Linux client waits 5 s before it retries, whatever the wait was
really for; held, the call is answered as soon as it can be.  The dispatcher awaits the
pending call's ``ready`` here, on the event loop (a call in the thread pool raised out of
its thread first: no pool thread waits), then runs it again: same arguments, same entry in
the duplicate-request cache (still "in progress": a retransmission is not run twice).

Bounds, per process: at most ``HELD_MAX`` calls held at once (beyond, the call gets its
failure, as before holding), each for at most ``HOLD_SECONDS`` (then its failure: the
client retries and may be held again).  Ten seconds: well inside the Linux client's TCP
timeout (``timeo`` 60 s: a reply later than that makes it retransmit), and longer than a
walk of 100,000 directories takes within the search gate's quarter share (~8 s).  A wait
the server knows will end by itself (``CallPending.ends``: a pass of the start-up index,
which can take 40 s) is held up to ``LONG_HOLD_SECONDS``, 50 s: the whole of such a pass,
where 10 s made the client lose up to 5 s (its JUKEBOX wait) per 15; still 10 s below the
client's 60 s timeout, room for running the call again (a fault of a large query: a few
seconds) before it would retransmit.  A client mounted with a shorter ``timeo`` that
retransmits meanwhile is answered once: the duplicate-request cache drops a non-idempotent
call's retransmission while the original is in progress; an idempotent one is held beside
it (within HELD_MAX) and both are answered, the client taking the first.  Over UDP
the client retransmits after 1.1 s, so the transport does not hold at all.  A call whose
connection closed is dropped (nothing answered, its cache entry forgotten); a server that
stops answers every held call its failure at once.  A held call does not count as one of
its connection's calls in flight (``HeldCalls.watch``): the Linux client sends every call
of a mount down one connection, so 32 calls held for up to 50 s would otherwise stop all
its other calls that long; HELD_MAX still bounds what they hold.
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Callable, Hashable

HELD_MAX = 128
# (PYSFSD_HOLD_SECONDS: for tests whose wait must not depend on a loaded machine's speed)
HOLD_SECONDS = float(os.environ.get("PYSFSD_HOLD_SECONDS", "") or 10.0)
LONG_HOLD_SECONDS = max(HOLD_SECONDS, 50.0)


def _give(signal: "asyncio.Future[bool | None]", verdict: bool | None) -> None:
    if not signal.done():
        signal.set_result(verdict)


def _settle(signal: "asyncio.Future[bool | None]", ready: "Future[bool]") -> None:
    _give(signal, not ready.cancelled() and ready.exception() is None and bool(ready.result()))


class HeldCalls:
    """The calls one dispatcher holds, by client (see the module)."""

    def __init__(self, held_max: int = HELD_MAX, hold_seconds: float = HOLD_SECONDS,
                 long_hold_seconds: float = LONG_HOLD_SECONDS) -> None:
        self.held_max, self.hold_seconds, self.long_hold_seconds = held_max, hold_seconds, long_hold_seconds
        self._waits: dict[Hashable, set[asyncio.Future[bool | None]]] = {}
        self._watchers: dict[Hashable, Callable[[int], None]] = {}
        self.count = 0

    def watch(self, client: Hashable, on_change: Callable[[int], None]) -> None:
        """Call ``on_change(1)`` when a call of ``client`` starts being held, ``on_change(-1)``
        when it stops (until ``closed``): its connection counts held calls apart."""
        self._watchers[client] = on_change

    def room(self) -> bool:
        return self.count < self.held_max

    async def wait(self, ready: "Future[bool]", client: Hashable, deadline: float) -> bool | None:
        """Until ``ready`` is done or the loop's clock passes ``deadline``: True to run the
        call again; False to answer its failure (``ready`` said so, was cancelled, the time
        ran out, or the server stops); None to answer nothing (its connection closed)."""
        loop = asyncio.get_running_loop()
        signal: asyncio.Future[bool | None] = loop.create_future()

        def done(_: "Future[bool]") -> None:  # (in whichever thread settled it)
            try:
                loop.call_soon_threadsafe(_settle, signal, ready)
            except RuntimeError:
                pass  # the loop closed meanwhile
        waits = self._waits.setdefault(client, set())
        waits.add(signal)
        self.count += 1
        timer = loop.call_at(deadline, _give, signal, False)
        ready.add_done_callback(done)
        watcher = self._watchers.get(client)
        if watcher is not None:
            watcher(1)
        try:
            return await signal
        finally:
            timer.cancel()
            self.count -= 1
            if watcher is not None and self._watchers.get(client) is watcher:
                watcher(-1)
            waits.discard(signal)
            if not waits and self._waits.get(client) is waits:
                del self._waits[client]
            ready.cancel()  # (once done, nothing): what it waited on lets it go

    def closed(self, client: Hashable) -> None:
        """``client``'s connection closed: its held calls are dropped."""
        self._watchers.pop(client, None)
        for signal in self._waits.pop(client, ()):
            _give(signal, None)

    def release(self) -> None:
        """The server stops: every held call is answered its failure now."""
        for waits in list(self._waits.values()):
            for signal in waits:
                _give(signal, False)


def settle(fut: "Future[bool]", result: bool) -> None:
    """Give a held call's future its result, unless its call was let go meanwhile (the
    dispatcher cancels the future from the event loop, perhaps while another thread settles)."""
    try:
        fut.set_result(result)
    except InvalidStateError:
        pass


class Waiting:
    """The futures of the held calls waiting on one thing (thread-safe: a call in the pool
    may add one while the event loop settles them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: list[Future[bool]] = []

    def new(self) -> "Future[bool]":
        fut: Future[bool] = Future()
        with self._lock:
            if len(self._futures) > 8:  # (held calls let go of theirs: keep only the live ones)
                self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(fut)
        return fut

    def settle(self, result: bool) -> None:
        """Every waiting call runs again (True) or answers its failure (False)."""
        with self._lock:
            futures, self._futures = self._futures, []
        for fut in futures:
            settle(fut, result)

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for f in self._futures if not f.done())
