#!/usr/bin/env python3
"""Pipelined NFSv3 load generator: pysfsd and NFS-Ganesha side by side, ops/s per operation.

N connections each keep D calls in flight (a reply frees a slot, which sends the next call at
once) for a fixed time per operation and server; operations alternate between the servers so
a drift in background load hits both alike.  Calls are pre-encoded and replies counted, never
decoded (nfsd/rpc/client.py ``RawConnection``).  Prints ops/s and ops per server
CPU-second with the pysfsd/Ganesha ratios against the target, entries/s for listings, MiB/s,
latency percentiles, the CPU of the busiest generator process (GENERATOR-BOUND when it
used most of a core), and the server's sleeps per call (voluntary context switches of all its
threads: how many calls each wake-up found).  A server's CPU per operation includes the work a run left behind it
(measured until the server settles; the "after ms" column): pysfsd applies a burst's index
notes once the burst calms down, and that work belongs to the run that caused it.

    python scripts/benchmarks/load_generator/loadgen.py                      # both servers, all operations
    python scripts/benchmarks/load_generator/loadgen.py --servers ganesha --ops null,getattr --seconds 3
    python scripts/benchmarks/load_generator/loadgen.py --depth 1 --connections 1   # latency
    python scripts/benchmarks/load_generator/loadgen.py --pysfsd-port 2049   # a pysfsd already serving ROOT/pysfsd

Loopback (127.0.0.1) only.  The machine has 2 cores: generator and server compete for them,
so the CPU columns say which side was the bottleneck.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import queue as queue_module
import re
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[3]), str(Path(__file__).resolve().parent),
                str(Path(__file__).resolve().parents[2] / "load")]

from driver import (RunResult, Settings, Target, measure, mount_and_lookup, one_reply_listing,  # noqa: E402
                    server_memory, server_pss, settled_cpu, summed)
from rounds import combine, plan_rounds, round_ratios  # noqa: E402
from servers import Pysfsd, ganesha_module, ganesha_pid  # noqa: E402
from memory import Memory  # noqa: E402  (scripts/load/memory.py)
from workload import (BIG_NAME, DIR_NAME, OPS, SCRATCH_NAME, SMALL_NAME, WRITE_DIR,  # noqa: E402
                      Handles, MiB, build_fixture, write_file_name)

SERVERS = ("pysfsd", "ganesha")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt() parameters, from <malloc.h>
SATURATED = 90  # % of a core per generator process from which the generator is the bottleneck
NOISY = 20  # % of a core used by other processes during a run from which it is flagged
Plan = list[tuple[str, Target]]


def prepare_process() -> bool:
    """Tune this generator process; returns whether uvloop is used.

    glibc hands freed 1 MiB buffers back to the kernel, so each 1 MiB record then costs fresh
    page faults: RecordReader took 1.3-1.7 ms per 1 MiB READ reply instead of 0.25 ms, which
    made the generator the bottleneck.  Raising the mmap and trim thresholds keeps them in
    the heap."""
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# -- generator processes -------------------------------------------------------------------

def run_plan_here(proc_index: int, plan: Plan, settings: Settings, barrier: Any) -> list[RunResult]:
    """Run every (op, target) of the plan in order; with several processes, a barrier makes
    them start each run together."""
    results = []
    for number, (op, target) in enumerate(plan, 1):
        if proc_index == 0:
            settle(target.pid)
        if barrier is not None:
            barrier.wait(timeout=settings.warmup + settings.seconds + settings.drain_timeout + 120)
        result = asyncio.run(measure(target, op, settings, proc_index, measure_machine=proc_index == 0))
        results.append(result)
        if proc_index == 0:
            errors = sum(result.errors.values())
            print(f"  [{number}/{len(plan)}] {target.name:8} {OPS[op].label:24} "
                  f"{result.ops / result.window:12,.0f} ops/s"
                  f"{'' if barrier is None else ' (process 0)'}"
                  f"{f'  {errors} errors' if errors else ''}", file=sys.stderr, flush=True)
    return results


def settle(pid: int | None) -> None:
    """Wait until the server is nearly idle (``driver.settled_cpu``), so the first run is
    not charged with the set-up's work (each run then waits for the work it left itself)."""
    if pid is not None:
        asyncio.run(settled_cpu(pid))


def _child(proc_index: int, plan: Plan, settings: Settings, barrier: Any, queue: Any) -> None:
    try:
        prepare_process()
        queue.put((proc_index, run_plan_here(proc_index, plan, settings, barrier)))
    except BaseException:
        barrier.abort()
        queue.put((proc_index, traceback.format_exc()))


