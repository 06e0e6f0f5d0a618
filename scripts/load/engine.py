"""The mixed load engine: N connections x M in-flight slots, each running a weighted mix of op
scripts back to back, with figures per interval, stall detection and the server's memory.

Built on ``scripts/benchmarks/load_generator/driver.py``'s ``Slot`` (a slot sends its op's next call the moment a
reply arrives; a non-OK status or a ``Mismatch`` is an error, then the slot goes on with a new
op).  What this adds: the slot picks its op from the mix each time, every figure is kept per
op, each connection's last reply time is watched (a connection with no reply for
``stall_seconds`` is a stalled client), and every ``interval`` a line of figures is printed.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import Callable, TextIO

from driver import (CRED, HOST, Slot, machine_cpu_seconds, server_cpu_seconds, server_memory, server_pss,
                    summed, wait_until_idle)
from latency import LatencyHistogram
from memory import Memory, growth_verdict
from mixops import MIX_OPS, SlotContext
from protocol.nfs3 import NFS3
from nfsd.rpc.client import RpcConnection, connect

ContextFactory = Callable[[int, int], SlotContext]   # (connection, slot) -> its context
MAX_REASONS_SHOWN = 20


def server_memory_now(pid: int) -> Memory | None:
    """A server's memory: with ``--workers`` the parent's and every worker's summed (VmRSS
    counts the pages they share once per process), with their PSS beside it (once)."""
    each = server_memory(pid)
    total = summed(each)
    return None if total is None else replace(total, pss=server_pss(pid), processes=len(each))


class OpFigures:
    """Counts of one op over an interval or a whole run."""

    __slots__ = ("ops", "nbytes", "latency", "errors")

    def __init__(self) -> None:
        self.ops = self.nbytes = self.errors = 0
        self.latency = LatencyHistogram()

    def merge(self, other: OpFigures) -> None:
        self.ops += other.ops
        self.nbytes += other.nbytes
        self.errors += other.errors
        self.latency.merge(other.latency)


class MixStats:
    """Shared by every slot of a run: per-op figures of the current interval, errors by
    reason, each connection's last reply time, and how many slots still run."""

    def __init__(self, ops: list[str], connections: int, end: float) -> None:
        self.end = end
        self.current = {op: OpFigures() for op in ops}
        self.reasons: Counter[str] = Counter()
        self.last_reply = [perf_counter()] * connections
        self.active = 0
        self.idle: asyncio.Future[None] | None = None

    def op_done(self, op: str, t0: float, nbytes: int) -> None:
        figures = self.current[op]
        figures.ops += 1
        figures.nbytes += nbytes
        figures.latency.add(perf_counter() - t0)

    def error(self, op: str, reason: str) -> None:
        self.current[op].errors += 1
        key = f"{op}: {reason}"
        if key not in self.reasons and len(self.reasons) < MAX_REASONS_SHOWN:
            print(f"load: first error of its kind: {key}", file=sys.stderr, flush=True)
        self.reasons[key] += 1

    def slot_stopped(self) -> None:
        self.active -= 1
        if self.active == 0 and self.idle is not None and not self.idle.done():
            self.idle.set_result(None)

    def take_interval(self) -> dict[str, OpFigures]:
        taken, self.current = self.current, {op: OpFigures() for op in self.current}
        return taken


class _SlotStats:
    """What driver.Slot calls on its stats, charged to the op the slot is running."""

    __slots__ = ("mix", "slot")

    def __init__(self, mix: MixStats, slot: MixedSlot) -> None:
        self.mix, self.slot = mix, slot

    @property
    def end(self) -> float:
        return self.mix.end

    def op_done(self, t0: float, nbytes: int) -> None:
        self.mix.op_done(self.slot.op, t0, nbytes)

    def error(self, reason: str) -> None:
        self.mix.error(self.slot.op, reason)

    def slot_stopped(self) -> None:
        self.mix.slot_stopped()


class MixedSlot(Slot):
    """A driver.Slot that draws each next op from the weighted mix."""

    __slots__ = ("op", "mix", "conn_index", "names", "cumulative")

    def __init__(self, conn: RpcConnection, ctx: SlotContext, mix: MixStats, conn_index: int,
                 weights: dict[str, int]) -> None:
        super().__init__(conn, MIX_OPS[next(iter(weights))].script, ctx, _SlotStats(mix, self))  # type: ignore[arg-type]
        self.mix, self.conn_index = mix, conn_index
        self.names = list(weights)
        self.cumulative = [sum(list(weights.values())[:i + 1]) for i in range(len(weights))]
        self.op = self.names[0]

    def start(self) -> None:
        pick = self.ctx.rng.random() * self.cumulative[-1]
        self.op = self.names[bisect.bisect_right(self.cumulative, pick)]
        self.script = MIX_OPS[self.op].script  # type: ignore[assignment]
        super().start()

    def _on_reply(self, result: object, error: str | None) -> None:
        self.mix.last_reply[self.conn_index] = perf_counter()
        super()._on_reply(result, error)


# -- figures -------------------------------------------------------------------------------

