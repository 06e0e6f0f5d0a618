"""Wiring: the LMDB store, the exports, the services, the dispatcher and the listeners."""
from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, cast

from protocol.mount3 import MOUNT3
from protocol.nfs3 import NFS3
from protocol.nlm4 import NLM4, NLM_PROGRAM
from protocol.nsm import SM, SM_PROGRAM

from .fs.dirsync import DirSync
from .nfs3.dirlist import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, EntryCache, NotingIndex
from .rpc.dispatch import Dispatcher
from .rpc.drc import DuplicateRequestCache
from .state.store import Store
from .fs import identity
from .shared import cluster
from .config.errors import ConfigError
from .exports.guard import ExportPolicy, GuardedNfs3
from .exports.rules import load_exports
from .index import Index
from .index.writer_channel import (READY, STAT_READY, FollowerIndex, NoteSender, NotesInbox, Uncounted,
                                   WriterIndex)
from .fs.localfs import LocalFS
from .fs import idlefd
from .fs.idlefd import IDLE_FD_SECONDS
from .heaptrim import HeapTrim, trim_heap
from . import memtrace
from .fs.shared_verifier import WriteVerifier
from .locks.monitor import MonitorRecords
from .locks.relay import LockForwarder, LockRelay
from .locks.service import LockService
from .nfs3.entry_events import FollowerEntryCache, PublishedEntryCache
from .nfs3.mount_service import MountService
from .nfs3.procedures import offloads
from .nfs3.service import Nfs3Service
from .fs.semantic import SemanticFS
from .discovery.portmap_service import PMAP_PORT, Discovery
from .rpc.server import (LISTEN_BACKLOG, ConnectionLimits, RpcDatagramProtocol, RpcStreamProtocol,
                         connection_cap, listen_rpc, reap_connections)
from .rpc.server import activity as connection_activity
from .config.preflight import check_export, listen_error, open_store
from .state.statelock import StateBusy, hold_server, hold_shared, release
from .rpc.trace import trace_level
from .config.transducers import TransducerSettings, build as build_transducers
from .fs.watch import TreeWatcher

if TYPE_CHECKING:
    from .workers import BalancedAcceptor, WorkerRole

log = logging.getLogger("pysfsd")
# Start-up progress a person waits for (a first index's fields as they become ready): not a
# warning; the command line prints it as ``pysfsd: ...`` on stderr (nfsd/cli/main.py).
progress = logging.getLogger("pysfsd.progress")

def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "pysfsd")


# The cyclic collector's thresholds (Python's: 700, 10, 10).  A large listing or query fault
# makes tens of thousands of short-lived tuples (results, entries, attributes) that hold no
# cycles; at 700 the collector ran every ~200 entries and a full collection now and then
# inside the listing: at 1M files ~15 ms of a 10,000-result first listing's ~95 ms of server
# CPU, and 15 of a second one's 50 (scripts/benchmarks/bench_semantic.py; docs/design.rst).
GC_THRESHOLDS = (20_000, 20, 20)

# With --workers, the writer's flags (nfsd/index/writer_channel.py, one byte) carry above
# READY and STAT_READY how many content passes of a first index are done, so a follower's
# content fields answer pass by pass too (``_follow_index``), not all at the end
_PASSES_SHIFT, _MAX_PASSES = 2, 63

# The watcher reads inotify events at most this often (seconds): with --workers the other
# workers' changes then cost the primary one wake-up per period, not one per change
# (nfsd/fs/watch.py ``TreeWatcher.gather``; docs/design.rst, "Several worker processes"),
# and with one worker the echoes of a lone client's own changes cost one per period, not
# an event-loop turn per call (docs/design.rst, "Eighth pass").
WATCH_GATHER = 0.01
# ... and read in a call's burst's loop turn once that period has passed; a timer reads
# them after this long (seconds) only when no call came meanwhile (``TreeWatcher.on_burst``:
# the 10 ms timer mostly fell due while a lone client's server slept, and woke it).
WATCH_LATE = 0.05
#: While the index is idle the periodic flush (every 0.5 s) goes to the thread pool only
#: every this many looks (``NfsServer._flush_periodically``).
IDLE_MAINTAIN = 20