def run_plan(plan: Plan, settings: Settings, procs: int) -> list[RunResult]:
    """Results per plan entry, summed over ``procs`` generator processes."""
    if procs == 1:
        return run_plan_here(0, plan, settings, None)
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    children = [ctx.Process(target=_child, args=(k, plan, settings, barrier, queue), daemon=True)
                for k in range(procs)]
    for child in children:
        child.start()
    per_proc = []
    run_bound = settings.warmup + settings.seconds + settings.drain_timeout + 60
    for _ in children:
        try:
            index, outcome = queue.get(timeout=len(plan) * run_bound + 60)
        except queue_module.Empty:
            raise RuntimeError("a generator process died without reporting") from None
        if isinstance(outcome, str):
            raise RuntimeError(f"generator process {index} failed:\n{outcome}")
        per_proc.append(outcome)
    for child in children:
        child.join()
    merged = per_proc[0]
    for other in per_proc[1:]:
        for total, part in zip(merged, other):
            total.merge(part)
    return merged


# -- servers and fixtures ------------------------------------------------------------------

def handle_names(write_files: int) -> list[bytes]:
    return ([SMALL_NAME, BIG_NAME, DIR_NAME, SCRATCH_NAME]
            + [WRITE_DIR + b"/" + write_file_name(i) for i in range(write_files)])


def discover(name: str, port: int, mount_port: int, export: Path, write_files: int,
             pid: int | None, netns_pid: int | None = None) -> tuple[Target, list[str]]:
    """MNT and LOOKUP everything the op scripts need."""
    root, found, warnings = asyncio.run(
        mount_and_lookup(port, mount_port, str(export).encode(), handle_names(write_files), netns_pid))
    writes = tuple(found[WRITE_DIR + b"/" + write_file_name(i)] for i in range(write_files))
    listing_bytes = asyncio.run(one_reply_listing(port, found[DIR_NAME], netns_pid))
    handles = Handles(root, found[SMALL_NAME], found[BIG_NAME], found[DIR_NAME], found[SCRATCH_NAME], writes,
                      listing_bytes)
    return Target(name, port, mount_port, handles, pid, netns_pid), warnings


def _workers_of(name: str) -> int:
    """N of a server named ``pysfsd-wN`` (pysfsd with ``--workers N``), else 0."""
    m = re.fullmatch(r"pysfsd-w(\d+)", name)
    return int(m[1]) if m else 0


def start_targets(args: argparse.Namespace, stack: contextlib.ExitStack,
                  write_files: int) -> tuple[list[Target], dict[str, str]]:
    """Build each server's fixture, start it (unless already running), discover handles.
    A server that fails is reported, not fatal: the other one is still measured."""
    targets, failures = [], {}
    for name in args.servers:
        export = args.root / name
        netns_pid = None
        try:
            build_fixture(export, write_files, args.depth)
            if name == "pysfsd" and args.pysfsd_port:
                port = mount_port = args.pysfsd_port
                pid = args.pysfsd_pid
            elif name == "pysfsd" or _workers_of(name):
                server = stack.enter_context(Pysfsd(export, args.root / f"{name}-run",
                                                    workers=_workers_of(name) or None))
                port = mount_port = server.port
                pid = server.pid
            else:
                # alone in a network namespace with its own rpcbind: the host's stays untouched
                work_dir = args.root / "ganesha-run"
                port, mount_port = 20490, 20491
                ganesha = stack.enter_context(ganesha_module().Ganesha(
                    export, port=port, mount_port=mount_port, work_dir=work_dir, private=True))
                pid, netns_pid = ganesha_pid(work_dir), ganesha.namespace_pid
            target, warnings = discover(name, port, mount_port, export, write_files, pid, netns_pid)
        except Exception as exc:  # noqa: BLE001 - any setup failure is reported per server
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: setup failed: {failures[name]}", file=sys.stderr)
            continue
        for warning in warnings:
            print(f"{name}: warning: {warning}", file=sys.stderr)
        print(f"{name}: 127.0.0.1:{port} (mount {mount_port}) export {export}", file=sys.stderr)
        targets.append(target)
    return targets, failures


