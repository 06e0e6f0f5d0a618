#!/usr/bin/env python3
"""The kernel client's benchmark workload (workloads/bench.sh) against pysfsd with one
and with several worker processes, and against NFS-Ganesha, interleaved round by round:
each phase's seconds, the total, and the server's CPU seconds (its processes summed).

    python scripts/vm/bench_workers.py --root /tmp/vm-workers --servers pysfsd,pysfsd-w2,ganesha \\
        --nconnect 2 --rounds 2

pysfsd-wN is pysfsd with ``--workers N``.  Ganesha runs in a private network namespace
with its own rpcbind (as the load generator runs it), and the VM is started inside that
namespace, so its 10.0.2.2 reaches Ganesha's loopback there and the host's rpcbind is
left alone.  The VM is heavy (software emulation): run one of these at a time.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1]), str(HERE.parent / "benchmarks" / "load_generator"),
                str(HERE.parent / "load")]

from driver import server_cpu_seconds  # noqa: E402  (scripts/benchmarks/load_generator)
from servers import Pysfsd, free_port, ganesha_module, ganesha_pid, network_namespace  # noqa: E402
from vm_mount_test import run_vm_test  # noqa: E402

NAN = float("nan")
_PHASE = re.compile(r"INFO bench (\S+) secs=([\d.]+)")


def one_run(name: str, root: Path, nconnect: int, round_no: int) -> dict[str, float]:
    export = root / f"{name}-export"
    shutil.rmtree(export, ignore_errors=True)
    export.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if name == "ganesha":
            mount_port, port = free_port(), free_port()
            work_dir = root / "ganesha-run"
            server = stack.enter_context(ganesha_module().Ganesha(
                export, port=port, mount_port=mount_port, work_dir=work_dir, private=True))
            pid, netns_pid = ganesha_pid(work_dir), server.namespace_pid
        else:
            workers = int(name.split("-w")[1]) if "-w" in name else 1
            srv = stack.enter_context(Pysfsd(export, root / f"{name}-run", workers=workers))
            port, mount_port, pid, netns_pid = srv.port, srv.port, srv.pid, None
        cpu0 = server_cpu_seconds(pid)
        with network_namespace(netns_pid):  # qemu joins Ganesha's namespace (None: ours)
            result = run_vm_test(port, str(export), mount_port=mount_port, host_dir=export,
                                 workload=HERE / "workloads" / "bench.sh", timeout=1800,
                                 guest_env={"NCONNECT": str(nconnect)} if nconnect > 1 else None,
                                 echo=lambda line: None)
        cpu1 = server_cpu_seconds(pid)
    phases = {m[1]: float(m[2]) for _, line in result.lines for m in [_PHASE.search(line)] if m}
    if not result.passed:
        print(f"  {name} round {round_no}: FAILED {result.reason}\n{result.console_tail()}", flush=True)
    phases["server_cpu_s"] = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else NAN
    print(f"  {name} round {round_no}: " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()), flush=True)
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/vm-workers"))
    parser.add_argument("--servers", default="pysfsd,pysfsd-w2,ganesha")
    parser.add_argument("--nconnect", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    names = args.servers.split(",")
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(1, args.rounds + 1):
        for name in names:
            runs[name].append(one_run(name, args.root.resolve(), args.nconnect, r))
    print(f"\nbench.sh, nconnect={args.nconnect}: seconds per phase (rounds: {args.rounds})")
    keys = [k for k in runs[names[0]][0]]
    print(f"{'phase':24}" + "".join(f"{n:>24}" for n in names))
    for k in keys:
        cells = [" / ".join(f"{r.get(k, NAN):.2f}" for r in runs[n]) for n in names]
        print(f"{k:24}" + "".join(f"{c:>24}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
