"""The measured loop: N connections, each keeping D op scripts in flight, for a fixed time.

Each in-flight position (a ``Slot``) starts a new op as soon as its previous one finished, so
the server always has D calls queued per connection (multi-call ops keep one call in flight
per slot, as a real client would for a dependent sequence).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from time import perf_counter
from typing import Callable, Iterable

from protocol import nfs3
from protocol.mount3 import MOUNT3, mountstat3
from protocol.nfs3 import NFS3, nfsstat3
from protocol.rpc import AUTH_SYS, Credentials

from memory import Memory, read_memory  # scripts/load/memory.py (on the path loadgen sets)
from nfsd.rpc.client import CallEncoder, RawConnection, RpcConnection, connect, connect_raw
from workload import (LISTING_MAX, LISTING_TAIL, OPS, ConnContext, Exhausted, Handles,
                      Mismatch, OpScript)
from servers import network_namespace

CRED = Credentials(AUTH_SYS, uid=0, gid=0, gids=(), machinename=b"bench")
HOST = "127.0.0.1"  # loopback only, ever


@dataclass(frozen=True)
class Target:
    """A server ready to be measured (picklable: sent to generator processes)."""

    name: str
    port: int
    mount_port: int
    handles: Handles
    pid: int | None  # for its CPU time; None when not known
    netns_pid: int | None = None  # a process in the server's private network namespace, if any


@dataclass(frozen=True)
class Settings:
    """Load shape of every run (per generator process)."""

    connections: int
    depth: int
    seconds: float
    warmup: float
    drain_timeout: float


@dataclass
class RunResult:
    """One process's figures for one (target, op) run; ``merge`` adds up processes."""

    ops: int = 0
    nbytes: int = 0
    window: float = 0.0               # seconds over which ops were counted
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    client_cpu: float = 0.0           # CPU seconds of the generator processes in the window
    client_cpu_max: float = 0.0       # ...of the busiest one (saturated near the window's length)
    server_cpu: float | None = None   # CPU seconds of the server in the window, plus what it left behind
    server_cpu_after: float | None = None  # ...of which after the window, until the server settled
    machine_cpu: float | None = None  # CPU seconds of every process in the window
    server_rss: float | None = None   # the server's VmRSS (MiB) at the end of the window, its processes summed
    server_cpu_split: list[float] | None = None  # CPU seconds per server process (the parent first)
    server_rss_split: list[float] | None = None  # VmRSS per server process (MiB), the same order
    server_sleeps: int | None = None  # voluntary context switches of every server thread in the window

    def merge(self, other: RunResult) -> None:
        self.ops += other.ops
        self.nbytes += other.nbytes
        self.window = max(self.window, other.window)
        self.latencies += other.latencies
        for reason, count in other.errors.items():
            self.errors[reason] = self.errors.get(reason, 0) + count
        self.client_cpu += other.client_cpu
        self.client_cpu_max = max(self.client_cpu_max, other.client_cpu_max)
        if other.server_cpu is not None:
            self.server_cpu = other.server_cpu
        if other.server_cpu_after is not None:
            self.server_cpu_after = other.server_cpu_after
        if other.machine_cpu is not None:
            self.machine_cpu = other.machine_cpu
        if other.server_rss is not None:
            self.server_rss = other.server_rss
        if other.server_cpu_split is not None:
            self.server_cpu_split = other.server_cpu_split
        if other.server_rss_split is not None:
            self.server_rss_split = other.server_rss_split
        if other.server_sleeps is not None:
            self.server_sleeps = other.server_sleeps


