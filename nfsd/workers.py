"""``--workers N``: N server processes on one set of listening sockets (docs/design.rst,
"Several worker processes").

The parent binds the NFS/MOUNT/NLM/NSM TCP and UDP sockets once, creates what the workers
share (the duplicate-request cache's memory, one index channel and one lock channel per
follower), then forks the workers; each opens the LMDB environment
itself, after the fork.  Worker 0, the *primary*, starts first: it takes the store's locks,
moves the boot counter (its write verifier, in memory every worker shares, is the one every
later worker answers, restarts included), writes the index, and holds the lock table: the others relay the NLM/NSM calls
they receive to it (nfsd/locks/relay.py).  The kernel hands
each accepted connection (and each UDP datagram) to whichever worker takes it first.  The
parent then registers with the portmapper, relays the lines scripts wait for, and
supervises: a worker that dies is started again (a slot dying ``MAX_RESTARTS`` times in
``RESTART_WINDOW`` seconds stops the server, loudly); SIGTERM or SIGINT stop the followers
first, then the primary (its last flush applies their last notes).  Every worker is killed
by the kernel when the parent dies (``PR_SET_PDEATHSIG``): kill -9 of the parent leaves no
orphan serving.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import mmap
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .config.errors import ConfigError
from .index.writer_channel import NoteCounts, channel_pair
from .locks.relay import relay_pair
from .nfs3.entry_events import EntryEvents
from .config.preflight import listen_error
from .fs.shared_fsyncs import SharedFsyncs
from .fs.shared_verifier import WriteVerifier
from .heaptrim import trim_heap
from .rpc.server import LISTEN_BACKLOG
from .rpc.shared_drc import SharedDuplicateRequestCache
from .state.journal_flag import JournalFlag

if TYPE_CHECKING:
    from .app import ServerConfig

log = logging.getLogger("pysfsd.workers")

#: the default stops here on a big machine: every worker is a Python process of its own
#: (35-40 MiB more each), and one writer (worker 0) takes every index note and LMDB's
#: writer lock, so past a few workers memory grows faster than throughput
DEFAULT_MAX = 8
#: what ``--workers`` takes at most: the store's LMDB reader slots (nfsd/state/store.py)
#: are sized for this many processes with their threads
MAX_COUNT = 64
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
START_TIMEOUT = 120.0   # opening the store and the exports (the scan runs after)
STOP_TIMEOUT = 20.0     # a worker not gone by then is killed
PR_SET_PDEATHSIG = 1


@dataclass
class WorkerRole:
    """What one worker process inherits from the parent."""

    slot: int
    count: int
    tcp: socket.socket
    udp: socket.socket
    lock_channels: list[socket.socket]  # NLM/NSM relay (nfsd/locks/relay.py): as ``channels``
    drc: SharedDuplicateRequestCache
    channels: list[socket.socket]  # the primary: writer ends (one per follower); else its own end
    note_counts: NoteCounts | None = None  # index notes sent and applied, per worker
    entry_events: EntryEvents | None = None  # the primary's watcher -> followers' entry caches
    inbox_wake: tuple[int, int] = (-1, -1)  # followers write, after an index flush request; the primary reads
    shares: ConnectionShares | None = None  # connections each worker serves (``BalancedAcceptor``)
    write_verifier: WriteVerifier | None = None  # every worker's; set by the primary's first start
    status_fd: int = -1            # the pipe to the parent (``report``)
    fsyncs: SharedFsyncs | None = None  # directory fsyncs in flight, across workers (nfsd/fs/dirsync.py)
    journal_flag: JournalFlag | None = None  # the primary's lone-burst journal holds places (nfsd/state/store.py)

    @property
    def primary(self) -> bool:
        return self.slot == 0

    def report(self, line: str) -> None:
        try:
            os.write(self.status_fd, (line + "\n").encode())
        except OSError:
            pass


class ConnectionShares:
    """Per worker, in shared memory: how many connections it serves (published by that
    worker when it accepts, and once a second), so a worker ahead of another lets it take
    the next connection (``BalancedAcceptor``)."""

    _CELL = struct.Struct("=Q")

    def __init__(self, fd: int, workers: int) -> None:
        self.fd, self.workers = fd, workers
        self._map: mmap.mmap | None = None
        self._slot = 0
        # (the other workers' cells, before and after this one's, as they read when idle)
        self._idle_before = self._idle_after = b""

    @classmethod
    def create(cls, workers: int) -> "ConnectionShares":
        fd = os.memfd_create("pysfsd-connections", 0)  # not CLOEXEC: only forks use it
        os.ftruncate(fd, 8 * workers)
        return cls(fd, workers)

    def attach(self, slot: int) -> None:
        self._map = mmap.mmap(self.fd, 8 * self.workers, mmap.MAP_SHARED)
        self._slot = slot
        self._idle_before, self._idle_after = bytes(8 * slot), bytes(8 * (self.workers - slot - 1))

    def publish(self, count: int) -> None:
        if self._map is not None:
            self._CELL.pack_into(self._map, 8 * self._slot, count)

    def _elsewhere(self) -> Iterator[tuple[int, int]]:
        """(slot, connections last published) of every other worker."""
        m, cell = self._map, self._CELL
        assert m is not None
        return ((i, cell.unpack_from(m, 8 * i)[0]) for i in range(self.workers) if i != self._slot)

    def yield_for(self, mine: int) -> float:
        """How long to leave the next connection to another worker, counted from when it
        came (0: take it now); the worker with the shortest wait takes it:
        ``BalancedAcceptor.DEFER`` for one serving more than another worker;
        ``TIE_DEFER`` for one serving as many as a lower slot (long enough for a primary
        woken late on a loaded machine, where 2 ms handed a lone client to a follower in
        about one connection of three); ``GRACE`` for one serving none while a lower slot
        serves one.  Ties go to the lowest slot, so a lone client (the kernel client's one
        connection) is served by the primary, where a call costs least: a follower's
        changing calls also wake the primary (their notes, their inotify echoes), and it
        commits its handle-table writes itself.
        The grace is for a lone client reconnecting at once: the primary still counts the
        connection just closed until its loop reads the end (it publishes then), and a
        follower that took at once took one such connection in three or four; it re-reads
        the table meanwhile.  A worker serving one while another serves none waits
        ``AHEAD_DEFER``, longer than the grace (else a second client's connection went to
        the primary too, and every later one); counts past one take no grace (a burst of
        connections pays it once)."""
        if self._map is None:
            return 0.0
        wait = 0.0
        for i, theirs in self._elsewhere():
            if theirs < mine:
                return BalancedAcceptor.AHEAD_DEFER if mine == 1 else BalancedAcceptor.DEFER
            if i < self._slot:
                if theirs == mine:
                    wait = BalancedAcceptor.TIE_DEFER
                elif mine == 0 and theirs == 1 and not wait:
                    wait = BalancedAcceptor.GRACE
        return wait

    def others_idle(self) -> bool:
        """Whether no other worker serves a connection (as last published): the primary
        journals lone bursts then (nfsd/state/store.py).  Asked at the end of every burst
        that writes the handle table (each lone CREATE, REMOVE, RENAME): two comparisons of
        the other cells' bytes with zeros (a count of 0 is eight zero bytes), not a
        generator of decoded counts (0.3 against 2.8 µs)."""
        m = self._map
        if m is None:
            return False
        at = 8 * self._slot
        return m[:at] == self._idle_before and m[at + 8:] == self._idle_after


class BalancedAcceptor:
    """Accepts on the shared listening socket, one connection per wake-up; a worker that
    another one should leave it to (``ConnectionShares.yield_for``: fewer connections
    first, then the lowest slot, the primary) waits first, re-reading the table every
    ``DEFER`` seconds, so that one takes it (if it does not, say it is busy or
    restarting, this one accepts once its wait is spent).
    Left to the kernel and libuv, the first worker to wake took most connections: eight
    opened at once by the load generator all went to one worker in some runs, and the
    other idled."""

    DEFER = 0.002  # between two readings of the table while waiting
    GRACE = 0.01  # serving none while a lower slot serves one (maybe just closed)
    AHEAD_DEFER = 0.02  # serving one while another serves none: longer than GRACE
    TIE_DEFER = 0.05

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.BaseProtocol], shares: ConnectionShares,
                 serving: Callable[[], int]) -> None:
        self.sock, self.factory, self.shares, self.serving = sock, factory, shares, serving
        self._reading = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: asyncio.TimerHandle | None = None  # the next ``_after_wait``
        self._since = 0.0  # when the connection waited for began to wait (loop time)
        self.tasks: set[asyncio.Task[Any]] = set()  # accepted connections being set up

    def _mine(self) -> int:
        """Connections served here, counting those accepted whose protocol is not made yet
        (``serving`` counts a connection from ``connection_made``, some loop turns after
        the accept: meanwhile the still-readable listening socket woke this worker again,
        which took the next connection too on a count one short)."""
        return self.serving() + len(self.tasks)

    def start(self) -> None:
        self._resume()
        self._tick()

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reading:
            loop.remove_reader(self.sock.fileno())
            self._reading = False
        for timer in (self._timer, self._waiting):
            if timer is not None:
                timer.cancel()

    def _tick(self) -> None:
        self.shares.publish(self._mine())
        self._timer = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _resume(self) -> None:
        if not self._reading:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._ready)
            self._reading = True

    def _ready(self) -> None:
        mine = self._mine()
        wait = self.shares.yield_for(mine)
        if wait:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.sock.fileno())
            self._reading = False
            self._since = loop.time()
            self._waiting = loop.call_later(min(self.DEFER, wait), self._after_wait)
            return
        self._accept(mine)

    def _after_wait(self) -> None:
        """Every ``DEFER`` while leaving a connection to another worker: asks the table
        again (the other may have taken one meanwhile, or the primary seen a close: the
        wait is what the table says now, from when the connection came), and once it is
        spent, takes the connection if it still waits (that one is busy or restarting).
        (A flag "waited once" kept until the next wake-up took the *next* connection
        without a wait: a lone client's re-connections went to the primary and a follower
        in turn.)"""
        self._waiting = None
        mine = self._mine()
        loop = asyncio.get_running_loop()
        left = self.shares.yield_for(mine) - (loop.time() - self._since)
        if left > 0:
            self._waiting = loop.call_later(min(self.DEFER, left), self._after_wait)
            return
        self._resume()
        self._accept(mine)

    def _accept(self, mine: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:  # EMFILE and the like: the connection waits; try again soon
            log.warning("accept failed: %s", exc)
            loop.remove_reader(self.sock.fileno())
            self._reading = False
            loop.call_later(0.1, self._resume)
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.shares.publish(mine + 1)
        task = loop.create_task(loop.connect_accepted_socket(self._made, conn))
        self.tasks.add(task)
        task.add_done_callback(self._connected)

    def _made(self) -> asyncio.BaseProtocol:
        """The connection's protocol, whose end publishes this worker's count at once: with
        only the once-a-second publication, a client that closed its connection and opened
        another (a re-mount; the MOUNT call's connection, then the NFS one) still counted
        here, so the next one went to another worker (a lone client to a follower), and the
        primary journaled no lone burst meanwhile (``others_idle``)."""
        protocol = self.factory()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            lost(exc)
            self.shares.publish(self._mine())
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]  # once per connection
        return protocol

    def _connected(self, task: "asyncio.Task[Any]") -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("accepted connection not served: %s", task.exception())


def bind_pair(host: str, port: int, attempts: int = 32) -> tuple[socket.socket, socket.socket]:
    """A listening TCP socket and a UDP socket on the same port of ``host`` (0: one free
    for both), inheritable by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(attempts):
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, port))
            tcp.listen(LISTEN_BACKLOG)
            bound = tcp.getsockname()[1]
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.bind((host, bound))
            except OSError:
                udp.close()
                raise
        except OSError:
            tcp.close()
            if port != 0 or attempt == attempts - 1:
                raise
            continue
        for s in (tcp, udp):
            s.setblocking(False)
            s.set_inheritable(True)
        return tcp, udp
    raise AssertionError("unreachable")