# -- report --------------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarize(result: RunResult) -> dict[str, Any]:
    lat = sorted(result.latencies)
    window = result.window or 1.0
    p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
    other = None
    after = result.server_cpu_after or 0.0  # the server's CPU after the window (work left behind)
    in_window = None if result.server_cpu is None else result.server_cpu - after
    if result.machine_cpu is not None and in_window is not None:
        other = max(0.0, result.machine_cpu - result.client_cpu - in_window)
    return {
        "ops": result.ops,
        "ops_per_s": result.ops / window,
        "mib_per_s": result.nbytes / MiB / window,
        "p50_ms": None if p50 is None else p50 * 1e3,
        "p99_ms": None if p99 is None else p99 * 1e3,
        "client_cpu_pct": 100 * result.client_cpu / window,
        "client_cpu_max_pct": 100 * result.client_cpu_max / window,
        "ops_per_server_cpu": (result.ops / result.server_cpu if result.server_cpu else None),
        "server_cpu_pct": None if in_window is None else 100 * in_window / window,
        "server_cpu_after_ms": None if result.server_cpu_after is None else 1e3 * result.server_cpu_after,
        "other_cpu_pct": None if other is None else 100 * other / window,
        "server_cpu_pct_by_process": (None if result.server_cpu_split is None
                                      else [100 * c / window for c in result.server_cpu_split]),
        "server_rss_mib_by_process": result.server_rss_split,
        "server_sleeps_per_call": (None if result.server_sleeps is None or not result.ops
                                   else result.server_sleeps / result.ops),
        "errors": dict(sorted(result.errors.items(), key=lambda kv: -kv[1])),
    }


def _by_process(s: dict[str, Any]) -> str:
    """A server of several processes: the CPU and VmRSS of each (the parent first)."""
    cpu, rss = s["server_cpu_pct_by_process"], s["server_rss_mib_by_process"]
    if not cpu or len(cpu) < 2:
        return ""
    return (f"  per process: CPU {' + '.join(f'{c:.0f}%' for c in cpu)}"
            + (f", VmRSS {' + '.join(f'{r:.0f}' for r in rss)} MiB" if rss else ""))


def _memory_line(memories: list[Memory]) -> str:
    """VmRSS of a server's processes summed, and each one's when there are several."""
    total = summed(memories)
    if total is None:
        return "-"
    each = f" ({' + '.join(f'{m.rss:.1f}' for m in memories)})" if len(memories) > 1 else ""
    return f"{total.rss:.1f}{each}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _ratio(p: float | None, g: float | None) -> float | None:
    return p / g if p and g else None


