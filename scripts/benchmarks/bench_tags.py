#!/usr/bin/env python3
"""Tagging 10,000 files one by one through the Linux kernel client, against as many plain
creates (issue 15; target: tagging within 2x of creating).

Starts pysfsd on an empty export, boots the project's qemu VM (scripts/vm/) with
scripts/vm/workloads/tags_bench.sh, which times four loops of N files each: ``: > bulk/fI``
(shell redirections, no fork: the files to tag), ``touch plain/fI`` and ``ln -s ../bulk/fI
links/`` (plain creates, one forked command per file) and ``ln -s ../../bulk/fI tag:/bulk/``
(tagging, one forked command per file).  The guest asks the host to mark each phase, so the
server's CPU time (utime+stime from /proc, its children included) is measured per phase too.
Prints, for every phase, the seconds the guest measured and those between the host's marks
(they differ when the emulated guest's clock lags under load), files/s of the guest's time and
of the server's CPU time, and the ratios.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts" / "benchmarks" / "load_generator"))
sys.path.insert(0, str(REPO / "scripts" / "load"))  # for the driver: memory.py

from driver import server_cpu_seconds  # noqa: E402
from servers import Pysfsd  # noqa: E402

_INFO = re.compile(r"INFO phase=(\S+) files=(\d+) secs=([\d.]+)")


def load_vm():
    path = REPO / "scripts" / "vm" / "vm_mount_test.py"
    spec = importlib.util.spec_from_file_location("vm_mount_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=10_000, help="files per loop (default 10000)")
    p.add_argument("--work-dir", type=Path, default=None, help="export, state and logs (default: a temporary one)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole VM run")
    args = p.parse_args()
    vm = load_vm()
    missing = vm.missing_prerequisites()
    if missing:
        print("cannot run the VM: " + "; ".join(missing), file=sys.stderr)
        return 2
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="pysfsd-bench-tags-"))
    export = work / "export"
    export.mkdir(parents=True, exist_ok=True)
    marks: dict[str, tuple[float, float]] = {}
    with Pysfsd(export, work / "server") as server:
        def mark(words: list[str]) -> str:
            cpu = server_cpu_seconds(server.pid)
            marks[words[0]] = (time.monotonic(), cpu or 0.0)
            return f"{cpu:.2f}"

        result = vm.run_vm_test(server.port, str(export), host_dir=export, log_dir=work / "vm",
                                workload=REPO / "scripts" / "vm" / "workloads" / "tags_bench.sh",
                                timeout=args.timeout, guest_env={"TAG_N": str(args.files)},
                                host_actions={"mark": mark}, echo=lambda line: None)
    if not result.passed:
        print(result.summary(), file=sys.stderr)
        return 1
    rates: dict[str, tuple[float, float]] = {}
    print(f"{'phase':<14} {'files':>6} {'guest s':>8} {'host s':>8} {'files/s':>9} {'server CPU s':>13} "
          f"{'files/s CPU':>12}")
    for _, line in result.lines:
        m = _INFO.search(line)
        if not m:
            continue
        phase, files, secs = m[1], int(m[2]), float(m[3])
        rate = files / secs if secs > 0 else float("inf")
        (t0, cpu0), (t1, cpu1) = marks[f"{phase}-start"], marks[f"{phase}-end"]
        cpu = cpu1 - cpu0
        per_cpu = files / cpu if cpu > 0 else float("inf")
        rates[phase] = (rate, per_cpu)
        print(f"{phase:<14} {files:>6} {secs:>8.1f} {t1 - t0:>8.1f} {rate:>9.1f} {cpu:>13.2f} {per_cpu:>12.1f}")
    tag = rates.get("tag-ln-s")
    for base in ("create-touch", "symlink-real"):
        if tag and base in rates:
            print(f"{base} rate / tagging rate: {rates[base][0] / tag[0]:.2f} (guest time), "
                  f"{rates[base][1] / tag[1]:.2f} (server CPU time); target: at most 2")
    print(f"logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