@dataclass
class _Slot:
    number: int
    pid: int = 0
    status_r: int = -1
    buffer: bytes = b""
    deaths: list[float] = field(default_factory=list)
    ready: "asyncio.Future[str] | None" = None
    indexed: bool = False


class Supervisor:
    def __init__(self, config: "ServerConfig", count: int) -> None:
        self.config, self.count = config, count
        try:
            self.tcp, self.udp = bind_pair(config.bind, config.port)
        except OSError as exc:
            raise listen_error(config.bind, config.port, exc) from None
        self.host, self.port = self.tcp.getsockname()[:2]
        self.drc = SharedDuplicateRequestCache.create(count)
        self.pairs = [channel_pair() for _ in range(count - 1)]
        self.lock_pairs = [relay_pair() for _ in range(count - 1)] if config.locks else []
        self.note_counts = NoteCounts.create(count)
        self.entry_events = EntryEvents.create()
        self.inbox_wake = os.pipe2(os.O_NONBLOCK)
        self.shares = ConnectionShares.create(count)
        self.fsyncs = SharedFsyncs.create(count)
        self.journal_flag = JournalFlag.create()
        self.write_verifier = WriteVerifier()  # set by the primary's first start, reset by any worker
        self.slots = [_Slot(i) for i in range(count)]
        self.stopping = False
        self.failed: str | None = None
        self.stopped = asyncio.Event()
        self.listening = False  # "listening on" is out
        self.index_line: str | None = None  # "index ready", printed once every worker is
        self.announced = False

    # -- starting workers -------------------------------------------------------------------
    def _role(self, slot: int, status_w: int) -> WorkerRole:
        channels = [w for w, _ in self.pairs] if slot == 0 else [self.pairs[slot - 1][1]]
        if not self.lock_pairs:
            locks: list[socket.socket] = []
        else:
            locks = [p for p, _ in self.lock_pairs] if slot == 0 else [self.lock_pairs[slot - 1][1]]
        return WorkerRole(slot, self.count, self.tcp, self.udp, locks,
                          self.drc, channels, self.note_counts, self.entry_events, self.inbox_wake,
                          self.shares, self.write_verifier, status_w, self.fsyncs, self.journal_flag)

    def _fork(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        before_fork()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's event loop
            code = 70
            try:
                os.close(status_r)
                code = _child(self.config, self._role(slot.number, status_w), parent)
            except BaseException:
                logging.getLogger("pysfsd").exception("worker %d failed", slot.number)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(status_w)
        slot.pid, slot.status_r, slot.buffer, slot.indexed = pid, status_r, b"", False
        slot.ready = loop.create_future()
        loop.add_reader(status_r, self._status, slot)

    def _announce(self) -> None:
        """The line scripts wait for before relying on query directories: after "listening
        on", once every worker knows the index is ready (a follower answers JUKEBOX until
        then)."""
        if (self.listening and not self.announced and self.index_line is not None
                and all(s.indexed for s in self.slots)):
            self.announced = True
            print(self.index_line, flush=True)

    def _status(self, slot: _Slot) -> None:
        try:
            data = os.read(slot.status_r, 4096)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(slot.status_r)
            os.close(slot.status_r)
            slot.status_r = -1
            if slot.ready is not None and not slot.ready.done():
                slot.ready.set_result("error worker exited while starting")
            return
        slot.buffer += data
        while b"\n" in slot.buffer:
            line, slot.buffer = slot.buffer.split(b"\n", 1)
            text = line.decode(errors="replace")
            word, _, rest = text.partition(" ")
            if word in ("ready", "error") and slot.ready is not None and not slot.ready.done():
                slot.ready.set_result(text)
            elif word == "indexed":  # the index is ready, as this worker sees it
                slot.indexed = True
                if rest and self.index_line is None:
                    self.index_line = rest  # the primary's: files and seconds
                self._announce()

    async def _start(self, slot: _Slot) -> None:
        self._fork(slot)
        assert slot.ready is not None
        try:
            text = await asyncio.wait_for(asyncio.shield(slot.ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            text = f"error worker {slot.number} did not start in {START_TIMEOUT:.0f} s"
        word, _, rest = text.partition(" ")
        if word == "error":
            raise ConfigError(rest)

    # -- running ----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        from .config.preflight import unwritable_note
        from .discovery.portmap_service import Discovery
        from .exports.rules import load_exports
        from .rpc.trace import trace_level
        # The portmapper first, as one process does it right after listening (the sockets
        # listen already; calls wait in them until a worker takes them): a port refused is
        # one line, before any worker has started scanning.
        discovery = Discovery()
        try:
            # (traced like a worker's calls: PYSFSD_TRACE shows the kernel client's GETPORTs)
            status = await discovery.start(self.host, self.port, self.config.portmap, self.config.portmap_port,
                                           trace_level(), self.config.register, self.config.locks)
        except OSError as exc:
            raise listen_error(self.host, self.config.portmap_port, exc,
                               "serve the portmapper (--portmap)") from None
        try:
            for slot in self.slots:  # the primary first: it fixes the verifier, the store's locks
                await self._start(slot)
        except ConfigError:
            await discovery.stop()
            await self._stop_all()
            raise
        exports = load_exports(self.config.exports, self.config.exports_file)
        for i, export in enumerate(exports):
            word = "listening on" if i == 0 else "           "
            print(f"pysfsd: {word} {self.host}:{self.port} export {export.path}", flush=True)
        for export in exports:  # once: why the first write would be refused
            note = unwritable_note(export)
            if note is not None:
                print(f"pysfsd: note: {note}", file=sys.stderr, flush=True)
        locks = "; NLM and NSM relayed to worker 0" if self.config.locks and self.count > 1 else ""
        print(f"pysfsd: {self.count} workers: pids {' '.join(str(s.pid) for s in self.slots)}{locks}",
              file=sys.stderr, flush=True)
        print(f"pysfsd: portmapper: {status}", file=sys.stderr, flush=True)
        self.listening = True
        self._announce()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopped.set)
        await self.stopped.wait()
        await discovery.stop()
        await self._stop_all()
        if self.failed:
            print(f"pysfsd: stopped: {self.failed}", file=sys.stderr, flush=True)
            return 1
        print("pysfsd: stopped", flush=True)
        return 0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    slot.pid = 0
                    if not self.stopping:
                        self._died(slot, pid, status)

    def _died(self, slot: _Slot, pid: int, status: int) -> None:
        if slot.ready is None or not slot.ready.done() or slot.ready.result().startswith("error"):
            return  # it died starting: ``_start`` reports why (its status pipe closed)
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.waitstatus_to_exitcode(status)}")
        now = time.monotonic()
        slot.deaths = [t for t in slot.deaths if now - t < RESTART_WINDOW] + [now]
        if len(slot.deaths) > MAX_RESTARTS:
            self.failed = (f"worker {slot.number} died {len(slot.deaths)} times in {RESTART_WINDOW:.0f} s "
                           f"(last: {how})")
            log.error("%s: stopping the server", self.failed)
            self.stopped.set()
            return
        log.error("worker %d (pid %d) died (%s): starting it again", slot.number, pid, how)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._restart(slot))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _restart(self, slot: _Slot) -> None:
        await asyncio.sleep(0.2)
        if self.stopping:
            return
        try:
            await self._start(slot)
        except ConfigError as exc:
            self.failed = f"worker {slot.number} cannot start again: {exc}"
            self.stopped.set()

    async def _stop_all(self) -> None:
        """The followers first, then the primary; each gets STOP_TIMEOUT, then SIGKILL."""
        self.stopping = True
        for group in (self.slots[1:], self.slots[:1]):
            for slot in group:
                if slot.pid:
                    _kill(slot.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(s.pid for s in group) and time.monotonic() < deadline:
                self._reap()
                await asyncio.sleep(0.05)
            for slot in group:
                if slot.pid:
                    log.error("worker %d (pid %d) did not stop in %.0f s: killing it", slot.number, slot.pid,
                              STOP_TIMEOUT)
                    _kill(slot.pid, signal.SIGKILL)
        while any(s.pid for s in self.slots):
            self._reap()
            await asyncio.sleep(0.05)


def before_fork() -> None:
    """Flush what is buffered (a worker would print it again), and move every object the
    parent holds (its modules: the workers' code, imported once here) to the collector's
    permanent generation, which no collection visits: a worker's full collection otherwise
    writes to each inherited object's header and copies every page of them (+5 MiB of
    private memory per worker at the first one; docs/design.rst, "Several worker
    processes": memory).  A collection first: the freeze would keep start-up's cyclic
    garbage for good, in the parent and in every worker; then the heap's free pages go
    back, so no worker inherits them (the parent 1.3 MiB smaller at rest: docs/design.rst,
    "Memory at rest")."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.collect()
    gc.freeze()
    trim_heap()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _child(config: "ServerConfig", role: WorkerRole, parent: int) -> int:
    """A worker's life, after fork: die with the parent, forget its event loop, serve."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass
    if os.getppid() != parent:  # the parent died before the line above
        return 1
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C: the parent stops us
    asyncio.events._set_running_loop(None)  # the parent's loop, copied: not ours
    asyncio.set_event_loop(None)
    # libuv (uvloop) accepts every pending connection at each wake-up; one at a time, then
    # a yield, lets the other workers, woken by the same listening socket, take the next
    # (the kernel client's nconnect=2 opens both at once: both went to one worker)
    os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
    from .cli.main import event_loop_runner, log_format
    for handler in logging.getLogger().handlers:  # PYSFSD_TRACE, -v: which worker says it
        handler.setFormatter(logging.Formatter(log_format(role.slot)))
    role.drc.attach(role.slot)
    if role.note_counts is not None:
        role.note_counts.attach(role.slot)
    if role.entry_events is not None:
        role.entry_events.attach()
    if role.shares is not None:
        role.shares.attach(role.slot)
    if role.fsyncs is not None:
        role.fsyncs.attach(role.slot)
    if role.journal_flag is not None:
        role.journal_flag.attach()
    return event_loop_runner()(_serve_worker(config, role))


async def _serve_worker(config: "ServerConfig", role: WorkerRole) -> int:
    from .app import NfsServer
    from .cli.main import _announce_index as announce_index
    try:
        server = NfsServer(config, role)
    except ConfigError as exc:
        role.report(f"error {exc}")
        return 2
    try:
        await server.start()
    except ConfigError as exc:
        role.report(f"error {exc}")
        await server.stop()
        return 2
    role.report("ready")
    loop = asyncio.get_running_loop()
    if role.primary:
        loop.create_task(announce_index(server, lambda line: role.report(f"indexed {line}")))
    else:
        async def indexed() -> None:
            await server.indexed.wait()
            role.report("indexed")
        loop.create_task(indexed())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()
    return 0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: ``taskset``, a cgroup's cpuset),
    not the machine's: a server pinned to one core gains nothing from a second worker."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cores_default() -> int:
    """The default of ``--workers`` without ``PYSFSD_WORKERS``: the usable cores, at most
    ``DEFAULT_MAX`` (also what ``--help`` shows)."""
    return min(usable_cores(), DEFAULT_MAX)


def default_count() -> int:
    """The default of ``--workers``: ``PYSFSD_WORKERS`` if it is a number from 1 up, else
    ``cores_default`` (docs/running.rst: Worker processes)."""
    text = os.environ.get("PYSFSD_WORKERS", "")
    return int(text) if text.isdigit() and int(text) >= 1 else cores_default()


def serve(config: "ServerConfig", count: int) -> int:
    """Run the parent: start the workers, supervise them, stop them."""
    async def main() -> int:
        return await Supervisor(config, count).run()
    return asyncio.run(main())