def report(ops: list[str], servers: list[str], stats: dict[str, dict[str, dict[str, Any]]],
           failures: dict[str, str], settings: Settings, procs: int) -> dict[str, Any]:
    """Print the comparison and per-server tables; return the ratios."""
    rounds = max((len(s.get("rounds", [])) for runs in stats.values() for s in runs.values()), default=0)
    load = (f"{settings.connections} connections x {settings.depth} in flight"
            f"{f' x {procs} processes' if procs > 1 else ''}, {settings.seconds:g} s per op and server"
            f"{f'; medians of {rounds} rounds, the order reversed every other round' if rounds > 1 else ''}")
    print(f"\npysfsd vs NFS-Ganesha, NFSv3 over TCP on 127.0.0.1 ({load}); replies counted, not decoded\n")
    head = (f"{'operation':26}{'pysfsd/s':>10}{'ganesha/s':>10}{'ratio':>7}"
            f"{'p/CPU-s':>10}{'g/CPU-s':>10}{'CPU ratio':>10}{'target':>7}  {'gen CPU p/g':>12}"
            f"{'errors p/g':>11}  notes")
    print(head)
    print("-" * (len(head) + 20))
    ratios: dict[str, dict[str, float | None]] = {}
    for op in ops:
        spec = OPS[op]
        pair = {name: stats.get(name, {}).get(op) for name in SERVERS}
        p, g = pair["pysfsd"], pair["ganesha"]
        ratio = _ratio(p["ops_per_s"] if p else None, g["ops_per_s"] if g else None)
        cpu_ratio = _ratio(p["ops_per_server_cpu"] if p else None, g["ops_per_server_cpu"] if g else None)
        ratios[op] = {"ops": ratio, "per_cpu": cpu_ratio}
        verdict = "" if ratio is None else ("ok" if ratio >= spec.target and (cpu_ratio or 0) >= spec.target
                                            else "LOW")
        cells = ["-" if s is None else f"{s['ops_per_s']:,.0f}" for s in (p, g)]
        per_cpu = ["-" if s is None or s["ops_per_server_cpu"] is None else f"{s['ops_per_server_cpu']:,.0f}"
                   for s in (p, g)]
        gen = "/".join("-" if s is None else f"{s['client_cpu_max_pct']:.0f}%" for s in (p, g))
        errs = "/".join("-" if s is None else str(sum(s["errors"].values())) for s in (p, g))
        bound = [name for name, s in pair.items() if s and s["client_cpu_max_pct"] >= SATURATED]
        # An op slower than a quarter of the window is counted in a few waves, not in steady state.
        slow = [name for name, s in pair.items()
                if s and (s["p50_ms"] is None or s["p50_ms"] > 250 * settings.seconds)]
        extra = []
        if spec.entries:
            extra.append("entries/s " + "/".join("-" if s is None else f"{s['ops_per_s'] * spec.entries:,.0f}"
                                                 for s in (p, g)))
        if spec.bulk:
            extra.append("MiB/s " + "/".join("-" if s is None else f"{s['mib_per_s']:,.0f}" for s in (p, g)))
        by_rounds = round_ratios(p, g)
        notes = "; ".join(
            extra + [by_rounds] * bool(by_rounds) + [f"GENERATOR-BOUND on {' and '.join(bound)}"] * bool(bound)
            + [f"latency near the window on {' and '.join(slow)}: raise --seconds or lower the load"] * bool(slow))
        print(f"{spec.label:26}{cells[0]:>10}{cells[1]:>10}{_fmt(ratio, '.2f'):>7}"
              f"{per_cpu[0]:>10}{per_cpu[1]:>10}{_fmt(cpu_ratio, '.2f'):>10}{spec.target:>7.2f}  "
              f"{gen:>12}{errs:>11}  {verdict} {notes}")
    measured = [name for name in servers if name in stats]
    if len(measured) > 2 or any(name not in SERVERS for name in measured):  # pysfsd-wN
        report_side_by_side(ops, [name for name in servers if name in stats], stats)
    for name, reason in failures.items():
        print(f"\n{name} not measured: {reason}")
    for name in servers:
        if name not in stats:
            continue
        print(f"\n{name}")
        head = (f"  {'operation':26}{'ops/s':>10}{'MiB/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
                f"{'gen CPU':>9}{'max/proc':>9}{'server CPU':>12}{'after ms':>9}{'sleeps/call':>12}{'other CPU':>11}"
                f"{'errors':>8}")
        print(head)
        for op in ops:
            s = stats[name][op]
            print(f"  {OPS[op].label:26}{s['ops_per_s']:>10,.0f}"
                  f"{_fmt(s['mib_per_s'] if OPS[op].bulk else None, ',.0f'):>9}"
                  f"{_fmt(s['p50_ms'], '.3f'):>9}{_fmt(s['p99_ms'], '.3f'):>9}"
                  f"{_pct(s['client_cpu_pct']):>9}{_pct(s['client_cpu_max_pct']):>9}{_pct(s['server_cpu_pct']):>12}"
                  f"{_fmt(s['server_cpu_after_ms'], ',.0f'):>9}{_fmt(s['server_sleeps_per_call'], '.3f'):>12}"
                  f"{_pct(s['other_cpu_pct']):>11}{sum(s['errors'].values()):>8}"
                  + _by_process(s))
            for reason, count in list(s["errors"].items())[:3]:
                print(f"      {count} x {reason}")
    print(f"\ngenerator: {procs} process{'es' if procs > 1 else ''}; an op is GENERATOR-BOUND when its busiest "
          f"generator process used >= {SATURATED}% of a core (then the figure is a floor for that server)")
    noisy = [s["other_cpu_pct"] for runs in stats.values() for s in runs.values()
             if (s["other_cpu_pct"] or 0) > NOISY]
    if noisy:
        print(f"background load: other processes took over {NOISY}% of a core in {len(noisy)} runs "
              f"(up to {max(noisy):.0f}%): figures are noisy, rerun on a quiet machine")
    return ratios