@dataclass
class ServerConfig:
    exports: list[str]         # directories, or exports(5) lines (see nfsd/exports/rules.py)
    exports_file: str | None = None  # --exports FILE, the /etc/exports syntax
    bind: str = "0.0.0.0"
    port: int = 2049
    state_dir: str = field(default_factory=default_state_dir)
    max_record: int = (1 << 20) + (64 << 10)  # a 1 MiB WRITE plus its headers
    threads: int = 8
    results: str = "links"     # value directories hold symlinks ("links") or the files
    watch: bool = True         # follow changes made behind the server's back (inotify)
    progress: bool | None = None  # scan progress bar: None = when stderr is a terminal
    portmap: bool = False      # serve a portmapper on portmap_port when none runs there
    portmap_port: int = PMAP_PORT
    register: bool = True      # register with the host's rpcbind (--no-register: leave it alone)
    idle_timeout: float = 360.0   # close a TCP connection idle this long (s)
    stall_timeout: float = 120.0  # ... or stalled mid-record, or not reading its replies
    attr_cache_seconds: float = DEFAULT_MAX_AGE  # listed entries' attributes kept without an event
    attr_cache_bytes: int = DEFAULT_MAX_BYTES    # ... in at most this much memory
    transducers: TransducerSettings = field(default_factory=TransducerSettings)
    locks: bool = True         # serve NLM v4 and NSM (byte-range locks, docs/locks.rst)
    grace_period: float = 90.0  # after a restart with locks held: only reclaims (s)
    client_portmap_port: int = PMAP_PORT  # where lock callbacks find clients' portmappers (tests)
    nsm_name: str | None = None  # our name in SM_NOTIFY after a restart (default: our address)
    shared_state: str | None = None  # PostgreSQL URL: a head of a cluster (docs/cluster.rst)
    shared_scan_seconds: float = 30.0  # the scanner head's pass interval (0: never scan)
    workers: int = 1           # server processes (nfsd/workers.py); this object is one of them
    idle_fd_seconds: float = IDLE_FD_SECONDS  # close files' I/O descriptors idle 1-2 times this (nfsd/fs/idlefd.py)


# CPython's GIL switch interval while the periodic index flush runs in a pool thread beside the
# calls (its default is 5 ms).  The event loop gives the GIL up at each of its system calls (a
# lone CREATE makes about ten); a flush thread computing in Python takes it meanwhile and
# keeps it until its own next system call or the interval's end: up to 5 ms each time, against
# a lone call's ~0.3 ms (docs/design.rst, "Seventh pass", branch ``lone2``).
FLUSH_SWITCH_INTERVAL = 0.0005


