"""Group commit of directory fsyncs.

NFSv3 wants a namespace change (CREATE, REMOVE, RENAME...) on stable storage before its reply,
so every such call fsyncs its directory (``LocalFS.fsync_dir``).  A burst of pipelined creates
in one directory would pay one fsync each, one after another; but an fsync that *begins* after
a change was made covers that change too.  So callers queue per directory: whoever holds the
directory's turn fsyncs once for every change made before it began, and the callers whose
changes that fsync covered return without an fsync of their own.

The event loop does better still: it makes the changes of a burst of calls inline and asks
for no fsync then (``begin_burst``).  The directories the burst changed are fsynced once, in
the thread pool, after the burst (``end_burst`` returns the future of that fsync), and the
burst's replies wait for it while the loop serves other calls (through Linux AIO when the
fsyncs say how to open their directories, ``nfsd.fs.aiofsync``: no thread, no GIL hand-off).
One fsync job runs at a time;
the bursts served meanwhile join the next one, so under load a single fsync of a directory
answers the changes of many bursts and connections.  A job starts at the end of the loop's
turn (``call_soon``), not at the end of the burst that asked for it: the bursts of every
connection the loop found readable in that turn (clients answering the replies the last
fsync released) join it, instead of the first burst's fsync going alone and the others
waiting a whole fsync more.

A client alone on the server sending one call at a time (the kernel client's ``touch``,
``rm``, an untar) gains nothing from that: nobody else waits for the loop, and the hand-off
costs more than it saves (a pool thread woken, the GIL passed back and forth, the loop woken
again through its self-pipe, three or four more loop turns: about 0.1-0.2 ms of CPU and as
much latency per call, measured in the VM).  So when the transport says its connection is
alone (``inline_when``) and the burst made at most ``INLINE_CHANGES`` changes while no other
fsync is under way, ``end_burst`` fsyncs on the loop itself, as knfsd's thread does, and the
replies leave at once.  A pipelined burst, a second active connection, an fsync already
running (its group commit), or fsyncs that have been slow lately keep the deferred path:
slower than ``INLINE_FAST`` on average for a connection that has lately sent several calls
at once (while the loop waits for one fsync, its next calls could be sharing the next one),
slower than ``INLINE_SLOWER_THAN`` for one sending one call at a time (``one_at_a_time``).

With several workers (``share_with``), a job fsyncing one directory is coordinated with the
other workers' through shared memory (``nfsd.fs.shared_fsyncs``): while another worker's fsync
of that directory is in flight, this one waits for it instead of starting its own, and
replies if it began after the job's changes (else it starts the next one, or waits for the
next): one fsync of a directory in flight across all the workers, as in one process.

Exports with exports(5)'s ``async`` option (knfsd's ``!EX_ISSYNC``) skip all of this: the
export guard marks such a call (``relaxed``) and ``sync`` returns at once, so its reply is
not held; the change reaches the disk when the file system writes it back by itself.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import os
import threading
import time
from concurrent.futures import Executor
from typing import Callable, Hashable, Iterable

from ..rpc.burst import Burst
from .aiofsync import AioFsync
from .shared_fsyncs import COVERED, START, WAIT, WAIT_LIMIT, SharedFsyncs

Fsync = Callable[[], None]

_os_fsync = os.fsync

#: a burst with at most this many directory changes may be fsynced on the loop (a RENAME
#: across directories is two); more is a pipelining client, better served by the pool
INLINE_CHANGES = 2
#: fsyncs taking longer than this (a moving average of their wall time, wherever they ran)
#: go to the pool, for a connection that sends one call at a time: a slow disk would stall
#: the loop, so a client that starts meanwhile would wait up to this long once (the next
#: bursts see two connections).  Not lower: a directory fsync on a journaled file system is
#: a journal commit, 1-3 ms (ext4 on a loop device here), and with 1 ms every lone call
#: there paid the pool's hand-off instead, 80-150 µs of CPU a call (docs/design.rst, "sixth
#: pass").  An earlier measurement saw inline fsyncs slower on a CPU-starved host (2-4 ms
#: against 0.6-0.7); runs with 1.6-1.7 cores taken by other processes showed no such loss.
INLINE_SLOWER_THAN = 0.01
#: ... and for a lone connection that has lately sent several calls at once (``make -j``
#: through one mount): its fsyncs in the pool share one while the loop serves the next calls
INLINE_FAST = 0.001


class _Durability(threading.local):
    """Per thread: whether the call it serves is on an ``async`` export, so that what it
    changes need not be stable before its reply (set and cleared by nfsd/exports/guard.py;
    read here, by WRITE's and COMMIT's syncs in nfsd/fs/localfs.py)."""

    relaxed = False


durability = _Durability()


class _Dir:
    __slots__ = ("turn", "changes", "synced", "users")

    def __init__(self) -> None:
        self.turn = threading.Lock()  # one fsync of this directory at a time
        self.changes = 0              # changes reported so far (tickets handed out)
        self.synced = 0               # every change up to this ticket is durable
        self.users = 0                # callers inside ``sync`` (the entry goes when none is)


class _Batch:
    """Directories whose fsync a set of held replies waits for (one job in the pool)."""

    __slots__ = ("dirs", "done", "need")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.dirs: dict[Hashable, Fsync] = {}
        self.done = done
        self.need = 0  # (monotonic ns) after the changes of the last burst that joined it


class DirSync:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[Hashable, _Dir] = {}
        # deferred fsyncs (event loop only): see the module docstring
        self._executor: Executor | None = None
        # the burst being served (nfsd/rpc/burst.py): its own, or the dispatcher's
        # (``share_burst``), where ``end_burst`` is registered when the burst defers an fsync
        self.burst = Burst()
        self._registers = False
        self._deferred: dict[Hashable, Fsync] = {}  # directories the burst being served changed
        self._changes = 0                            # changes the burst being served made
        self._alone: Callable[[], bool] | None = None  # see ``inline_when``
        self._one_at_a_time: Callable[[], bool] | None = None
        self._fsync_seconds = 0.0                    # moving average of a job's wall time
        self._next: _Batch | None = None            # a job not started yet: later bursts join it
        self._running = False                        # a job is in the pool
        self._starting = False                       # a job's start is due at the loop's turn end
        self._aio: AioFsync | None | bool = None  # None: not tried yet; False: unavailable
        # shared with other workers (``share_with``): the job waiting for another worker's
        # fsync, its time limit, this worker's fsync in the table (directory, start)
        self._shared: SharedFsyncs | None = None
        self._waiting: _Batch | None = None
        self._wait_timer: asyncio.TimerHandle | None = None
        self._wake_reading = False
        self._shared_job: tuple[Hashable, int] | None = None

    def share_with(self, shared: SharedFsyncs) -> None:
        """Coordinate one-directory fsync jobs with the other workers' (module docstring)."""
        self._shared = shared

    def share_burst(self, burst: Burst) -> None:
        """Read the dispatcher's ``burst`` (set at each burst's start), and have it call
        ``end_burst`` only for a burst that deferred an fsync: ``begin_burst`` and
        ``end_burst`` are not hooks called around every burst any more."""
        self.burst, self._registers = burst, True

    def defer_in_bursts(self, executor: Executor) -> None:
        """From now on, changes made by the thread serving a burst (``begin_burst``) are
        fsynced after it, in ``executor``."""
        self._executor = executor

    def inline_when(self, alone: Callable[[], bool] | None,
                    one_at_a_time: Callable[[], bool] | None = None) -> None:
        """Let ``end_burst`` fsync a small burst's directories on the loop itself while
        ``alone()`` (the transport: no other connection is being served) says nobody else
        waits for the loop (module docstring); None: always in the pool.  While fsyncs take
        ``INLINE_FAST`` or more, only if ``one_at_a_time()`` too (that connection has not
        sent several calls at once lately; None: taken as true)."""
        self._alone = alone
        self._one_at_a_time = one_at_a_time

    def sync(self, key: Hashable, fsync: Fsync) -> None:
        """Return once a change already made in directory ``key`` is durable: after an
        ``fsync()`` that began after it, this caller's own or another's.  In a burst served
        by this thread: at once, the fsync deferred to the burst's end (``end_burst``).  For a
        call on an ``async`` export (``durability.relaxed``): at once, with no fsync."""
        if durability.relaxed:
            return
        burst = self.burst
        if burst.thread and burst.thread == threading.get_ident() and self._executor is not None:
            if not self._deferred and self._registers:
                burst.due.append(self.end_burst)
            self._deferred[key] = fsync
            self._changes += 1
            return
        with self._lock:
            d = self._dirs.get(key)
            if d is None:
                d = self._dirs[key] = _Dir()
            d.users += 1
            d.changes += 1
            ticket = d.changes
        try:
            with d.turn:
                if d.synced >= ticket:
                    return  # an fsync that began after this change covered it
                with self._lock:
                    upto = d.changes  # every change with a ticket up to here is made
                fsync()
                d.synced = upto
        finally:
            with self._lock:
                d.users -= 1
                if not d.users:
                    del self._dirs[key]

    def joined(self, key: Hashable) -> bool:
        """Whether a change in directory ``key`` is durable when ``sync`` would say so
        without being asked: the burst this thread serves has deferred an fsync of ``key``
        already, which will begin after this change too.  Then the caller counts the change
        here and makes no fsync closure (a burst of REMOVEs in one directory made two per
        call, for one fsync)."""
        if key in self._deferred and self.burst.thread == threading.get_ident():
            self._changes += 1
            return True
        return False

    # -- bursts (event loop) --------------------------------------------------------------
    def begin_burst(self) -> None:
        """The calling thread (the event loop) starts serving a burst of calls: fsyncs they
        ask for wait for ``end_burst``."""
        if self._executor is not None:
            self.burst.thread = threading.get_ident()

    def end_burst(self) -> asyncio.Future[None] | None:
        """After the burst: None if it changed no directory, else a future done once every
        directory it changed is durable (failed with the fsync's error if one failed).
        The burst's replies must not leave before."""
        self.burst.thread = 0
        if not self._deferred:
            return None
        deferred, self._deferred = self._deferred, {}
        changes, self._changes = self._changes, 0
        if (changes <= INLINE_CHANGES and not self._running and not self._starting and not self._dirs
                and self._fsync_seconds < INLINE_SLOWER_THAN and self._alone is not None and self._alone()
                and (self._fsync_seconds < INLINE_FAST or self._one_at_a_time is None or self._one_at_a_time())):
            return self._fsync_inline(deferred)
        batch = self._next
        if batch is None:
            batch = self._next = _Batch(asyncio.get_running_loop().create_future())
        batch.dirs.update(deferred)
        batch.need = time.monotonic_ns()
        if not self._running:
            self._start_soon()
        return batch.done

    def _start_soon(self) -> None:
        """Start the next job once the loop has served every connection it found readable
        this turn (``call_soon`` runs after them), so their bursts join it."""
        if not self._starting:
            self._starting = True
            asyncio.get_running_loop().call_soon(self._start_due)

    def _start_due(self) -> None:
        self._starting = False
        if not self._running and self._next is not None:
            self._start()

    def _fsync_inline(self, dirs: dict[Hashable, Fsync]) -> asyncio.Future[None] | None:
        """The burst's fsyncs on the loop (no job running, no other thread inside ``sync``):
        None once they are done, or a failed future for the replies to turn SYSTEM_ERR.
        Each fsync is called straight, not through ``sync``'s turn per directory: it begins
        after the burst's changes, and nobody else is there to share it with."""
        try:
            self._fsync_each(dirs.values())
        except Exception as exc:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
        return None

    def _start(self) -> None:
        batch, self._next = self._next, None
        assert batch is not None and self._executor is not None
        self._running = True
        loop = asyncio.get_running_loop()
        if self._shared is not None and len(batch.dirs) == 1:
            self._shared_turn(batch, loop)
        elif not self._start_aio(batch, loop):
            self._start_pool(batch, loop)

    def _shared_turn(self, batch: _Batch, loop: asyncio.AbstractEventLoop, force: bool = False) -> None:
        """The job of one directory, with the other workers (``nfsd.fs.shared_fsyncs``): done
        if an fsync of theirs covered it, else wait for theirs in flight, else fsync."""
        assert self._shared is not None
        key = next(iter(batch.dirs))
        verdict, began = self._shared.claim(key, batch.need, force)
        if verdict == COVERED:
            job: asyncio.Future[None] = loop.create_future()
            job.set_result(None)
            self._finished(batch, job)
        elif verdict == WAIT:
            if not self._wake_reading:
                loop.add_reader(self._shared.wake_fd, self._woken)
                self._wake_reading = True
            self._waiting = batch
            self._wait_timer = loop.call_later(WAIT_LIMIT, self._waited_too_long)
        else:
            if verdict == START:
                self._shared_job = (key, began)
            if not self._start_aio(batch, loop):
                self._start_pool(batch, loop)

    def _woken(self) -> None:
        """Another worker finished an fsync this one may wait for: look again."""
        assert self._shared is not None
        try:
            os.eventfd_read(self._shared.wake_fd)
        except BlockingIOError:
            return
        self._look_again(False)

    def _waited_too_long(self) -> None:
        self._wait_timer = None
        self._look_again(True)

    def _look_again(self, force: bool) -> None:
        batch, self._waiting = self._waiting, None
        if batch is None:
            return
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self._shared_turn(batch, asyncio.get_running_loop(), force)

    def _start_pool(self, batch: _Batch, loop: asyncio.AbstractEventLoop) -> None:
        assert self._executor is not None
        try:
            job = loop.run_in_executor(self._executor, self._fsync_all, batch.dirs)
        except RuntimeError:  # the pool is shut down (server stopping): fsync here
            job = loop.create_future()
            try:
                self._fsync_all(batch.dirs)
                job.set_result(None)
            except Exception as exc:
                job.set_exception(exc)
        job.add_done_callback(lambda f: self._finished(batch, f))

    def _start_aio(self, batch: _Batch, loop: asyncio.AbstractEventLoop) -> bool:
        """Start ``batch``'s fsyncs through Linux AIO (``nfsd.fs.aiofsync``: no pool thread,
        no GIL hand-off, the end seen by the loop's own poll) when every one of its fsyncs
        says how to open its directory (``open_fd``, ``LocalFS.fsync_dir``); False: use the
        pool.  Not while ``os.fsync`` is replaced (the tests that gate and count fsyncs)."""
        if self._aio is False or os.fsync is not _os_fsync:
            return False
        opens = [getattr(fsync, "open_fd", None) for fsync in batch.dirs.values()]
        if not all(opens):
            return False
        if self._aio is None:
            try:
                self._aio = AioFsync(loop)
            except OSError:
                self._aio = False
                return False
        assert isinstance(self._aio, AioFsync)
        fds: list[int] = []
        try:
            for open_fd in opens:
                fds.append(open_fd())  # type: ignore[misc]
            began = time.monotonic()

            def done(failure: BaseException | None) -> None:
                if isinstance(failure, OSError) and failure.errno == errno.EINVAL:
                    # a kernel (< 4.18) or file system without AIO fsync: the pool from now on
                    self._aio = False
                    self._start_pool(batch, loop)
                    return
                self._timed(began)
                job: asyncio.Future[None] = loop.create_future()
                if failure is None:
                    job.set_result(None)
                else:
                    job.set_exception(failure)
                self._finished(batch, job)
            self._aio.submit(fds, done)
            return True
        except OSError:
            for fd in fds:
                os.close(fd)
            return False

    def _fsync_all(self, dirs: dict[Hashable, Fsync]) -> None:
        """In the pool: fsync every directory through ``sync``'s turn per directory (shared
        with any thread fsyncing it meanwhile)."""
        self._fsync_each(functools.partial(self.sync, key, fsync) for key, fsync in dirs.items())

    def _fsync_each(self, fsyncs: Iterable[Fsync]) -> None:
        """Call every fsync (each one even if another failed; the first failure is raised
        after); their wall time goes into the moving average ``end_burst`` looks at."""
        failure: Exception | None = None
        began = time.monotonic()
        for fsync in fsyncs:
            try:
                fsync()
            except Exception as exc:
                failure = failure or exc
        self._timed(began)
        if failure is not None:
            raise failure

    def _timed(self, began: float) -> None:
        """A job that began at ``began`` (monotonic) is done: into the moving average."""
        self._fsync_seconds += (time.monotonic() - began - self._fsync_seconds) / 8

    def _finished(self, batch: _Batch, job: asyncio.Future[None]) -> None:
        if self._shared_job is not None:  # tell the other workers (their waits may be over)
            assert self._shared is not None
            (key, began), self._shared_job = self._shared_job, None
            self._shared.finished(key, began, not job.cancelled() and job.exception() is None)
        self._running = False
        if not batch.done.done():
            exc = job.exception() if not job.cancelled() else asyncio.CancelledError()
            if exc is None:
                batch.done.set_result(None)
            else:
                batch.done.set_exception(exc)
        if self._next is not None:
            self._start_soon()