@dataclass
class Interval:
    """One printed line: figures of the ``seconds`` ending ``at`` seconds into the run."""

    at: float
    seconds: float
    ops_per_s: float
    mib_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    stalled: list[int]
    memory: Memory | None
    server_cpu: float | None   # % of a core over the interval
    generator_cpu: float
    other_cpu: float | None    # every other process on the machine (noise)
    per_op: dict[str, float]   # ops/s


@dataclass
class LoadReport:
    seconds: float
    connections: int
    depth: int
    intervals: list[Interval] = field(default_factory=list)
    per_op: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    total_ops: int = 0
    errors: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    stalled_clients: list[int] = field(default_factory=list)
    unanswered: int = 0
    memory_first: Memory | None = None
    memory_baseline: Memory | None = None
    memory_last: Memory | None = None
    memory_max_rss: float | None = None
    memory_flat: bool = True
    memory_verdict: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and not self.stalled_clients and not self.unanswered and self.memory_flat

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# -- the run -------------------------------------------------------------------------------

@dataclass
class LoadSettings:
    connections: int = 64
    depth: int = 32
    interval: float = 10.0
    stall_seconds: float = 10.0
    warmup: float = 30.0          # the memory baseline is the first sample after this
    max_growth: float | None = 0.10
    drain_timeout: float = 30.0


