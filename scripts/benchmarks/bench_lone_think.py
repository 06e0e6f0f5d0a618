#!/usr/bin/env python3
"""Lone calls with the client thinking between them: the VM workload's shape, in seconds.

The kernel client in the VM (scripts/vm/compare_bench.py) sends one call, waits for the
reply, then its guest computes (a shell loop under TCG) before the next call, so the server
sleeps between calls and is woken for each one.  The load generator's lone calls
(``loadgen.py --procs 1 --connections 1 --depth 1``) come back to back: the next call is
often there before the server sleeps, so they show less than the VM pays.  This client makes
its calls (``--op``: GETATTR, SETATTR, the VM's creates, creates with a write and removes,
or its cold LOOKUPs) one at a time and spins ``--think`` milliseconds between them (a busy
guest, not a sleeping one), then prints per call: the server's CPU (its threads' schedstat),
how long its threads waited on a run queue after being woken (run delay) and how many times
they were put on a CPU (runs: about one per wake-up; /proc/PID/task/*/schedstat), and the
latency the client saw: mean, the part of the mean the slowest tenth of the calls makes
(``tail``: a slow median or a few slow calls?), p50, p90, p99, the slowest, and a histogram
per procedure.  ``--threads``: the CPU by server process and thread.  ``--timeline CSV``:
every call (when it was sent, wall clock; its latency; the client's own run delay meanwhile).
``--jobs``: pysfsd runs with ``jobtrace/sitecustomize.py``, which times the server's own
jobs (index flush, the handle table's sync, idle descriptors, the watcher's reads, the
writer's inbox, collections) and its serves, and each call's latency beyond its procedure's
median is put to the job that ran meanwhile, or to the client or the server waiting for a CPU;
and the jobs' own thread CPU per call is printed by kind (how much of a changing call's CPU
is the index flush of its note, the handle table's sync... rather than its serving).

    python scripts/benchmarks/bench_lone_think.py --servers pysfsd-w1,ganesha --think 0,1 --rounds 2

Servers as the load generator names them (``pysfsd``, ``pysfsd-wN``, ``ganesha``; ``--async``:
the pysfsd export is ``async``), started afresh, measured in turn each round.  To compare
trees in one run, interleaved: ``--tree base=/tmp/base`` (``git worktree add``) adds servers
``pysfsd@base``, ``pysfsd-w1@base``... run from that checkout.  On a loaded machine
``--blocks N`` starts every server once and measures N blocks of ``--calls`` each, the
servers' order turned round each block: a block's neighbours, seconds apart, share its load,
and ``vs first`` is the median of each block's (or round's) CPU per call against the first
server's in the same block.
Not a test: figures depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE / "load_generator"), str(HERE.parent / "load")]  # load: memory.py

from rounds import round_order  # noqa: E402
from servers import Pysfsd, free_port, from_tree, ganesha_module, ganesha_pid, network_namespace  # noqa: E402
from nfsd.rpc.client import RpcClient  # noqa: E402
from protocol import mount3, nfs3  # noqa: E402
from protocol.rpc import AUTH_SYS, Credentials  # noqa: E402

ROOT = Credentials(AUTH_SYS, 0, 0, (), b"bench")
SYNC, ASYNC = "rw,no_root_squash,insecure", "rw,no_root_squash,insecure,async"
MiB = 1 << 20
BIG = 16 * MiB


@contextlib.contextmanager
def started(name: str, work: Path, options: str,
            trees: dict[str, Path]) -> Iterator[tuple[int, int, int, int | None, Path]]:
    """(port, MOUNT port, pid, network namespace pid, export) of server ``name`` started
    afresh (``pysfsd...@TREE``: from checkout ``trees[TREE]``)."""
    export = work / f"export-{name}"
    shutil.rmtree(export, ignore_errors=True)
    export.mkdir(parents=True)
    (export / "file").write_bytes(b"x")
    (export / "big").write_bytes(bytes(BIG))  # (read1m; just written: the host caches it)
    if name == "ganesha":
        gwork = work / "ganesha"
        shutil.rmtree(gwork, ignore_errors=True)
        port = free_port()
        with ganesha_module().Ganesha(export, port=port, mount_port=port + 1, work_dir=gwork,
                                      private=True) as g:
            pid = ganesha_pid(gwork)
            assert pid is not None, "ganesha wrote no pid file"
            yield port, port + 1, pid, g.namespace_pid, export
        return
    variant, _, tree = name.partition("@")
    workers = int(variant.split("-w", 1)[1]) if "-w" in variant else None
    with from_tree(trees[tree] if tree else None), \
            Pysfsd(export, work / f"state-{name}", options=options, workers=workers) as p:
        assert p.pid is not None
        yield p.port, p.port, p.pid, None, export


def _schedstats(pid: int) -> Iterator[tuple[str, int, int, int]]:
    """Per thread of ``pid`` and of its children: its name ("parent main", "child1 other
    threads"...), nanoseconds on a CPU and runnable but not running, and times put on a CPU
    (/proc/PID/task/*/schedstat)."""
    pids = [pid] + [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                    for c in (t / "children").read_text().split()]
    for number, p in enumerate(pids):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ran, delay, slices = (task / "schedstat").read_text().split()[:3]
                    thread = "main" if task.name == str(p) else "other threads"  # (pool threads share a comm)
                    yield f"{'parent' if number == 0 else f'child{number}'} {thread}", int(ran), int(delay), int(slices)


def scheduled(pid: int) -> tuple[float, float, int]:
    """Seconds the threads of ``pid`` and of its children spent on a CPU (nanoseconds in
    schedstat: /proc's utime and stime count 10 ms ticks, too coarse for a thousand calls of
    100 us) and runnable but not running, and how many times they were put on a CPU (about
    one per wake-up)."""
    cpu = total = runs = 0
    for _, ran, delay, slices in _schedstats(pid):
        cpu, total, runs = cpu + ran, total + delay, runs + slices
    return cpu / 1e9, total / 1e9, runs


class Call(NamedTuple):
    """One measured call: when it was sent (wall clock, to set beside the server's trace or
    strace -tt), its procedure, its latency and how long the client itself waited for a CPU
    meanwhile (its run delay: a slow call the server is not to blame for), in seconds."""
    sent: float
    proc: int
    latency: float
    client_waited: float


def run_delay(fd: int) -> float:
    """Seconds the thread whose schedstat ``fd`` is open spent runnable but not running."""
    return int(os.pread(fd, 64, 0).split()[1]) / 1e9


def by_thread(pid: int) -> dict[str, tuple[float, int]]:
    """Seconds on a CPU and times put on one, per thread of ``pid`` and its children, named
    "process thread" (``--threads``: which of the server's threads the CPU and the wake-ups
    of a call go to: the worker serving it, the primary's watcher and inbox, pool threads)."""
    seen: dict[str, tuple[float, int]] = {}
    for name, ran, _, slices in _schedstats(pid):
        cpu, runs = seen.get(name, (0.0, 0))
        seen[name] = (cpu + ran / 1e9, runs + slices)
    return seen


def measure(port: int, mount_port: int, pid: int, netns: int | None, export: Path, op: str,
            think: float, calls: int, follower: bool = False) -> dict[str, Any]:
    """``follower``: an idle connection opened first holds the primary, so a follower of a
    several-worker pysfsd serves the measured one (what a lone client cost when it landed
    there: its notes and inotify echoes wake the primary too)."""
    # A connection opened at once after the previous one closed (the next --think, the next
    # block) went to the follower in 5 of 20 tries (none with 1 ms between): the primary
    # still counted the closed one.  The pause keeps the measured client where one alone
    # lands, the primary.
    time.sleep(0.05)
    with contextlib.ExitStack() as stack:
        with network_namespace(netns):
            if follower:
                stack.enter_context(RpcClient(port, cred=ROOT)).call(nfs3.NFS3, 0, None)
            client = RpcClient(port, cred=ROOT)
            with RpcClient(mount_port, cred=ROOT) as mount:
                root = nfs3.nfs_fh3(bytes(mount.call(mount3.MOUNT3, 1, str(export).encode())[1].fhandle))
        return _measured(client, root, pid, op, think, calls)


def _measured(client: RpcClient, root: Any, pid: int, op: str, think: float, calls: int) -> dict[str, Any]:
    """Per call figures over the measured calls; ``calls``: each one's wall-clock time sent,
    procedure and latency (s)."""
    with client:
        warm, measured = script(client, root, op, 200), script(client, root, op, calls)
        reply = None
        for proc, args in warm:
            reply = client.call(nfs3.NFS3, proc, args(reply) if callable(args) else args)
        settle(pid)
        cpu0, delay0, runs0 = scheduled(pid)
        threads0 = by_thread(pid)
        calls_made: list[Call] = []
        schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        for proc, args in measured:
            if callable(args):  # built from the previous call's reply (cwc: the new file's handle)
                args = args(reply)
            waited = run_delay(schedstat)
            sent = time.time()
            start = time.perf_counter()
            reply = client.call(nfs3.NFS3, proc, args)
            now = time.perf_counter()
            calls_made.append(Call(sent, proc, now - start, run_delay(schedstat) - waited))
            until = now + think
            while time.perf_counter() < until:  # the guest computing
                pass
        cpu1, delay1, runs1 = scheduled(pid)
        threads1 = by_thread(pid)
        os.close(schedstat)
        settle(pid)  # what the calls left for later (an index flush deferred past the last)
        cpu_all = scheduled(pid)[0]
    n = len(calls_made)
    return {"cpu_us": (cpu1 - cpu0) / n * 1e6, "cpu_all_us": (cpu_all - cpu0) / n * 1e6,
            "delay_us": (delay1 - delay0) / n * 1e6, "runs": (runs1 - runs0) / n,
            **summary([call.latency for call in calls_made]),
            "threads": {name: ((cpu - threads0.get(name, (0.0, 0))[0]) / n * 1e6,
                               (runs - threads0.get(name, (0.0, 0))[1]) / n)
                        for name, (cpu, runs) in threads1.items()},
            "calls": calls_made}


def paired_ratio(runs: list[dict[str, Any]], first: list[dict[str, Any]]) -> float:
    """The median over rounds (or blocks) of a server's CPU per call divided by the first
    server's in the same one: the machine's load drifts between rounds (others' builds and
    tests), and two servers measured seconds apart share most of it, so the ratio of a pair
    varies less than either figure."""
    return statistics.median(r["cpu_us"] / f["cpu_us"] for r, f in zip(runs, first))


def summary(latencies: list[float]) -> dict[str, float]:
    """Microseconds: the mean, the part of it the slowest tenth of the calls makes (``tail``:
    whether a mean is a slow median or a few slow calls), p50, p90, p99 and the slowest."""
    ordered = sorted(latencies)
    n = len(ordered)
    return {"mean_us": statistics.fmean(ordered) * 1e6,
            "tail_us": sum(ordered[n * 9 // 10:]) / n * 1e6,
            "p50_us": ordered[n // 2] * 1e6, "p90_us": ordered[n * 9 // 10] * 1e6,
            "p99_us": ordered[n * 99 // 100] * 1e6, "max_us": ordered[-1] * 1e6}


HISTOGRAM_US = (100, 200, 300, 400, 500, 700, 1000, 2000, 5000, 10000, 50000)


def histogram(latencies: list[float]) -> str:
    """Calls per latency bucket (upper bounds in microseconds): whether a mean is a slow
    median or a few slow calls."""
    counts = [0] * (len(HISTOGRAM_US) + 1)
    for latency in latencies:
        counts[next((i for i, b in enumerate(HISTOGRAM_US) if latency * 1e6 <= b), len(HISTOGRAM_US))] += 1
    labels = [f"<={b}" for b in HISTOGRAM_US] + [f">{HISTOGRAM_US[-1]}"]
    return " ".join(f"{label}:{c}" for label, c in zip(labels, counts) if c)


def settle(pid: int, timeout: float = 15.0) -> None:
    """Wait until the server is idle (the index flush of what the unmeasured calls made,
    deferred while they came, is not counted in what follows)."""
    deadline = time.monotonic() + timeout
    before = scheduled(pid)[0]
    while time.monotonic() < deadline:
        time.sleep(0.6)  # longer than the periodic flush's 0.5 s
        now = scheduled(pid)[0]
        if now - before < 0.003:
            return
        before = now


_serial = iter(range(1 << 62))


def script(client: RpcClient, root: Any, op: str, calls: int) -> list[tuple[int, Any]]:
    """The calls (procedure, arguments) of ``op``: GETATTR or SETATTR (mode, back and forth)
    of one file; ``create`` as the VM's ``: > f`` makes them, a LOOKUP that finds nothing
    then a CREATE UNCHECKED, per new file; ``cwc`` as the VM's ``echo "line N" > f``: those
    and a WRITE FILE_SYNC of "line N\\n" to the new file (the kernel client's flush at close
    of a file it wrote once); ``remove``: REMOVEs of files created beforehand
    (unmeasured); ``lookup``: the VM's ``stat`` after a remount, each of those files looked
    up once, by a name the client never looked up (so found by no cache of the client's);
    ``read1m``: READs of 1 MiB in turn through a 16 MiB file the server's host caches (the
    VM's ``dd_read_cold``: the guest drops its cache, not the host's)."""
    if op == "read1m":
        found = client.call(nfs3.NFS3, 3, nfs3.LOOKUP3args(nfs3.diropargs3(root, b"big")))
        big = nfs3.nfs_fh3(bytes(found[1].object.data))
        return [(6, nfs3.READ3args(big, i * MiB % BIG, MiB)) for i in range(calls)]
    if op in ("getattr", "setattr"):
        found = client.call(nfs3.NFS3, 3, nfs3.LOOKUP3args(nfs3.diropargs3(root, b"file")))
        handle = nfs3.nfs_fh3(bytes(found[1].object.data))
        if op == "getattr":
            return [(1, nfs3.GETATTR3args(handle))] * calls
        modes = [nfs3.sattr3(m, None, None, None, (0, None), (0, None)) for m in (0o644, 0o600)]
        return [(2, nfs3.SETATTR3args(handle, modes[i % 2], None)) for i in range(calls)]
    per_file = {"create": 2, "cwc": 3}.get(op, 1)
    names = [nfs3.diropargs3(root, b"f%d" % next(_serial)) for _ in range(calls // per_file)]
    how = (nfs3.createmode3.UNCHECKED, nfs3.sattr3(0o644, None, None, None, (0, None), (0, None)))
    creates = [(8, nfs3.CREATE3args(where, how)) for where in names]
    if op == "create":
        return [c for where, create in zip(names, creates) for c in ((3, nfs3.LOOKUP3args(where)), create)]
    if op == "cwc":
        return [c for i, (where, create) in enumerate(zip(names, creates))
                for c in ((3, nfs3.LOOKUP3args(where)), create, (7, _write_line(i)))]
    for proc, args in creates:
        client.call(nfs3.NFS3, proc, args)
    if op == "lookup":
        return [(3, nfs3.LOOKUP3args(where)) for where in names]
    return [(12, nfs3.REMOVE3args(where)) for where in names]


def _write_line(i: int) -> Any:
    """WRITE FILE_SYNC of "line ``i``\\n" at offset 0 of the file a CREATE reply made."""
    data = b"line %d\n" % i

    def args(created: Any) -> Any:
        handle = nfs3.nfs_fh3(bytes(created[1].obj.data))
        return nfs3.WRITE3args(handle, 0, len(data), nfs3.stable_how.FILE_SYNC, data)
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="pysfsd-w1,ganesha")
    p.add_argument("--op", choices=("getattr", "setattr", "create", "cwc", "remove", "lookup", "read1m"), default="getattr")
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                   help="servers pysfsd...@NAME run from checkout PATH")
    p.add_argument("--think", default="0,1", help="comma list of milliseconds between calls")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--blocks", type=int, default=0, metavar="N",
                   help="instead of --rounds (each server started afresh per round): every server"
                        " started once, then N blocks of --calls on each, the order turned round")
    p.add_argument("--follower", action="store_true",
                   help="an idle connection holds the primary: a follower serves the measured one")
    p.add_argument("--async", dest="async_", action="store_true", help="pysfsd's export is async")
    p.add_argument("--work", type=Path, default=Path("/tmp") / f"bench-lone-think-{os.getpid()}")
    p.add_argument("--threads", action="store_true",
                   help="also print CPU and runs per call by server process and thread")
    p.add_argument("--jobs", action="store_true",
                   help="time pysfsd's own jobs (flush, sync, watcher, GC...) beside its calls"
                        " (scripts/benchmarks/jobtrace) and print whose slow calls overlapped which")
    p.add_argument("--timeline", type=Path, metavar="CSV",
                   help="write every measured call (server, think, round, wall-clock time sent,"
                        " procedure, latency us): to set slow calls beside the server's trace")
    args = p.parse_args(argv)
    if args.blocks and args.jobs:
        p.error("--jobs times each server's logs per round: not with --blocks")
    thinks = [float(t) / 1000 for t in args.think.split(",")]
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in args.tree)}
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    if args.jobs:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(JOBTRACE), os.environ.get("PYTHONPATH"))))
    names = args.servers.split(",")
    options = ASYNC if args.async_ else SYNC
    try:
        if args.blocks:
            with contextlib.ExitStack() as stack:
                up = {name: stack.enter_context(started(name, args.work, options, trees)) for name in names}
                for number in range(args.blocks):
                    for think in thinks:
                        for name in round_order(names, number):
                            results.setdefault((name, think), []).append(
                                measure(*up[name], args.op, think, args.calls, args.follower))
        for number in range(0 if args.blocks else args.rounds):
            for name in round_order(names, number):
                traced = args.work / f"jobs-{name}-{number}"
                traced.mkdir(parents=True)
                os.environ["PYSFSD_JOBTRACE"] = str(traced) if args.jobs else ""
                with started(name, args.work, options, trees) as (port, mount_port, pid, netns, export):
                    for think in thinks:
                        results.setdefault((name, think), []).append(
                            measure(port, mount_port, pid, netns, export, args.op, think, args.calls, args.follower))
                if args.jobs:  # (the server has stopped: its logs are whole)
                    for think in thinks:
                        run = results[name, think][-1]
                        run["jobs"] = attribute(run["calls"], traced)
                        run["job_cpu"] = job_cpu(run["calls"], traced)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    if args.timeline:
        write_timeline(args.timeline, results)
    print(f"{args.op}, one call at a time, {args.calls} calls, medians of "
          + (f"{args.blocks} blocks, servers started once" if args.blocks else f"{args.rounds} rounds"))
    width = max(16, *(len(name) for name, _ in results))
    columns = ("mean", "tail", "p50", "p90", "p99", "max")
    print(f"{'server':{width}} {'think ms':>8} {'CPU us/call':>12} {'+later':>7} {'run delay us':>13} {'runs':>5} "
          + " ".join(f"{c + ' us':>8}" for c in columns) + " vs first")
    for (name, think), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k.endswith("_us") or k == "runs"}
        print(f"{name:{width}} {think * 1000:8.2f} {med['cpu_us']:12.0f} {med['cpu_all_us']:7.0f} {med['delay_us']:13.0f} {med['runs']:5.2f} "
              + " ".join(f"{med[c + '_us']:8.0f}" for c in columns)
              + f" {paired_ratio(runs, results[names[0], think]):8.3f}"
              + f"  CPU by {'block' if args.blocks else 'round'} " + " ".join(f"{r['cpu_us']:.0f}" for r in runs))
    if args.threads:
        print("CPU us per call and runs per call, by process and thread (medians of the rounds)")
        for (name, think), runs in results.items():
            for thread in sorted({t for r in runs for t in r["threads"]}):
                cpu = statistics.median(r["threads"].get(thread, (0.0, 0.0))[0] for r in runs)
                woken = statistics.median(r["threads"].get(thread, (0.0, 0.0))[1] for r in runs)
                if cpu >= 1 or woken >= 0.01:
                    print(f"{name:{width}} {think * 1000:5.2f} {thread:32} {cpu:7.1f} us {woken:5.2f} runs")
    if args.jobs:
        print("latency beyond each procedure's median (us per call, all rounds), by the server's own"
              " jobs running meanwhile")
        for (name, think), runs in results.items():
            if not any(r.get("jobs") for r in runs):
                continue
            merged: dict[str, tuple[int, float]] = {}
            for r in runs:
                for key, (count, excess) in r["jobs"].items():
                    merged[key] = (merged.get(key, (0, 0.0))[0] + count, merged.get(key, (0, 0.0))[1] + excess)
            n = sum(count for count, _ in merged.values())
            for key, (count, excess) in sorted(merged.items(), key=lambda item: -item[1][1]):
                print(f"{name:{width}} {think * 1000:5.2f} {key:40} {count:6} calls {excess / n * 1e6:7.1f} us")
    if args.jobs:
        print("CPU of the server's own jobs that began among the measured calls, by kind (us per call"
              " and runs per 1000 calls, medians of the rounds; jobs of 0.2 ms or more)")
        for (name, think), runs in results.items():
            for kind in sorted({k for r in runs for k in r.get("job_cpu", {})}):
                per = [r.get("job_cpu", {}).get(kind, (0, 0.0)) for r in runs]
                made = [len(r["calls"]) for r in runs]
                cpu = statistics.median(spent / calls * 1e6 for (_, spent), calls in zip(per, made))
                ran = statistics.median(count / calls * 1000 for (count, _), calls in zip(per, made))
                print(f"{name:{width}} {think * 1000:5.2f} {kind:40} {cpu:7.1f} us {ran:7.1f} runs")
    print("latency histogram, all rounds, calls per bucket (us), by procedure")
    for (name, think), runs in results.items():
        calls = [call for r in runs for call in r["calls"]]
        for proc in sorted({call.proc for call in calls}):
            mine = [call.latency for call in calls if call.proc == proc]
            figures = summary(mine)
            print(f"{name:{width}} {think * 1000:5.2f} {PROCEDURES.get(proc, proc)!s:8} n={len(mine)}"
                  + "".join(f" {c} {figures[c + '_us']:.0f}" for c in ("mean", "p50", "p99", "max"))
                  + f"  {histogram(mine)}")
    return 0


JOBTRACE = HERE / "jobtrace"  # its sitecustomize.py times a pysfsd server's jobs and calls


def _job_lines(directory: Path) -> Iterator[tuple[str, float, float, list[str]]]:
    """jobtrace's lines in ``directory``: (kind, began, ended, what follows: a serve's run
    delay, a job's CPU, in microseconds)."""
    for log in directory.glob("jobs-*.log"):
        for line in log.read_text().splitlines():
            _, _, kind, begun, ended, *extra = line.split()
            yield kind, float(begun), float(ended), extra


def job_cpu(calls: list[Call], directory: Path) -> dict[str, tuple[int, float]]:
    """``--jobs``: the thread CPU of the server's own jobs (flush, sync...) that began while
    the measured calls came, by kind -> (runs, CPU seconds): which part of a call's CPU the
    server spends beside serving it (the index flush of its note, the handle table's sync),
    where ``--threads`` only tells the threads apart."""
    if not calls:
        return {}
    first, last = calls[0].sent, calls[-1].sent + calls[-1].latency
    found: dict[str, tuple[int, float]] = {}
    for kind, begun, _, extra in _job_lines(directory):
        if kind != "serve" and extra and first <= begun <= last:
            count, spent = found.get(kind, (0, 0.0))
            found[kind] = (count + 1, spent + float(extra[0]) / 1e6)
    return found


def attribute(calls: list[Call], directory: Path) -> dict[str, tuple[int, float]]:
    """``--jobs``: the calls' latency beyond their procedure's median (their excess), by which
    of the server's own jobs (jobtrace's logs in ``directory``) ran while they did: job kinds
    -> (calls, excess seconds).  The calls no job overlapped are split by how they were
    slow: "client waited for a CPU" or "server waited for a CPU" when the client's run delay
    during the call, or the serving thread's (woken by the call and serving it), was half
    their excess or more; else "no job of the server's".  A long job (the sync's fdatasync)
    also catches calls slow for other reasons: a job's figure is an upper bound, and running
    without the job (a variant tree, alternated) is the test."""
    jobs: list[tuple[float, float, str]] = []
    serves: list[tuple[float, float, float]] = []
    for kind, begun, ended, extra in _job_lines(directory):
        if kind == "serve":
            serves.append((begun, ended, int(extra[0]) / 1e6 if extra else 0.0))
        elif kind != "gc0" or ended - begun >= 0.0002:
            jobs.append((begun, ended, kind))
    serves.sort()
    medians = {proc: statistics.median(call.latency for call in calls if call.proc == proc)
               for proc in {call.proc for call in calls}}
    found: dict[str, tuple[int, float]] = {}
    for call in calls:
        sent, end = call.sent, call.sent + call.latency
        kinds = sorted({kind for start, stop, kind in jobs if start < end and stop > sent})
        excess = max(0.0, call.latency - medians[call.proc])
        i = bisect.bisect_left(serves, (sent, 0.0, 0.0))
        waited = serves[i][2] if i < len(serves) and serves[i][0] < end else 0.0
        if kinds:
            key = "+".join(kinds)
        elif excess and call.client_waited >= excess / 2:
            key = "client waited for a CPU"
        elif excess and waited >= excess / 2:
            key = "server waited for a CPU"
        else:
            key = "no job of the server's"
        count, total = found.get(key, (0, 0.0))
        found[key] = (count + 1, total + excess)
    return found


PROCEDURES = {1: "GETATTR", 2: "SETATTR", 3: "LOOKUP", 7: "WRITE", 8: "CREATE", 12: "REMOVE"}


def write_timeline(path: Path, results: dict[tuple[str, float], list[dict[str, Any]]]) -> None:
    """CSV of every measured call, by server, think and round."""
    with path.open("w") as out:
        out.write("server,think_ms,round,sent,procedure,latency_us,client_waited_us\n")
        for (name, think), runs in results.items():
            for number, run in enumerate(runs):
                for call in run["calls"]:
                    out.write(f"{name},{think * 1000:g},{number},{call.sent:.6f},{PROCEDURES.get(call.proc, call.proc)},"
                              f"{call.latency * 1e6:.0f},{call.client_waited * 1e6:.0f}\n")


if __name__ == "__main__":
    sys.exit(main())