class _BriskSwitching:
    """Around work in pool threads that competes with the event loop for the GIL: the switch
    interval is ``FLUSH_SWITCH_INTERVAL`` while any of it runs, as it was otherwise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._saved = 0.0

    def wrap(self, work: Callable[[], Any]) -> Callable[[], Any]:
        def briskly() -> Any:
            with self._lock:
                if not self._running:
                    self._saved = sys.getswitchinterval()
                    sys.setswitchinterval(min(self._saved, FLUSH_SWITCH_INTERVAL))
                self._running += 1
            try:
                return work()
            finally:
                with self._lock:
                    self._running -= 1
                    if not self._running:
                        sys.setswitchinterval(self._saved)
        return briskly


brisk_switching = _BriskSwitching()


def share_burst(dispatcher: Dispatcher, store: Store, dirsync: DirSync) -> None:
    """The handle table's group commit (once the burst's replies may leave; for replies held
    for their directory fsync, once per fsync job: ``Dispatcher.before_replies``) and the
    deferred directory fsyncs the replies wait for read the dispatcher's burst, and run at
    its end only when they deferred something in it (nfsd/rpc/burst.py)."""
    store.burst = dispatcher.burst
    dispatcher.before_replies.append(store.commit_later)
    dirsync.share_burst(dispatcher.burst)


def _chained(first: Callable[[], None], then: Callable[[], None] | None) -> Callable[[], None]:
    def both() -> None:
        first()
        if then is not None:
            then()
    return both


def store_path(state_dir: str, roots: list[str]) -> str:
    """The LMDB environment of a set of exports: one per set keeps unrelated servers apart
    (the index and query commands open the same one)."""
    roots = sorted(os.path.realpath(r) for r in roots)
    digest = hashlib.sha256("\0".join(roots).encode()).hexdigest()[:16]
    return os.path.join(os.path.realpath(state_dir), digest)


class NfsServer:
    """The server, or with ``role`` one worker process of it (nfsd/workers.py): a follower
    (not the primary) holds no store locks, writes no index and serves no locks."""

    def __init__(self, config: ServerConfig, role: "WorkerRole | None" = None) -> None:
        self.config = config
        self.role = role
        follower = role is not None and not role.primary
        self.export_rules = load_exports(config.exports, config.exports_file)
        try:
            identity.self_test()
        except OSError as exc:
            raise ConfigError(str(exc)) from None
        if identity.SERVER.uid == 0 and not identity.ACTING:
            raise ConfigError("running as root on a platform where pysfsd cannot act as its callers "
                              "(per-thread credentials); run it as an ordinary user")
        roots = [e.path for e in self.export_rules]
        for root in roots:
            check_export(root, config.state_dir)
        transducers, self.sandbox = build_transducers(config.transducers)  # TransducerSpecError
        try:
            self.store = open_store(config.state_dir, store_path(config.state_dir, roots))
            self._server_hold = self._state_hold = -1  # a follower: the primary holds them
            try:
                if not follower:
                    # one server per store; named by the parent of workers, which stops them all
                    self._server_hold = hold_server(self.store.path, os.getppid() if role is not None else None)
                    try:
                        self._state_hold = hold_shared(self.store.path)  # no repair while we serve
                    except StateBusy:
                        release(self._server_hold)
                        raise
            except StateBusy:
                self.store.close()
                raise
        except ConfigError:
            if self.sandbox is not None:
                self.sandbox.close()
            raise
        # One write verifier for every worker (nfsd/fs/shared_verifier.py): fixed per boot by
        # the primary's first start, different after a restart (clients resend uncommitted
        # writes); a worker started later (or again) answers the one set, reset or not.
        self.write_verifier = (role.write_verifier if role is not None and role.write_verifier is not None
                               else WriteVerifier())
        if self.write_verifier.is_set():  # a worker started after the primary
            self.boot = self.write_verifier.boot
        else:
            self.boot = self.store.next_boot()
            self.write_verifier.set(self.boot.to_bytes(4, "big") + os.urandom(4))
        try:
            self.shared = cluster.join(config.shared_state, self.store, roots)  # None on a single host
        except ConfigError:  # PostgreSQL unreachable: let go of what was opened
            self.store.close()
            release(self._state_hold)
            release(self._server_hold)
            if self.sandbox is not None:
                self.sandbox.close()
            raise
        if not follower and role is not None and role.journal_flag is not None:
            # workers: the primary keeps the journal while no other worker serves a connection
            self.store.share_journal(role.journal_flag, alone=role.shares.others_idle
                                     if role.shares is not None else lambda: False)
        if not follower:  # places a killed server journaled; lone bursts journal them
            self.store.open_journal(append=self.shared is None)
        self.exports: dict[int, SemanticFS] = {}
        self.dirsync = DirSync()  # directory fsyncs, deferred to a burst's end (nfsd/fs/dirsync.py)
        if role is not None and role.fsyncs is not None:  # ... and shared by the workers
            self.dirsync.share_with(role.fsyncs)
        sender = (NoteSender(role.channels[0], role.note_counts, role.slot, role.inbox_wake[1])
                  if follower and role is not None else None)
        if sender is not None and role is not None and role.journal_flag is not None:
            # the primary's journal holds places: it folds them before we touch the table
            self.store.share_journal(role.journal_flag, ask_fold=lambda: sender.flush(0, kind=b"P") is not None)
        writers: list[Index] = []
        for root in roots:
            eid = self.store.export_id(root) if self.shared is None else cluster.export_id(self.shared, self.store, root)
            local = LocalFS(root, eid, self.store, dirsync=self.dirsync)
            index: Index
            if sender is not None:
                index = FollowerIndex(self.store.env, root, eid, sender, transducers=transducers)
            else:
                if role is not None:  # the writer of several workers
                    index = WriterIndex(self.store.env, root, eid, transducers=transducers)
                    index.note_counts, index.siblings = role.note_counts, writers
                    writers.append(index)
                else:
                    index = Index(self.store.env, root, eid, transducers=transducers)
                index.on_vanished = local.vanished  # records of files deleted behind our back go too
                index.on_purged = local.purged  # tombstones go when the index forgets the file
            if role is not None:
                local.sole_writer = False  # other workers change the handle table too
            self.exports[eid] = SemanticFS(local, cluster.publishing(index, self.shared, eid),
                                          config.results)
        self.executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="pysfsd-io")
        # Workers: only the primary watches the trees; followers' caches read its changes.
        events = role.entry_events if role is not None else None
        entries = (FollowerEntryCache(events, config.attr_cache_bytes, config.attr_cache_seconds)
                   if follower and events is not None
                   else EntryCache(config.attr_cache_bytes, config.attr_cache_seconds))
        self.nfs = Nfs3Service(self.exports, self.store, self.write_verifier, entries)
        # (the wrapper passes for an EntryCache: it forwards what it does not override)
        self.watched_entries = cast(EntryCache, PublishedEntryCache(entries, events)
                                    if events is not None and not follower else entries)
        # Who may use each export, and as whom: the NFS handlers sit behind the guard.
        self.policy = ExportPolicy({fs.export_id: rules for fs, rules in zip(self.exports.values(), self.export_rules)})
        self.mount = MountService(self.exports, self.policy)
        # Workers share one duplicate-request cache: a retransmission may reach another one.
        self.dispatcher = Dispatcher(self.executor, trace_level(),
                                     role.drc if role is not None else DuplicateRequestCache())
        self.dirsync.defer_in_bursts(self.executor)
        self.dirsync.inline_when(connection_activity.alone,  # a lone client's fsyncs on the loop
                                 connection_activity.one_at_a_time)
        self.nfs.lone_call = connection_activity.lone_call  # and its small stable WRITEs
        self.nfs.burst = self.dispatcher.burst  # READs inline from the page cache
        share_burst(self.dispatcher, self.store, self.dirsync)
        if sender is not None:  # a follower's index notes leave once per burst too, before the replies
            self.dispatcher.bursts.append((sender.begin_burst, sender.end_burst))
        if self.shared is not None:  # ... and for their change-log rows (nfsd/shared/state.py)
            self.shared.defer_in_bursts(self.executor)
            self.dispatcher.bursts.append((self.shared.begin_burst, self.shared.end_burst))
        # Which calls run in threads: nfsd/nfs3/procedures.py, beside each procedure.
        guarded = GuardedNfs3(self.nfs, self.policy)
        self.dispatcher.register(NFS3, guarded, offloads(self.nfs), guarded.handlers)
        self.dispatcher.register(MOUNT3, self.mount)
        self.locks: LockService | None = None
        if config.locks and not follower:  # lock state lives in one process
            self.locks = LockService(self.exports, MonitorRecords(self.store.path + ".nlm"), self.policy,
                                     config.grace_period, config.client_portmap_port, config.nsm_name)
            self.dispatcher.register(NLM4, self.locks.nlm)
            self.dispatcher.register(SM, self.locks.nsm)
        # Workers: the primary holds the lock table; the others relay NLM/NSM calls to it.
        self.lock_relay: LockRelay | LockForwarder | None = None
        if config.locks and role is not None and role.lock_channels:
            if follower:
                self.lock_relay = forwarder = LockForwarder(role.lock_channels[0])
                self.dispatcher.forward(NLM_PROGRAM, forwarder.forward)
                self.dispatcher.forward(SM_PROGRAM, forwarder.forward)
            else:
                self.lock_relay = LockRelay(role.lock_channels, self.dispatcher.dispatch)
        self.connections: set[RpcStreamProtocol] = set()
        self.acceptor: "BalancedAcceptor | None" = None  # workers: accepts on the shared socket
        self._servers: list[asyncio.base_events.Server] = []
        self._background: list[asyncio.Task[None]] = []
        self.indexed = asyncio.Event()  # every export's start-up scan is done
        self.scan_stats: dict[str, object] = {}
        self.discovery = Discovery()  # rpcbind registration or the embedded portmapper
        self.inbox: NotesInbox | None = None  # the index writer's end of the followers' notes
        self._passes_done: dict[int, int] = {}  # per export: content passes of a first index done
        if role is not None and role.primary and role.channels:
            self.inbox = NotesInbox({eid: fs.index for eid, fs in self.exports.items()}, role.channels,
                                    self._index_flags, role.inbox_wake[0], self.store.fold_journal)

    def _index_flags(self, export_id: int) -> int:
        fs = self.exports[export_id]
        passes = min(self._passes_done.get(export_id, 0), _MAX_PASSES)
        return ((READY if fs.ready.is_set() else 0) | (STAT_READY if fs.stat_ready.is_set() else 0)
                | passes << _PASSES_SHIFT)

    async def start(self) -> tuple[str, int]:
        """Listen at once; index the exports in the background.  Real files are served
        meanwhile; a call to a query directory is held (or, past the hold's bounds, answered
        JUKEBOX: retry later) until the fields it uses are indexed (nfsd/fs/indexwaits.py)."""
        loop = asyncio.get_running_loop()
        gc.set_threshold(*GC_THRESHOLDS)
        memtrace.install(loop, "main" if self.role is None else f"w{self.role.slot}")  # debugging only
        limits = ConnectionLimits(self.config.idle_timeout, self.config.stall_timeout, connection_cap())
        # TCP and UDP on one port number; the UDP endpoint joins self.connections.
        def stream() -> RpcStreamProtocol:
            return RpcStreamProtocol(self.dispatcher, self.connections, self.config.max_record, limits=limits)

        def datagram() -> RpcDatagramProtocol:
            return RpcDatagramProtocol(self.dispatcher, self.connections)
        role = self.role
        if role is not None:  # the parent bound them (nfsd/workers.py)
            if role.shares is not None:  # connections spread evenly over the workers
                from .workers import BalancedAcceptor
                # (TCP connections: the UDP endpoint is among ``connections`` too, in every
                # worker, and would never let the primary take a follower for idle)
                self.acceptor = BalancedAcceptor(role.tcp, stream, role.shares, lambda: sum(
                    1 for c in self.connections if isinstance(c, RpcStreamProtocol)))
                self.acceptor.start()
            else:
                self._servers.append(await loop.create_server(stream, sock=role.tcp, backlog=LISTEN_BACKLOG))
            await loop.create_datagram_endpoint(datagram, sock=role.udp)
        else:
            try:
                server, _, _ = await listen_rpc(self.config.bind, self.config.port, stream, datagram)
            except OSError as exc:
                raise listen_error(self.config.bind, self.config.port, exc) from None
            self._servers.append(server)
        self._background.append(loop.create_task(self._sync_periodically()))
        self._background.append(loop.create_task(self._close_idle_periodically()))
        self._background.append(loop.create_task(reap_connections(self.connections, limits)))
        self._background.append(loop.create_task(self._index_all()))
        if self.inbox is not None:
            self.inbox.start()
        host, port = (role.tcp if role is not None else server.sockets[0]).getsockname()[:2]
        if self.locks is not None:
            self.locks.start()
        if self.lock_relay is not None:
            self.lock_relay.start()
        if role is not None:
            return host, port  # the parent registers with the portmapper
        try:
            await self.discovery.start(host, port, self.config.portmap, self.config.portmap_port,
                                       self.dispatcher.trace_level, self.config.register,
                                       self.locks is not None)
        except OSError as exc:
            raise listen_error(host, self.config.portmap_port, exc, "serve the portmapper (--portmap)") from None
        return host, port

    async def _index_all(self) -> None:
        if self.role is not None and not self.role.primary:
            await self._follow_index()
            return
        for fs in self.exports.values():
            try:
                await self._index_export(fs)
            except Exception:
                log.exception("indexing %s failed; its query directories answer from what was indexed",
                              fs.root_path)
            fs.ready.set()
            fs.index_waits.progressed()  # held directory faults run again
        self.indexed.set()
        if self.shared is not None:  # apply the other heads' changes from now on
            cluster.follow(self.shared, self.store, self.exports, self.nfs.entries,
                           self.config.shared_scan_seconds)
        for fs in self.exports.values():
            self._background.append(asyncio.get_running_loop().create_task(self._flush_periodically(fs)))

    async def _follow_index(self) -> None:
        """A follower: watches nothing (its entry cache reads the primary's watcher's
        changes, nfsd/nfs3/entry_events.py), and learns from the writer when its scans are
        done."""
        loop = asyncio.get_running_loop()
        if self.config.watch:
            for fs in self.exports.values():
                self.nfs.entries.enable(fs.export_id)
        pending = dict(self.exports)
        while pending:
            for eid, fs in list(pending.items()):
                assert isinstance(fs.index, FollowerIndex)
                await loop.run_in_executor(self.executor, fs.index.flush)
                flags = fs.index.writer_flags
                was = (fs.stat_ready.is_set(), fs.ready_fields)
                if flags & STAT_READY:
                    fs.stat_ready.set()
                for part in fs.index.content_passes()[:flags >> _PASSES_SHIFT]:  # as the writer's
                    fs.ready_fields |= fs.index.ready_after(part)
                if flags & READY:
                    fs.stat_ready.set()
                    fs.ready.set()
                    del pending[eid]
                if fs.ready.is_set() or was != (fs.stat_ready.is_set(), fs.ready_fields):
                    fs.index_waits.progressed()  # held directory faults run again
            if pending:
                await asyncio.sleep(0.25)
        self.indexed.set()

    async def _sync_periodically(self) -> None:
        """The handle table is written without fsync; flush it once a second, when anything
        was written since (``Store.unsynced``: an idle server makes no thread hop)."""
        while True:
            await asyncio.sleep(1.0)
            if self.store.unsynced():
                await asyncio.get_running_loop().run_in_executor(self.executor, self.store.sync)

    async def _close_idle_periodically(self) -> None:
        """Close the I/O descriptors of files idle for a while (nfsd/fs/idlefd.py): the look is
        made on the event loop (a pass over the node cache, no thread hop); only an fdatasync
        of data no COMMIT made durable goes to the thread pool.  The same tick gives a quiet
        server's free heap back (nfsd/heaptrim.py), after closing what only extraction holds."""
        loop = asyncio.get_running_loop()
        heap = HeapTrim(trim=self._release_idle)
        while True:
            await asyncio.sleep(self.config.idle_fd_seconds)
            heap.look(self.config.idle_fd_seconds)
            for fs in self.exports.values():
                try:
                    taken = fs.local.detach_idle()
                    if idlefd.needs_sync(taken):
                        await loop.run_in_executor(self.executor, idlefd.close_detached, taken,
                                                   self._write_error)
                    elif taken:
                        idlefd.close_detached(taken, self._write_error)
                except Exception:
                    log.exception("closing idle descriptors failed")

    def _release_idle(self) -> None:
        """A quiet spell after a busy one (``HeapTrim``): the indexes close their libmagic
        handles (16 MiB of the primary's RSS for two, docs/design.rst: "Memory at rest"),
        then the free heap, theirs among it, goes back to the system."""
        for fs in self.exports.values():
            fs.index.release_idle()
        trim_heap()

    def _write_error(self) -> None:
        log.error("write-back error on a file idle with unCOMMITted data: new write verifier, "
                  "clients resend their unstable writes")
        self.nfs.reset_write_verifier()

    async def _index_export(self, fs: SemanticFS) -> None:
        """Watch first (so nothing changed during the scan is missed), then scan: the first
        time everything, later only what changed since (progress bar on a terminal)."""
        loop = asyncio.get_running_loop()
        index = cluster.watched(fs.index)
        if self.config.watch:
            entries = self.watched_entries

            def rescan() -> Any:
                entries.clear(fs.export_id)  # events were lost: cached entries may be stale
                return loop.run_in_executor(self.executor, index.scan, False)
            watched = (Uncounted(index) if self.role is None else  # workers: see ``Uncounted``
                       Uncounted(index, functools.partial(entries.changed, fs.export_id)))
            watcher = TreeWatcher(fs.root_path, NotingIndex(watched, entries, fs.export_id), rescan,
                                  WATCH_GATHER, WATCH_LATE)
            if watcher.gather > 0:  # events it has not read yet are noted before each flush
                fs.index.before_flush = _chained(watcher.catch_up, fs.index.before_flush)
                # ... and, once a period has passed, in a burst of calls' loop turn
                self.dispatcher.burst_starts.append(watcher.on_burst)
            task = loop.create_task(watcher.run())
            self._background.append(task)
            ready = loop.create_task(watcher.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if task.done() and task.exception() is not None:
                log.warning("not watching %s for outside changes: %s", fs.root_path, task.exception())
            else:
                entries.enable(fs.export_id)  # its listings may now come from the entry cache
        if index.is_new():  # the stat tier first: name, ext, owner... answer in seconds
            first = await loop.run_in_executor(self.executor, index.scan, self.config.progress, True)
            fs.stat_ready.set()
            fs.index_waits.progressed()
            progress.info("%s: name, ext, owner, group, size and mtime ready (%d files, %.1f s, %.0f files/s);"
                        " content fields follow", fs.root_path, first.seen, first.seconds, first.rate)
            stats = first
            for part in index.content_passes():  # then each content field as soon as it is complete
                stats = await loop.run_in_executor(self.executor, functools.partial(
                    index.scan, self.config.progress, False, first.seen, part))
                ready = index.ready_after(part) - fs.ready_fields
                fs.ready_fields |= ready
                if ready:
                    fs.index_waits.progressed()
                self._passes_done[fs.export_id] = self._passes_done.get(fs.export_id, 0) + 1  # followers too
                if ready:
                    progress.info("%s: %s ready (%.1f s, %.0f files/s)", fs.root_path,
                                ", ".join(f.decode() for f in sorted(ready)), stats.seconds, stats.rate)
        else:
            stats = await loop.run_in_executor(self.executor, index.scan, self.config.progress, False)
        self.scan_stats[fs.root_path] = stats  # Index.scan has logged it

    async def _flush_periodically(self, fs: SemanticFS) -> None:
        """Apply queued index notes (inotify events, writes) twice a second (and redo a scan
        a full store cut short, once it has space).  While the index is idle (``Index.idle``)
        only every IDLE_MAINTAIN-th look goes to the thread pool (the map's trim, whatever the
        watcher and the followers' channels hold unread): an idle server's hop there and back
        woke two threads twice a second."""
        loop = asyncio.get_running_loop()
        skipped = 0
        while True:
            await asyncio.sleep(0.5)
            if skipped < IDLE_MAINTAIN - 1 and fs.index.idle():
                skipped += 1
                continue
            skipped = 0
            try:
                await loop.run_in_executor(self.executor, brisk_switching.wrap(fs.index.maintain))
            except Exception:
                log.exception("index flush failed")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, let in-flight calls finish and answer, then close everything."""
        await self.discovery.stop()  # first: clients must not be sent to a closing port
        follower = self.role is not None and not self.role.primary
        for server in self._servers:
            server.close()
        if self.acceptor is not None:
            self.acceptor.stop()
        self.dispatcher.held.release()  # held calls answer "try again" (nfsd/rpc/held.py)
        pending = [t for c in self.connections for t in c.tasks]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self.lock_relay is not None:
            self.lock_relay.stop()
        if self.locks is not None:
            await self.locks.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.executor.shutdown(wait=True)
        log.info("entry cache: %s", self.nfs.entries.stats())  # bytes per cached entry among them
        if self.inbox is not None:
            self.inbox.stop()  # what followers noted last is in the queue for the flush below
        if self.shared is not None:
            cluster.leave(self.shared, self.store)  # what this head changed last is published first
        for fs in self.exports.values():
            fs.close()
            if fs.ready.is_set() and not follower:  # what clients changed last is in the index at the next start
                try:
                    fs.index.flush()
                except Exception:
                    log.exception("index flush at shutdown failed")
            fs.index.close()
        if self.sandbox is not None:
            self.sandbox.close()
        self.store.close()
        if self._state_hold >= 0:
            release(self._state_hold)
            release(self._server_hold)
