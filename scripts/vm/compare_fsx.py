#!/usr/bin/env python3
"""fsx and the cthon04-"basic"-style checks (workloads/fsx.sh, workloads/cthon_basic.sh)
through the Linux kernel client against pysfsd and NFS-Ganesha, side by side: what the
pytest (tests/vm/test_vm_fsx.py) runs, with more operations and seeds.

For every server, one VM boot per workload.  It prints, per fsx seed, PASS/FAIL and the md5
of the file fsx left (deterministic: the same on every server that passed) and, per cthon
step, OK/FAIL, with each server's seconds; then every failure's detail.  Exit status 0 when
every server passed everything, 1 otherwise.

Usage (root, for Ganesha; one VM at a time on this machine: run it under ``flock /tmp/vm.lock``):
    python scripts/vm/compare_fsx.py [--servers pysfsd,pysfsd-async,ganesha] [--seeds 1,2,3,4]
        [--ops 10000] [--len 262144] [--mount-opts rsize=4096,wsize=4096]

Servers as scripts/vm/compare_bench.py names them (``pysfsd``: the sync export,
``pysfsd-async``, ``-wN``, ``ganesha``; ``--tree NAME=PATH`` for ``pysfsd@NAME``).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import REPO, add_server_arguments, parse_servers, serving, vm_ready  # noqa: E402

WORKLOADS = REPO / "scripts" / "vm" / "workloads"
FSX_INFO = re.compile(r"^INFO fsx seed=(\S+) md5=(\S+) (.*)$")
DIGEST = re.compile(r"[0-9a-f]{8} size \d+")
INITRAMFS = re.compile(r"initramfs (\S+),")
STEP = re.compile(r"^STEP (\S+) (OK|FAIL)(?: rc=\d+)? ([0-9.]+)s")

Outcome = dict[str, str]  # row ("fsx seed 3", "cthon create_tree") -> "OK 1.2s md5..." / "FAIL ..."


def boot(vm: ModuleType, server: str, workload: str, env: dict[str, str], work: Path,
         tree: Path | None) -> tuple[Any, list[str], str]:
    """One VM boot of ``workload`` against a fresh ``server``: the run's result, the failures
    every workload shares (the run's own, host checks, a Traceback in pysfsd's log), and the
    initramfs it booted (named after a digest of the guest's files and the workload)."""
    booted: list[str] = []
    with serving(server, work, tree) as (export, port, mount_port, _pid):
        result = vm.run_vm_test(port, str(export), mount_port=mount_port, workload=WORKLOADS / workload,
                                guest_env=env, timeout=3600.0, log_dir=work / f"log-{server}-{workload}",
                                echo=lambda text: booted.extend(INITRAMFS.findall(text)))
    failures = [f"{server} {workload}: host check failed: {msg}" for msg in result.host_failures]
    if not result.passed:
        failures.append(f"{server} {workload}: {result.reason} (console: {result.console_log})")
    log = work / f"state-{server}" / "pysfsd.log"   # servers.Pysfsd's; Ganesha's is not read
    if log.exists() and "Traceback" in log.read_text(errors="replace"):
        failures.append(f"{server} {workload}: a Traceback in {log}")
    return result, failures, booted[0] if booted else "?"


def prepare(parser: argparse.ArgumentParser, args: argparse.Namespace, prefix: str
            ) -> tuple[list[str], dict[str, Path], ModuleType, Path, dict[str, str]] | None:
    """What every side-by-side VM script starts from: the servers, their trees, the VM runner,
    the work directory (a new one named ``prefix...`` unless --work) and the guest's
    MOUNT_OPTS from --mount-opts; None (said on stderr) when this machine cannot boot the VM."""
    servers, trees = parse_servers(parser, args.servers, args.tree)
    vm = vm_ready()
    if vm is None:
        return None
    work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    return servers, trees, vm, work, {"MOUNT_OPTS": args.mount_opts} if args.mount_opts else {}


def conclude(failures: list[str], work: Path) -> int:
    """Print the failures and where the logs are; the exit status (1: any failure)."""
    if failures:
        print("\nfailures:\n  " + "\n  ".join(failures))
    print(f"\nlogs in {work}")
    return 1 if failures else 0


def run_workload(vm: ModuleType, server: str, workload: str, env: dict[str, str], work: Path,
                 tree: Path | None) -> tuple[Outcome, list[str], str]:
    """One VM boot: the workload's rows, the failures' details (steps, host checks), and the
    initramfs it booted."""
    result, failures, initramfs = boot(vm, server, workload, env, work, tree)
    rows: Outcome = {}
    md5s: dict[str, str] = {}
    for _, line in result.lines:
        info = FSX_INFO.match(line)
        if info:
            md5s[info[1]] = f"{info[2][:8]} size {info[3].split()[3]}"
        step = STEP.match(line)
        if step and step[1] not in ("mount", "setup", "umount"):
            name = step[1].replace("fsx_seed_", "fsx seed ")
            row = name if name.startswith("fsx") else f"cthon {name}"
            seed = name.removeprefix("fsx seed ")
            rows[row] = f"{step[2]} {float(step[3]):5.1f}s" + (f" {md5s[seed]}" if seed in md5s else "")
            if step[2] == "FAIL":
                failures.append(f"{server} {workload}: {line}")
    return rows, failures, initramfs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--seeds", default="1,2,3,4", help="fsx seeds, comma-separated")
    parser.add_argument("--ops", type=int, default=10000, help="fsx operations per seed")
    parser.add_argument("--len", type=int, default=262144, help="fsx's largest file size")
    parser.add_argument("--mount-opts", default="", help="extra mount options, e.g. rsize=4096,wsize=4096")
    args = parser.parse_args(argv)
    ready = prepare(parser, args, "vmfsx-")
    if ready is None:
        return 2
    servers, trees, vm, work, mount = ready
    runs = {"fsx.sh": {"FSX_SEEDS": args.seeds, "FSX_OPS": str(args.ops), "FSX_LEN": str(args.len), **mount},
            "cthon_basic.sh": mount}
    results: dict[str, Outcome] = {s: {} for s in servers}
    failures: list[str] = []
    images: dict[str, str] = {}
    for s in servers:
        for workload, env in runs.items():
            t0 = time.monotonic()
            rows, failed, initramfs = run_workload(vm, s, workload, env, work, trees.get(s.partition("@")[2]))
            if initramfs != images.setdefault(workload, initramfs):   # scripts/vm edited meanwhile
                failed.append(f"{s} {workload}: booted {initramfs}, not {images[workload]} as the first server")
            results[s].update(rows)
            failures += failed
            print(f"{s} {workload}: {'FAIL' if failed else 'PASS'} ({time.monotonic() - t0:.0f} s)", flush=True)
    order = list(dict.fromkeys(row for s in servers for row in results[s]))
    width = max(len(r) for r in order) if order else 10
    print(f"\nfsx: seeds {args.seeds}, {args.ops} ops each, files up to {args.len} bytes"
          + (f", mount options {args.mount_opts}" if args.mount_opts else ""))
    print(f"{'':{width}}  " + "  ".join(f"{s:32}" for s in servers))
    for row in order:
        print(f"{row:{width}}  " + "  ".join(f"{results[s].get(row, 'missing'):32}" for s in servers))
    for row in (r for r in order if r.startswith("fsx")):
        digests = {m[0] if (m := DIGEST.search(results[s].get(row, ""))) else "none" for s in servers}
        if len(digests) > 1:
            failures.append(f"{row}: the servers' files differ: {sorted(digests)}")
    return conclude(failures, work)


if __name__ == "__main__":
    sys.exit(main())
