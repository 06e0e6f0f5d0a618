#!/usr/bin/env python3
"""The kernel client's workload (workloads/bench.sh) against pysfsd and NFS-Ganesha, phase
by phase, the servers interleaved (each round runs every server once; round 1 in the order
given, each later round that order rotated by one: ``rounds.round_order``), so the noise of this
shared machine, and whatever favours a place in a round, falls on all of them alike.

For every phase it prints the guest's seconds and the server's CPU seconds (utime+stime of
the server process and its children, read from /proc when the guest asks the host, outside
the phase's timing: bench.sh with ``VM_CPU_MARKS=1``), averaged over the rounds, and the
ratio ``Ganesha's time / this server's time`` (>= 1.0: as fast as Ganesha or faster).  With a
``sync`` server and its ``async`` twin in the run (``pysfsd`` and ``pysfsd-async``, the same
with ``-wN`` or ``@NAME``), it also prints what the ``sync`` export costs per phase (its
directory fsyncs and stable writes): the difference of their means (``sync_cost``).

Usage (root; one VM at a time on this machine, so check ``pgrep -f qemu-system`` first):
    python scripts/vm/compare_bench.py [--rounds 2] [--servers pysfsd,pysfsd-async,ganesha]

Servers: ``pysfsd`` (the export ``*(rw,no_root_squash,insecure)``, i.e. ``sync``),
``pysfsd-async`` (the same plus ``async``), both with the server's default worker count
(one per usable core, or ``PYSFSD_WORKERS``), either with ``-wN`` for ``--workers N``
(``pysfsd-w2``, ``pysfsd-async-w2``), ``ganesha`` (scripts/vm/ganesha.py ``--private``: in a
network namespace of its own, which the VM is started in).  ``--nconnect 2`` mounts with
``nconnect=2`` (several connections: what lets several workers serve one client).

``--tree NAME=PATH`` adds servers ``pysfsd@NAME`` (any pysfsd variant, e.g.
``pysfsd-async@base``) run from another checkout: old code against new in the same run,
interleaved (``git worktree add /tmp/base COMMIT``; the tree needs no venv of its own).

``--guest-env KEY=VALUE`` passes bench.sh a parameter (``VM_KEY``): ``MOUNT_OPTS=acregmin=30``
(more mount options), ``RM_AFTER=4`` (a pause before remove_3000): what showed that its GETATTRs
come from the client's attribute cache timing out, whichever the server (docs/design.rst).

``--profile PHASE:COMMAND`` runs COMMAND (``{pid}`` replaced by the pid of the process serving
the calls: a pysfsd's primary worker, where a lone client's every call runs; ``{server}`` by the
server's own pid, a pysfsd's supervisor; ``{out}`` by a file under the work directory named after
server, round and phase) from the phase's begin
mark to its end mark, then stops it with SIGINT and prints where its output went: e.g.
``--profile 'create_1000:strace -c -f -o {out} -p {pid}'`` (system calls per call) or
``--profile 'remove_3000:py-spy record --format raw -o {out} -p {pid}'``.  The profiler's own
cost falls on the phase, so compare its figures only with the same profiler on the other server.
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts" / "benchmarks" / "load_generator"))
sys.path.insert(0, str(REPO / "scripts" / "load"))  # for the driver: memory.py
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))
from bench_tags import load_vm  # noqa: E402  (scripts/vm/vm_mount_test.py, loaded by path)
from driver import cpu_split, server_cpu_by_process, server_pids  # noqa: E402
from rounds import round_order  # noqa: E402
from servers import Pysfsd, free_port, from_tree, ganesha_module, ganesha_pid  # noqa: E402

WORKLOAD = REPO / "scripts" / "vm" / "workloads" / "bench.sh"
INFO = re.compile(r"^INFO bench (\S+) secs=([0-9.]+)")
RTT = re.compile(r"^INFO rtt (\S+) ?(.*)$")
PYSFSD_OPTIONS = {"pysfsd": "rw,no_root_squash,insecure", "pysfsd-async": "rw,no_root_squash,insecure,async"}
WORKERS = re.compile(r"^(.*)-w(\d+)$")  # pysfsd-w2: --workers 2


def pysfsd_variant(server: str) -> tuple[str, int | None] | None:
    """The export options and worker count a pysfsd server name stands for (None: unknown)."""
    server = server.partition("@")[0]
    m = WORKERS.match(server)
    base, workers = (m[1], int(m[2])) if m else (server, None)  # None: the server's default
    if base not in PYSFSD_OPTIONS or (workers is not None and workers < 1):
        return None
    return PYSFSD_OPTIONS[base], workers

Phases = dict[str, tuple[float, float | None]]  # phase -> (guest seconds, server CPU seconds)
Calls = dict[str, str]  # phase -> the NFS calls the client made in it ("lookup=1000 create=1000")
# phase -> procedure -> [calls, queue ms, RTT ms, execute ms], summed (the client's mountstats)
Rtts = dict[str, dict[str, list[int]]]
# phase -> CPU seconds of each server process in it: the parent first, then its workers by pid
# (the primary, forked first, before the followers): which worker served the client's connection
Splits = dict[str, list[float]]


def parse_rtt(fields: str) -> dict[str, list[int]]:
    """bench.sh's "lookup=1000/3/280/290 create=..." as {"lookup": [1000, 3, 280, 290], ...}."""
    return {op: [int(v) for v in values.split("/")]
            for op, _, values in (f.partition("=") for f in fields.split())}