def report_side_by_side(ops: list[str], names: list[str], stats: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Every server measured (pysfsd-wN: ``--workers N``): ops/s and ops per server CPU-second
    (the CPU of a server's worker processes summed)."""
    print("\nall servers: ops/s | ops per server CPU-second")
    print(f"{'operation':26}" + "".join(f"{name:>22}" for name in names))
    for op in ops:
        cells = []
        for name in names:
            s = stats[name].get(op)
            per_cpu = None if s is None else s["ops_per_server_cpu"]
            cells.append("-" if s is None else f"{s['ops_per_s']:,.0f} | {_fmt(per_cpu, ',.0f')}")
        print(f"{OPS[op].label:26}" + "".join(f"{c:>22}" for c in cells))


# -- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="operations: " + ", ".join(OPS))
    parser.add_argument("--servers", default="both",
                        help="both (default), pysfsd, ganesha, or a comma list; pysfsd is the server's default "
                             "(one worker per usable core, or PYSFSD_WORKERS); pysfsd-wN: --workers N")
    parser.add_argument("--ops", default=",".join(OPS), help="comma list of operations (default: all)")
    parser.add_argument("--connections", type=int, default=4, help="TCP connections per process")
    parser.add_argument("--depth", type=int, default=8, help="calls in flight per connection")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per op and server")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured lead-in per run")
    parser.add_argument("--drain-timeout", type=float, default=15.0,
                        help="how long to wait for in-flight calls after a run")
    parser.add_argument("--procs", type=int, default=2, help="generator processes (results are summed)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench"),
                        help="fixture trees ROOT/pysfsd and ROOT/ganesha, server state and logs")
    parser.add_argument("--pysfsd-port", type=int, default=0,
                        help="measure a pysfsd already serving NFS and MOUNT on this port, exporting ROOT/pysfsd")
    parser.add_argument("--pysfsd-pid", type=int, help="with --pysfsd-port: that server's pid, for its CPU time")
    parser.add_argument("--json", type=Path, help="also save the results here")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the comparison, the servers' order reversed every other round; "
                             "the tables show medians and each round's ratios (rounds.py)")
    args = parser.parse_args(argv)
    args.servers = list(SERVERS) if args.servers == "both" else args.servers.split(",")
    args.ops = args.ops.split(",")
    for value, known, what in ((args.servers, SERVERS, "server"), (args.ops, OPS, "operation")):
        unknown = [v for v in value if v not in known and not (what == "server" and _workers_of(v))]
        if unknown:
            parser.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    if min(args.connections, args.depth, args.procs, args.rounds) < 1 or args.seconds <= 0:
        parser.error("--connections, --depth, --procs, --rounds and --seconds must be positive")
    args.root = args.root.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(args.connections, args.depth, args.seconds, args.warmup, args.drain_timeout)
    uvloop_used = prepare_process()
    with contextlib.ExitStack() as stack:
        targets, failures = start_targets(args, stack, args.procs * args.connections)
        if not targets:
            print("no server could be measured", file=sys.stderr)
            return 1
        numbered = plan_rounds(args.ops, targets, args.rounds)
        plan = [(op, target) for _, op, target in numbered]
        at_rest = {t.name: server_memory(t.pid) for t in targets if t.pid is not None}
        pss_rest = {t.name: server_pss(t.pid) for t in targets if t.pid is not None}
        results = run_plan(plan, settings, args.procs)
        at_end = {t.name: server_memory(t.pid) for t in targets if t.pid is not None}
        pss_end = {t.name: server_pss(t.pid) for t in targets if t.pid is not None}
    by_round: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (op, target), result in zip(plan, results):
        by_round.setdefault(target.name, {}).setdefault(op, []).append(summarize(result))
    stats = {name: {op: combine(runs) for op, runs in ops.items()} for name, ops in by_round.items()}
    ratios = report(args.ops, args.servers, stats, failures, settings, args.procs)
    memory = {}
    for target in targets:
        rests, ends = at_rest.get(target.name, []), at_end.get(target.name, [])
        rest, end = summed(rests), summed(ends)
        peak = max((r.server_rss for (_, t), r in zip(plan, results) if t.name == target.name and r.server_rss),
                   default=None)
        memory[target.name] = {"rest_mib": rest.rss if rest else None, "max_under_load_mib": peak,
                               "hwm_mib": end.hwm if end else None,
                               "rest_mib_by_process": [m.rss for m in rests],
                               "end_mib_by_process": [m.rss for m in ends],
                               "pss_rest_mib": pss_rest.get(target.name), "pss_end_mib": pss_end.get(target.name)}
        several = " (processes summed: parent + workers)" if len(rests) > 1 else ""
        print(f"{target.name} memory{several}: VmRSS at rest {_memory_line(rests)} MiB, highest at the end of "
              f"a run {_fmt(peak, '.1f')} MiB, at the end {_memory_line(ends)} MiB, "
              f"VmHWM {_fmt(end.hwm if end else None, '.1f')} MiB; PSS (shared pages counted once) at rest "
              f"{_fmt(pss_rest.get(target.name), '.1f')} MiB, at the end {_fmt(pss_end.get(target.name), '.1f')} MiB")
    if args.json:
        args.json.write_text(json.dumps({
            "settings": {**vars(settings), "procs": args.procs, "rounds": args.rounds, "uvloop": uvloop_used},
            "targets": {t.name: {"port": t.port, "mount_port": t.mount_port} for t in targets},
            "failures": failures,
            "results": stats,
            "ratios": ratios,
            "memory": memory,
            "targets_ratio": {op: OPS[op].target for op in args.ops},
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