class LoadRun:
    """One load run against the server on 127.0.0.1:port (pid, when known, for memory)."""

    def __init__(self, port: int, contexts: ContextFactory, weights: dict[str, int],
                 settings: LoadSettings, pid: int | None = None, out: TextIO = sys.stdout,
                 label: str = "", jsonl: Path | None = None) -> None:
        self.port, self.contexts, self.weights = port, contexts, weights
        self.settings, self.pid, self.out, self.label, self.jsonl = settings, pid, out, label, jsonl
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats: MixStats | None = None
        self._wake = asyncio.Event()
        self.started = threading.Event()   # set once every slot has sent its first call
        self._cpu_marks = self._cpu_now()

    def stop_soon(self) -> None:
        """End the run early (from any thread): slots stop after their current op."""
        if self._loop is not None and self._stats is not None:
            self._loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        if self._stats is not None:
            self._stats.end = perf_counter()
        self._wake.set()

    def _print(self, text: str) -> None:
        print(f"{self.label}{text}", file=self.out, flush=True)

    async def run(self, seconds: float | None) -> LoadReport:
        """Load for ``seconds`` (None: until stop_soon), then drain and report."""
        s = self.settings
        self._loop = asyncio.get_running_loop()
        report = LoadReport(seconds=0.0, connections=s.connections, depth=s.depth)
        conns = [await connect(HOST, self.port, NFS3, CRED) for _ in range(s.connections)]
        ops = list(self.weights)
        begin = perf_counter()
        stats = self._stats = MixStats(ops, s.connections, begin + seconds if seconds is not None else math.inf)
        totals = {op: OpFigures() for op in ops}
        for conn_index, conn in enumerate(conns):
            for slot_index in range(s.depth):
                stats.active += 1
                MixedSlot(conn, self.contexts(conn_index, slot_index), stats, conn_index, self.weights).start()
        self.started.set()
        self._print(self._header(ops))
        report.memory_first = server_memory_now(self.pid) if self.pid else None
        self._cpu_marks = self._cpu_now()
        stalled: set[int] = set()
        previous, next_tick = begin, begin + s.interval
        while perf_counter() < stats.end and stats.active:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(next_tick, stats.end) - perf_counter()))
            except asyncio.TimeoutError:
                pass
            now = perf_counter()
            if now < next_tick and now < stats.end:
                continue
            next_tick += s.interval
            interval = self._close_interval(stats, totals, ops, now - begin, now - previous, now)
            previous = now
            stalled.update(interval.stalled)
            report.intervals.append(interval)
            if interval.memory is not None:
                if report.memory_baseline is None and interval.at >= min(s.warmup, (seconds or math.inf) / 2):
                    report.memory_baseline = interval.memory
                report.memory_max_rss = max(report.memory_max_rss or 0.0, interval.memory.rss)
                report.memory_last = interval.memory
        report.seconds = perf_counter() - begin
        if not await wait_until_idle(stats, s.drain_timeout):  # type: ignore[arg-type]
            report.unanswered = stats.active
            self._print(f"{stats.active} slots still waiting for a reply {s.drain_timeout:g} s after the end")
        for op, figures in stats.take_interval().items():  # what finished while draining
            totals[op].merge(figures)
        for conn in conns:
            conn.close()
        self._finish(report, totals, stalled)
        return report

    def _cpu_now(self) -> tuple[float, float | None, float]:
        """CPU seconds so far: this generator, the server, the whole machine."""
        return time.process_time(), server_cpu_seconds(self.pid), machine_cpu_seconds()

    def _header(self, ops: list[str]) -> str:
        cols = "".join(f"{MIX_OPS[op].label:>9}" for op in ops)
        return (f"{'time':>6}{'ops/s':>9}{'MiB/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'VmRSS':>8}{'anon':>7}{'PSS':>7}"
                f"{'srvCPU':>7}{'genCPU':>7}{'other':>7}{'stall':>6}{'errors':>7} |{cols}   (ops/s per op; MiB)")

    def _close_interval(self, stats: MixStats, totals: dict[str, OpFigures], ops: list[str],
                        at: float, seconds: float, now: float) -> Interval:
        figures = stats.take_interval()
        whole = OpFigures()
        for op, fig in figures.items():
            totals[op].merge(fig)
            whole.merge(fig)
        memory = server_memory_now(self.pid) if self.pid else None
        stalled = [c for c, last in enumerate(stats.last_reply) if now - last > self.settings.stall_seconds]
        marks = self._cpu_now()
        server_cpu = (None if marks[1] is None or self._cpu_marks[1] is None
                      else 100 * (marks[1] - self._cpu_marks[1]) / seconds)
        generator_cpu = 100 * (marks[0] - self._cpu_marks[0]) / seconds
        other_cpu = (None if server_cpu is None
                     else max(0.0, 100 * (marks[2] - self._cpu_marks[2]) / seconds - server_cpu - generator_cpu))
        self._cpu_marks = marks
        interval = Interval(
            at=round(at, 3), seconds=round(seconds, 3), ops_per_s=whole.ops / seconds,
            mib_per_s=whole.nbytes / (1 << 20) / seconds,
            p50_ms=whole.latency.percentile_ms(0.5), p99_ms=whole.latency.percentile_ms(0.99),
            errors=whole.errors, stalled=stalled, memory=memory,
            server_cpu=server_cpu, generator_cpu=generator_cpu, other_cpu=other_cpu,
            per_op={op: figures[op].ops / seconds for op in ops})
        cols = "".join(f"{interval.per_op[op]:>9,.0f}" for op in ops)
        self._print(f"{at:>5.0f}s{interval.ops_per_s:>9,.0f}{interval.mib_per_s:>7.1f}"
                    f"{_fmt(interval.p50_ms, '.1f'):>8}{_fmt(interval.p99_ms, '.1f'):>8}"
                    f"{_fmt(memory.rss if memory else None, '.1f'):>8}{_fmt(memory.anon if memory else None, '.1f'):>7}"
                    f"{_fmt(memory.pss if memory else None, '.1f'):>7}"
                    f"{_fmt(server_cpu, '.0f'):>6}%{generator_cpu:>6.0f}%{_fmt(other_cpu, '.0f'):>6}%{len(stalled):>6}{whole.errors:>7} |{cols}")
        if stalled:
            self._print(f"  stalled clients (no reply for over {self.settings.stall_seconds:g} s): {stalled}")
        if self.jsonl is not None:
            with self.jsonl.open("a") as f:
                f.write(json.dumps(asdict(interval)) + "\n")
        return interval

    def _finish(self, report: LoadReport, totals: dict[str, OpFigures], stalled: set[int]) -> None:
        s = self.settings
        report.stalled_clients = sorted(stalled)
        report.reasons = dict(self._stats.reasons.most_common()) if self._stats else {}
        report.errors = sum(report.reasons.values())
        report.total_ops = sum(f.ops for f in totals.values())
        for op, fig in totals.items():
            report.per_op[op] = {"ops": fig.ops, "ops_per_s": fig.ops / report.seconds,
                                 "mib": fig.nbytes / (1 << 20), "errors": fig.errors,
                                 "p50_ms": fig.latency.percentile_ms(0.5),
                                 "p99_ms": fig.latency.percentile_ms(0.99)}
        if s.max_growth is None:
            report.memory_verdict = "growth not checked"
        else:
            report.memory_flat, report.memory_verdict = growth_verdict(
                report.memory_baseline, report.memory_last, s.max_growth)

    def print_summary(self, report: LoadReport) -> None:
        p = self._print
        p("")
        p(f"{'op':14}{'kind':>9}{'ops':>11}{'ops/s':>9}{'MiB':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}")
        for op, f in report.per_op.items():
            p(f"{op:14}{MIX_OPS[op].kind:>9}{f['ops']:>11,}{f['ops_per_s']:>9,.0f}{f['mib']:>9,.0f}"
              f"{_fmt(f['p50_ms'], '.1f'):>8}{_fmt(f['p99_ms'], '.1f'):>8}{f['errors']:>8}")
        p(f"total: {report.total_ops:,} ops in {report.seconds:.0f} s ({report.total_ops / report.seconds:,.0f} ops/s), "
          f"{report.connections} clients x {report.depth} in flight")
        p(f"errors: {report.errors}" + "".join(f"\n  {n} x {reason}" for reason, n in report.reasons.items()))
        p(f"stalled clients: {len(report.stalled_clients)}"
          f"{f' {report.stalled_clients}' if report.stalled_clients else ''}; "
          f"calls unanswered at the end: {report.unanswered}")
        if report.memory_first is not None:
            p(f"server memory: first {report.memory_first}")
            p(f"               last  {report.memory_last}")
            p(f"               max VmRSS {_fmt(report.memory_max_rss, '.1f')} MiB; {report.memory_verdict}")
        p(f"RESULT {'PASS' if report.ok else 'FAIL'}")