class PhaseProfiler:
    """A command run over one phase (``--profile PHASE:COMMAND``): started at the phase's
    begin mark, stopped with SIGINT at its end mark."""

    def __init__(self, spec: str, work: Path) -> None:
        self.phase, _, self.command = spec.partition(":")
        if not self.phase or not self.command:
            raise ValueError(f"--profile wants PHASE:COMMAND, not {spec!r}")
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self.outputs: list[Path] = []

    def mark(self, when: str, phase: str, pid: int | None, label: str) -> None:
        if phase != self.phase or pid is None:
            return
        if when == "begin":
            out = self.work / f"profile-{label}-{phase}.txt"
            self.outputs.append(out)
            # pysfsd's calls run in its primary worker, forked first: ``strace -f -p`` of the
            # supervisor saw none of them (-f follows later forks only)
            serving = (server_pids(pid)[1:] or [pid])[0]
            argv = [a.replace("{pid}", str(serving)).replace("{server}", str(pid)).replace("{out}", str(out))
                    for a in shlex.split(self.command)]
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached before the phase's first call
        elif self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextmanager
def serving(server: str, work: Path, tree: Path | None = None
            ) -> Iterator[tuple[Path, int, int, Callable[[], int | None]]]:
    """A fresh ``server`` (pysfsd from ``tree``) on a new empty export under ``work``, while
    in the block: (export, NFS port, MOUNT port, its pid); Ganesha in its own network
    namespace, which this thread enters meanwhile (the VM's qemu, started from it, reaches it)."""
    export = work / f"export-{server}"
    shutil.rmtree(export, ignore_errors=True)
    export.mkdir(parents=True)
    with ExitStack() as stack:
        if server == "ganesha":
            gwork = work / "ganesha"
            shutil.rmtree(gwork, ignore_errors=True)
            port = free_port()
            g = stack.enter_context(ganesha_module().Ganesha(export, port=port, mount_port=port + 1,
                                                             work_dir=gwork, private=True))
            stack.enter_context(g.namespace())
            yield export, port, port + 1, lambda: ganesha_pid(gwork)
        else:
            variant = pysfsd_variant(server)
            assert variant is not None, server
            options, workers = variant
            with from_tree(tree):
                p = stack.enter_context(Pysfsd(export, work / f"state-{server}", options=options, workers=workers))
            yield export, p.port, p.port, lambda: p.pid