class RunStats:
    """Counters shared by the slots of one run; only ops finishing inside [begin, end) count,
    errors count over the whole run.  A run ends early when every slot has stopped (REMOVE
    once the created names are gone): ``stopped_at`` then closes the counting window."""

    __slots__ = ("begin", "end", "ops", "nbytes", "latencies", "errors", "active", "idle", "stopped_at")

    def __init__(self, begin: float, end: float, slots: int) -> None:
        self.begin, self.end = begin, end
        self.ops = self.nbytes = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.active = slots
        self.idle: asyncio.Future[None] | None = None
        self.stopped_at: float | None = None

    def op_done(self, t0: float, nbytes: int) -> None:
        now = perf_counter()
        if self.begin <= now < self.end:
            self.ops += 1
            self.nbytes += nbytes
            self.latencies.append(now - t0)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def slot_stopped(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.stopped_at = perf_counter()
            if self.idle is not None and not self.idle.done():
                self.idle.set_result(None)


class Slot:
    """One in-flight position over a decoding ``RpcConnection`` (scripts/load's mixed ops,
    which check reply contents); the benchmark's own runs use ``RawSlot``."""

    __slots__ = ("conn", "script", "ctx", "stats", "gen", "t0", "on_reply")

    def __init__(self, conn: RpcConnection, script: Callable[[ConnContext], OpScript], ctx: ConnContext,
                 stats: RunStats) -> None:
        self.conn, self.script, self.ctx, self.stats = conn, script, ctx, stats
        self.gen: OpScript | None = None
        self.t0 = 0.0
        self.on_reply = self._on_reply  # bind once: it is passed with every call

    def start(self) -> None:
        now = perf_counter()
        if now >= self.stats.end or self.conn.closed:
            self.stats.slot_stopped()
            return
        self.t0 = now
        self.gen = self.script(self.ctx)
        self._step(None)

    # what a script may raise to stop its slot for good (RawSlot: ``Exhausted``)
    _stops: tuple[type[BaseException], ...] = ()

    def _step(self, value: object) -> None:
        """Give the script the last reply; send the call it yields next, or count the op
        it finished and start the next."""
        try:
            call = self.gen.send(value)  # type: ignore[union-attr]
        except StopIteration as stop:
            self.stats.op_done(self.t0, stop.value)
            self.start()
            return
        except Mismatch as exc:
            self.stats.error(str(exc))
            self.start()
            return
        except self._stops:
            self.stats.slot_stopped()
            return
        self._send(call)

    def _send(self, call: tuple[int, object]) -> None:
        proc, args = call
        self.conn.send(proc, args, self.on_reply)

    def _on_reply(self, result: object, error: str | None) -> None:
        body = result
        if error is None and result.__class__ is tuple:  # (nfsstat3, resok or resfail)
            status, body = result
            if status:
                error = nfsstat3.values(status).name
        if error is not None:
            self.gen.close()  # type: ignore[union-attr]
            self.stats.error(error)
            self.start()
            return
        self._step(body)


class RawSlot(Slot):
    """A slot over a ``RawConnection``: its scripts yield (record, payload) and get back
    (reply size, last bytes); nothing is decoded.  ``Exhausted`` stops the slot."""

    __slots__ = ()
    _stops = (Exhausted,)

    def _send(self, call: tuple[bytes, bytes | None]) -> None:
        record, payload = call
        self.conn.send(record, self.on_reply, payload)

    def _on_reply(self, status: int, size: int, tail: bytes, error: str | None) -> None:
        if error is None and status:
            error = nfsstat3.values(status).name if status in _NFSSTAT else f"nfsstat {status}"
        if error is not None:
            self.gen.close()  # type: ignore[union-attr]
            self.stats.error(error)
            self.start()
            return
        self._step((size, tail))


_NFSSTAT = {int(v) for v in nfsstat3.values}


def server_cpu_by_process(pid: int | None) -> dict[int, float] | None:
    """utime+stime (seconds) of a process and of each of its direct children (a server may
    fork workers), by pid, the process itself first; None when it is gone."""
    if pid is None:
        return None
    ticks: dict[int, int] = {}
    for entry in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if entry == pid or int(fields[1]) == pid:
            ticks[entry] = int(fields[11]) + int(fields[12])
    if pid not in ticks:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return {p: ticks[p] / hz for p in [pid, *sorted(p for p in ticks if p != pid)]}


def server_sleeps(pid: int | None) -> int | None:
    """Voluntary context switches so far of every thread of a server and of its direct
    children (its workers): each is a thread going to sleep (waiting in epoll for calls,
    for the GIL, for a lock, for the disk), and waking again costs a context switch and
    cold caches, so sleeps per call say how many calls each wake-up found.  Threads that
    ended are not counted."""
    if pid is None:
        return None
    found: list[int] = []
    for proc in server_pids(pid):
        try:
            tasks = os.listdir(f"/proc/{proc}/task")
        except OSError:
            continue
        found += _proc_fields((f"/proc/{proc}/task/{task}/status" for task in tasks), "voluntary_ctxt_switches:")
    return sum(found) if found else None


def _proc_fields(paths: Iterable[str], prefix: str) -> list[int]:
    """The number after ``prefix`` at the start of a line, in each of the /proc files
    ``paths`` that has one (a file gone meanwhile, a process or thread that ended, is left out)."""
    found: list[int] = []
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(prefix):
                        found.append(int(line.split()[1]))
                        break
        except OSError:
            continue
    return found


def server_cpu_seconds(pid: int | None) -> float | None:
    """utime+stime of a process and its direct children (a server may fork workers)."""
    split = server_cpu_by_process(pid)
    return None if split is None else sum(split.values())


def cpu_split(before: dict[int, float] | None, after: dict[int, float] | None) -> list[float] | None:
    """CPU seconds each process used between two ``server_cpu_by_process`` readings (a
    worker started in between counts from zero)."""
    if before is None or after is None:
        return None
    return [after[p] - before.get(p, 0.0) for p in after]


def server_pids(pid: int) -> list[int]:
    """A server process and its direct children (its workers), the process itself first."""
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return [pid, *sorted(children)]


def server_memory(pid: int) -> list[Memory]:
    """The memory of each of a server's processes (``server_pids``)."""
    found = [read_memory(p) for p in server_pids(pid)]
    return [m for m in found if m is not None]


def server_pss(pid: int) -> float | None:
    """The server's processes' proportional set size (MiB) summed: a page they share (the
    parent's memory the workers inherited, LMDB's map) counts once, not once per process
    as summed VmRSS counts it."""
    found = _proc_fields((f"/proc/{p}/smaps_rollup" for p in server_pids(pid)), "Pss:")
    return sum(found) / 1024 if found else None


def summed(memories: list[Memory]) -> Memory | None:
    """The processes' memory added up (VmRSS counts the pages they share once per process)."""
    if not memories:
        return None
    return Memory(*(sum(getattr(m, f) for m in memories) for f in ("rss", "hwm", "anon", "file")))


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine: with client and server subtracted, what other
    processes took, i.e. how noisy the run was."""
    with open("/proc/stat", "rb") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def settled_cpu(pid: int, quiet: float = 0.10, longest: float = 20.0) -> dict[int, float] | None:
    """Wait until the server is nearly idle (under ``quiet`` of a core over 0.25 s) and return
    its CPU by process then.  A server may leave work behind a run (pysfsd applies a burst of
    index notes once the burst calms down): measured up to here, that work is charged to the
    run that caused it, not lost between two runs (``loadgen.settle``)."""
    deadline = time.monotonic() + longest
    before = server_cpu_by_process(pid)
    while before is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = server_cpu_by_process(pid)
        if now is None or sum(now.values()) - sum(before.values()) < quiet * 0.25:
            return now
        before = now
    return before


async def wait_until_idle(stats: RunStats, timeout: float) -> bool:
    """Wait until every slot of a run has stopped (each stops once its op's reply is in);
    False when some still wait for a reply after ``timeout`` seconds.  Any stats object with
    ``active`` and ``idle`` will do (scripts/load's too)."""
    if stats.idle is None:
        stats.idle = asyncio.get_running_loop().create_future()
    if stats.active == 0 and not stats.idle.done():
        stats.idle.set_result(None)
    try:
        await asyncio.wait_for(asyncio.shield(stats.idle), timeout)
    except asyncio.TimeoutError:
        return False
    return True


async def measure(target: Target, op: str, settings: Settings, proc_index: int,
                  measure_machine: bool) -> RunResult:
    """Run one op against one target for warmup + seconds and return what was counted.
    Only one generator process measures the server and the machine."""
    result = RunResult()
    conns: list[RawConnection] = []
    try:
        with network_namespace(target.netns_pid):
            for _ in range(settings.connections):
                conns.append(await connect_raw(HOST, target.port))
    except OSError as exc:
        for conn in conns:
            conn.close()
        result.errors[f"connect failed: {exc}"] = 1
        return result
    spec = OPS[op]
    encoder = CallEncoder(NFS3, CRED)
    t = perf_counter()
    warmup = 0.0 if spec.finite else settings.warmup  # a finite op's work is not wasted on warming up
    stats = RunStats(t + warmup, t + warmup + settings.seconds, settings.connections * settings.depth)
    stats.idle = asyncio.get_running_loop().create_future()
    for index, conn in enumerate(conns):
        ctx = ConnContext(encoder, target.name, target.handles, proc_index, index, settings.connections,
                          settings.depth)
        for _ in range(settings.depth):
            RawSlot(conn, spec.script, ctx, stats).start()
    await asyncio.sleep(max(0.0, stats.begin - perf_counter()))
    cpu0, wall0 = time.process_time(), perf_counter()
    srv0 = server_cpu_by_process(target.pid) if measure_machine else None
    sleeps0 = server_sleeps(target.pid) if measure_machine else None
    all0 = machine_cpu_seconds() if measure_machine else None
    # The window closes at its end, or earlier when every slot has run out of work.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(stats.idle), max(0.0, stats.end - perf_counter()))
    cpu1, wall1 = time.process_time(), perf_counter()
    srv1 = server_cpu_by_process(target.pid) if measure_machine else None
    sleeps1 = server_sleeps(target.pid) if measure_machine else None
    all1 = machine_cpu_seconds() if measure_machine else None
    mems = server_memory(target.pid) if measure_machine and target.pid is not None else []
    if not await wait_until_idle(stats, settings.drain_timeout):
        stats.error(f"{stats.active} calls unanswered {settings.drain_timeout:g} s after the run")
    for conn in conns:
        conn.close()
    srv2 = await settled_cpu(target.pid) if measure_machine and target.pid is not None else None
    window = min(settings.seconds, max(1e-3, wall1 - wall0))
    scale = window / max(1e-3, wall1 - wall0)  # CPU as measured over the counting window
    result.ops, result.nbytes, result.window = stats.ops, stats.nbytes, window
    result.latencies, result.errors = stats.latencies, dict(stats.errors)  # closing adds no more
    result.client_cpu = result.client_cpu_max = (cpu1 - cpu0) * scale
    split, after = cpu_split(srv0, srv1), cpu_split(srv1, srv2)
    if split is not None:
        result.server_cpu_split = [c * scale for c in split]
        if after is not None:  # a process that ended after the window has no trailing share
            result.server_cpu_after = sum(after)
            for k, c in enumerate(after[:len(result.server_cpu_split)]):
                result.server_cpu_split[k] += c
        result.server_cpu = sum(result.server_cpu_split)
    if all0 is not None and all1 is not None:
        result.machine_cpu = (all1 - all0) * scale
    mem = summed(mems)
    result.server_rss = mem.rss if mem is not None else None
    result.server_rss_split = [m.rss for m in mems] or None
    if sleeps0 is not None and sleeps1 is not None:
        result.server_sleeps = round((sleeps1 - sleeps0) * scale)
    return result


async def mount_and_lookup(port: int, mount_port: int, export: bytes, names: list[bytes],
                           netns_pid: int | None = None) -> tuple[bytes, dict[bytes, bytes], list[str]]:
    """MNT the export and LOOKUP slash-separated paths; also returns FSINFO warnings."""
    with network_namespace(netns_pid):
        mnt = await connect(HOST, mount_port, MOUNT3, CRED)
    try:
        status, ok = await mnt.call(1, export)
    finally:
        mnt.close()
    if status != 0:
        raise RuntimeError(f"MNT {export.decode()}: {mountstat3.values(status).name}")
    root = ok.fhandle
    with network_namespace(netns_pid):
        nfs = await connect(HOST, port, NFS3, CRED)
    try:
        handles: dict[bytes, bytes] = {}
        for path in names:
            fh = root
            for part in path.split(b"/"):
                status, body = await nfs.call(3, nfs3.LOOKUP3args(nfs3.diropargs3(nfs3.nfs_fh3(fh), part)))
                if status != 0:
                    raise RuntimeError(f"LOOKUP {path.decode()}: {nfsstat3.values(status).name}")
                fh = body.object.data
            handles[path] = fh
        warnings = []
        status, info = await nfs.call(19, nfs3.FSINFO3args(nfs3.nfs_fh3(root)))
        if status != 0:
            warnings.append(f"FSINFO: {nfsstat3.values(status).name}")
        elif min(info.rtmax, info.wtmax) < 1 << 20:
            warnings.append(f"FSINFO rtmax {info.rtmax} wtmax {info.wtmax}: 1 MiB READ/WRITE will be short")
    finally:
        nfs.close()
    return root, handles, warnings


async def one_reply_listing(port: int, dir_fh: bytes, netns_pid: int | None = None) -> int:
    """Size of the READDIRPLUS reply that lists all of ``dir_fh`` at once, as the measured
    loop asks for it; checked here by decoding it once (the loop only compares sizes)."""
    with network_namespace(netns_pid):
        nfs = await connect(HOST, port, NFS3, CRED)
    try:
        status, body = await nfs.call(17, nfs3.READDIRPLUS3args(nfs3.nfs_fh3(dir_fh), 0, bytes(8),
                                                                LISTING_MAX, LISTING_MAX))
    finally:
        nfs.close()
    if status != 0:
        raise RuntimeError(f"READDIRPLUS: {nfsstat3.values(status).name}")
    names = [e.name for e in body.reply.entries if e.name not in (b".", b"..")]
    if not body.reply.eof:
        raise RuntimeError(f"READDIRPLUS with maxcount {LISTING_MAX} returned {len(names)} entries "
                           "without eof: the server caps a reply below one whole listing")
    with network_namespace(netns_pid):
        raw = await connect_raw(HOST, port)
    done: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
    try:
        raw.send(CallEncoder(NFS3, CRED).record(17, nfs3.READDIRPLUS3args(
            nfs3.nfs_fh3(dir_fh), 0, bytes(8), LISTING_MAX, LISTING_MAX)),
            lambda status, size, tail, error: done.set_result((size, tail)))
        size, tail = await asyncio.wait_for(done, 30)
    finally:
        raw.close()
    if tail != LISTING_TAIL:
        raise RuntimeError("READDIRPLUS reply does not end with the end of list and eof")
    return size