def run_once(vm: ModuleType, server: str, work: Path, dd_mb: int, nconnect: int | None,
             profiler: PhaseProfiler | None = None, label: str = "",
             tree: Path | None = None, guest_env: dict[str, str] | None = None
             ) -> tuple[Phases, Calls, Rtts, Splits]:
    """One boot of the VM running bench.sh against a fresh ``server`` (pysfsd from ``tree``),
    with ``guest_env``'s parameters (``--guest-env``: bench.sh's VM_MOUNT_OPTS, VM_RM_AFTER)."""
    cpu: dict[tuple[str, str], dict[int, float] | None] = {}
    with serving(server, work, tree) as (export, port, mount_port, pid):
        def mark(args: list[str]) -> str:
            when, phase = args
            if profiler is not None and when == "end":
                profiler.mark(when, phase, pid(), label)  # its exit's cost is not the server's
            cpu[(when, phase)] = server_cpu_by_process(pid())
            if profiler is not None and when == "begin":
                profiler.mark(when, phase, pid(), label)
            return ""

        env = {**(guest_env or {}), "CPU_MARKS": "1", **({"NCONNECT": str(nconnect)} if nconnect else {})}
        result = vm.run_vm_test(port, str(export), mount_port=mount_port, workload=WORKLOAD, dd_mb=dd_mb,
                                guest_env=env, host_actions={"cpu": mark}, echo=lambda _: None)
    if not result.passed:
        raise RuntimeError(f"{server}: {result.reason}\n{result.console_tail()}")
    phases: Phases = {}
    calls: Calls = {}
    rtts: Rtts = {}
    splits: Splits = {}
    for _, line in result.lines:
        r = RTT.match(line)
        if r:
            rtts[r[1]] = parse_rtt(r[2])
            calls[r[1]] = " ".join(f"{op}={v[0]}" for op, v in rtts[r[1]].items())
        m = INFO.match(line)
        if m:
            name = m[1]
            split = cpu_split(cpu.get(("begin", name)), cpu.get(("end", name)))
            phases[name] = (float(m[2]), None if split is None else sum(split))
            if split is not None:
                splits[name] = split
    return phases, calls, rtts, splits


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def table(results: dict[str, list[Phases]], reference: str = "ganesha") -> str:
    servers = list(results)
    order = [name for name in results[servers[0]][0]] if results[servers[0]] else []
    head = ["phase"]
    for s in servers:
        head += [f"{s} s", f"{s} CPU s"]
        if s != reference and reference in results:
            head += [f"{s} ratio", f"{s} CPU ratio"]
    rows = [head]
    for phase in order:
        row = [phase]
        ref = results.get(reference, [])
        ref_s = mean([r[phase][0] for r in ref if phase in r])
        ref_cpu = mean([c for r in ref if phase in r and (c := r[phase][1]) is not None])
        for s in servers:
            runs = [r[phase] for r in results[s] if phase in r]
            secs = mean([t for t, _ in runs])
            cpus = mean([c for _, c in runs if c is not None])
            row += [" / ".join(f"{t:.2f}" for t, _ in runs), f"{cpus:.2f}"]
            if s != reference and reference in results:
                row += [f"{ref_s / secs:.2f}" if secs else "-",
                        f"{ref_cpu / cpus:.2f}" if cpus else "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def sync_cost(results: dict[str, list[Phases]]) -> str:
    """What the ``sync`` export's directory fsyncs (and the stable WRITEs) cost per phase: a
    ``sync`` server's mean seconds and CPU seconds minus those of its ``async`` twin in the
    same run (``pysfsd`` and ``pysfsd-async``, ``pysfsd-w2@base`` and ``pysfsd-async-w2@base``);
    empty when no such pair ran."""
    pairs = [(s, twin) for s in results if s.startswith("pysfsd") and not s.startswith("pysfsd-async")
             and (twin := s.replace("pysfsd", "pysfsd-async", 1)) in results]
    if not pairs:
        return ""
    order = [name for name in results[pairs[0][0]][0]] if results[pairs[0][0]] else []
    lines = ["sync minus async, seconds / CPU seconds (the directory fsyncs and stable writes):"]
    for phase in order:
        cells = []
        for sync, twin in pairs:
            diffs = []
            for index in (0, 1):
                a = [v for r in results[sync] if phase in r and (v := r[phase][index]) is not None]
                b = [v for r in results[twin] if phase in r and (v := r[phase][index]) is not None]
                diffs.append(f"{mean(a) - mean(b):+.2f}" if a and b else "-")
            cells.append(f"{sync}: {diffs[0]} / {diffs[1]}")
        lines.append(f"  {phase:24} " + "   ".join(cells))
    return "\n".join(lines)


def rtt_table(rtts: dict[str, list[Rtts]], results: dict[str, list[Phases]]) -> str:
    """Per phase and procedure, for each server: calls per round, then the client's mean RTT
    and mean execute time (queue + RTT + its own work) per call in microseconds, over all
    rounds; per phase, the share of the guest's seconds that went in RTT (the rest is the
    guest's own CPU and think time between calls)."""
    servers = list(rtts)
    head = ["phase", "op"] + [f"{s} {col}" for s in servers for col in ("calls", "rtt us", "exec us")]
    rows = [head]
    order = list(rtts[servers[0]][0]) if rtts[servers[0]] else []
    for phase in order:
        ops = list(dict.fromkeys(op for s in servers for r in rtts[s] for op in r.get(phase, {})))
        row = [phase, "rtt share"]
        for s in servers:
            rtt_ms = sum(v[2] for r in rtts[s] for v in r.get(phase, {}).values())
            secs = sum(r[phase][0] for r in results[s] if phase in r)
            row += ["", f"{rtt_ms / 10 / secs:.0f} %" if secs else "-", ""]
        rows.append(row)
        for op in ops:
            row = ["", op]
            for s in servers:
                runs = [r[phase][op] for r in rtts[s] if op in r.get(phase, {})]
                n = sum(v[0] for v in runs)
                row += ["/".join(str(v[0]) for v in runs) or "0",
                        f"{1000 * sum(v[2] for v in runs) / n:.0f}" if n else "-",
                        f"{1000 * sum(v[3] for v in runs) / n:.0f}" if n else "-"]
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--servers``, ``--tree`` and ``--work``, as every side-by-side VM script takes them."""
    parser.add_argument("--servers", default="pysfsd,pysfsd-async,ganesha")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="servers pysfsd...@NAME run from the checkout at PATH")
    parser.add_argument("--work", type=Path, help="exports, state and logs (default: a new directory under /tmp)")


def parse_servers(parser: argparse.ArgumentParser, names: str, tree_args: list[str]
                  ) -> tuple[list[str], dict[str, Path]]:
    """``--servers`` as a list and ``--tree NAME=PATH`` as {NAME: PATH}; a server name that is
    unknown or names a tree not given is a usage error."""
    servers = names.split(",")
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in tree_args)}
    for s in servers:
        if s != "ganesha" and pysfsd_variant(s) is None:
            parser.error(f"unknown server {s!r}")
        if "@" in s and s.partition("@")[2] not in trees:
            parser.error(f"{s}: no --tree {s.partition('@')[2]}=PATH")
    return servers, trees


def vm_ready() -> ModuleType | None:
    """The VM runner module, or None (said on stderr) when this machine cannot boot the VM."""
    vm = load_vm()
    missing = vm.missing_prerequisites()
    if missing:
        print("cannot run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return None
    return vm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dd-mb", type=int, default=100)
    parser.add_argument("--nconnect", type=int, help="mount option nconnect=N")
    parser.add_argument("--guest-env", action="append", default=[], metavar="KEY=VALUE",
                        type=load_vm()._key_value, help="bench.sh parameter VM_KEY, e.g. MOUNT_OPTS=acregmin=30 "
                        "or RM_AFTER=4 (repeatable)")
    parser.add_argument("--profile", metavar="PHASE:COMMAND",
                        help="run COMMAND ({pid}, {out} substituted) over PHASE, e.g. 'create_1000:strace -c -f -o {out} -p {pid}'")
    args = parser.parse_args(argv)
    servers, trees = parse_servers(parser, args.servers, args.tree)
    vm = vm_ready()
    if vm is None:
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="vmcompare-"))
    profiler = PhaseProfiler(args.profile, work) if args.profile else None
    results: dict[str, list[Phases]] = {s: [] for s in servers}
    calls: dict[str, Calls] = {}
    rtts: dict[str, list[Rtts]] = {s: [] for s in servers}
    splits: dict[str, list[Splits]] = {s: [] for s in servers}
    for rnd in range(args.rounds):
        for s in round_order(servers, rnd):
            t0 = time.monotonic()
            phases, calls[s], rtt, split = run_once(vm, s, work, args.dd_mb, args.nconnect, profiler, f"{s}-r{rnd + 1}",
                                                    trees.get(s.partition("@")[2]) if "@" in s else None,
                                                    dict(args.guest_env))
            results[s].append(phases)
            rtts[s].append(rtt)
            splits[s].append(split)
            total = phases.get("total", (float("nan"), None))[0]
            print(f"round {rnd + 1} {s}: total {total:.2f} s (run {time.monotonic() - t0:.0f} s)", flush=True)
    for s in servers:  # the total's CPU: the sum of the phases'
        for phases in results[s]:
            if "total" in phases:
                cpus = [c for name, (_, c) in phases.items() if name != "total" and c is not None]
                phases["total"] = (phases["total"][0], sum(cpus))
    print(table(results))
    cost = sync_cost(results)
    if cost:
        print("\n" + cost)
    print("\nNFS calls per phase (the client's counters, last round):")
    for phase in calls[servers[0]]:
        for s in servers:
            print(f"  {phase:24} {s:13} {calls[s].get(phase, '')}")
    print("\nCPU seconds per server process (parent, then workers: the primary first), each round:")
    for phase in calls[servers[0]]:
        for s in servers:
            if any(len(r.get(phase, [])) > 1 for r in splits[s]):
                print(f"  {phase:24} {s:13} " + "   ".join(
                    "/".join(f"{c:.2f}" for c in r.get(phase, [])) for r in splits[s]))
    print("\nPer call, as the kernel client saw it (mountstats, all rounds):")
    print(rtt_table(rtts, results))
    if profiler is not None:
        print("\nprofiles: " + " ".join(str(p) for p in profiler.outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
