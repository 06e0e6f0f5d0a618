#!/usr/bin/env python3
"""Soak: the kernel client, nfs-rs and the mixed load generator against one server at once.

For ``--minutes`` (default 10), against one pysfsd started here:

* the Linux kernel client in the qemu VM of scripts/vm/ loops over
  scripts/vm/workloads/soak.sh: copy a source tree into the export, drop caches, md5 every
  file and ``diff -r``, remove it, again;
* ``--nfs-rs-threads`` Python threads, each with its own nfs-rs client, write files of 4 KiB to
  3 MiB of random bytes, read them back and compare, and remove them;
* scripts/load/mixed.py at a lower intensity (``--mixed-clients`` x ``--mixed-depth``), which
  checks every reply of its own.

Every minute it prints each component's throughput and the server's memory; at the end a
table per minute, the memory, and the errors.  Exits 1 on any error or data mismatch, a
failed VM run, a mixed.py failure (errors, stalls, VmRSS growth), anonymous memory growing
over the second half (``--max-anon-rise``, ``--max-anon-slope``: ``memory.anon_verdict``) or
a server traceback.

    python scripts/load/soak.py                       # 10 minutes, all three
    python scripts/load/soak.py --minutes 2 --no-vm   # without the VM
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadcli import HERE, REPO, doc_parser  # noqa: E402  (first: it sets the import paths)

from engine import server_memory_now  # noqa: E402
from memory import Memory, anon_verdict  # noqa: E402
from servers import Pysfsd  # noqa: E402
from nfsd.workers import default_count  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
NFS_RS_DIR, VM_DIR = "soak-nfsrs", "soak-vm"
WORKLOAD = REPO / "scripts" / "vm" / "workloads" / "soak.sh"
DEFAULT_ROOT = Path("/tmp/load/soak")
FILE_SIZES = (4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 3 * MiB)
REPORT_LAG_S = 20
#: anonymous memory (every process summed) may end the second half of the soak at most this
#: many MiB above where it started it (the heap's high-water steps), and may not rise faster
#: than this many MiB a minute in every two-minute window of the second half; see
#: ``anon_verdict`` and docs/design.rst ("The soak's anonymous-memory verdict")
ANON_RISE_MAX = 3.0
ANON_SLOPE_MAX = 0.2


@dataclass
class Tally:
    """Per-minute counts of one component, filled from several threads."""

    start: float
    units: dict[int, float] = field(default_factory=lambda: defaultdict(float))   # minute -> bytes or ops
    cycles: dict[int, int] = field(default_factory=lambda: defaultdict(int))      # minute -> cycles
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, units: float, cycles: int = 1, at: float | None = None) -> None:
        minute = int(((at or time.monotonic()) - self.start) // 60)
        with self.lock:
            self.units[minute] += units
            self.cycles[minute] += cycles

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)
        print(f"soak: ERROR {text}", flush=True)


# -- nfs-rs --------------------------------------------------------------------------------

def nfs_rs_worker(url: str, index: int, stop: threading.Event, tally: Tally) -> None:
    """Write, read back, compare, and sometimes remove, until stopped; a mismatch or an
    exception is an error (the worker reconnects and goes on)."""
    from nfs_rs import Client
    rng = random.Random(index)
    base = f"{NFS_RS_DIR}/t{index}"
    cycle = 0
    while not stop.is_set():
        try:
            with Client.connect(url, connect_timeout=10, operation_timeout=120) as client:
                client.mkdir(base, parents=True, exist_ok=True)
                while not stop.is_set():
                    cycle += 1
                    path = f"{base}/f{cycle % 4}"
                    data = rng.randbytes(rng.choice(FILE_SIZES))
                    with client.open(path, "wb") as f:
                        f.write(data)
                    with client.open(path, "rb") as f:
                        back = f.read()
                    if hashlib.sha256(back).digest() != hashlib.sha256(data).digest():
                        tally.error(f"nfs-rs thread {index}: {path} read back {len(back)} bytes, "
                                    f"not the {len(data)} written")
                    if cycle % 3 == 0:
                        client.remove(path)
                    tally.add(2 * len(data))
        except Exception as exc:  # noqa: BLE001 - every failure is an error of the soak
            tally.error(f"nfs-rs thread {index}: {type(exc).__name__}: {exc}")
            stop.wait(1.0)


# -- the VM --------------------------------------------------------------------------------

def run_vm(server: Pysfsd, seconds: int, tally: Tally, log_dir: Path) -> str | None:
    """The soak workload in the VM; its iterations go to the tally as they are reported.
    Returns why the run failed, or None."""
    from tests.vm_support import load_vm_module
    vm = load_vm_module()
    missing = vm.missing_prerequisites()
    if missing:
        return f"VM cannot run: {'; '.join(missing)}"

    def echo(line: str) -> None:
        if "INFO soak_iter" in line:
            info = dict(item.split("=", 1) for item in line.split("INFO soak_iter", 1)[1].split())
            tally.add(int(info["kb"]) * KiB)
        elif " FAIL" in line or "HOST CHECK FAILED" in line:
            print(f"vm {line}", flush=True)

    result = vm.run_vm_test(server.port, str(server.export), host_dir=server.export, workload=WORKLOAD,
                            timeout=seconds + 600, log_dir=log_dir, echo=echo,
                            guest_env={"SOAK_SECONDS": str(seconds), "SOAK_DIR": VM_DIR})
    print(f"vm: {'PASS' if result.passed else 'FAIL'}: {result.reason}", flush=True)
    return None if result.passed else f"VM run: {result.reason} (console {result.console_log})"


# -- reporting -----------------------------------------------------------------------------

def mixed_minutes(jsonl: Path) -> dict[int, dict]:
    """mixed.py's intervals (one a minute), by minute."""
    if not jsonl.exists():
        return {}
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return {int(round(row["at"] / 60)) - 1: row for row in rows}


def minute_line(minute: int, mixed: dict[int, dict], nfs_rs: Tally, vm: Tally, memory: Memory | None) -> str:
    row = mixed.get(minute)
    ops = "-" if row is None else f"{row['ops_per_s']:,.0f}"
    errs = "-" if row is None else str(row["errors"])
    rs_mib = nfs_rs.units.get(minute, 0.0) / MiB / 60
    vm_mib = vm.units.get(minute, 0.0) / MiB / 60
    mem = "-" if memory is None else f"{memory.rss:.1f} ({memory.anon:.1f})" + (
        "" if memory.pss is None else f", PSS {memory.pss:.1f}")
    return (f"{minute + 1:>6}{ops:>12}{errs:>8}{rs_mib:>14.2f}{nfs_rs.cycles.get(minute, 0):>8}"
            f"{vm_mib:>10.2f}{vm.cycles.get(minute, 0):>7}   {mem}")


HEADER = (f"{'minute':>6}{'mixed op/s':>12}{'errors':>8}{'nfs-rs MiB/s':>14}{'cycles':>8}"
          f"{'VM MiB/s':>10}{'iters':>7}   server VmRSS (anon), PSS MiB")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--nfs-rs-threads", type=int, default=4, help="nfs-rs writer/reader threads (default 4)")
    parser.add_argument("--mixed-clients", type=int, default=8, help="mixed.py connections (default 8)")
    parser.add_argument("--mixed-depth", type=int, default=4, help="mixed.py calls in flight each (default 4)")
    parser.add_argument("--no-vm", action="store_true", help="leave the kernel client out")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"work directory (default {DEFAULT_ROOT})")
    parser.add_argument("--workers", type=int, default=default_count(), metavar="N",
                        help="the server's --workers (default %(default)s: its own default, the usable cores "
                             "or PYSFSD_WORKERS); its memory is every process's summed, PSS beside it")
    parser.add_argument("--max-anon-rise", type=float, default=ANON_RISE_MAX, metavar="MIB",
                        help="anonymous memory's rise over the second half that fails the soak "
                             "(default %(default)s)")
    parser.add_argument("--max-anon-slope", type=float, default=ANON_SLOPE_MAX, metavar="MIB",
                        help="anonymous memory rising faster than this a minute in every two-minute window "
                             "of the second half fails the soak (default %(default)s; <0: anonymous memory "
                             "not checked at all)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.nfs_rs_threads < 0 or min(args.mixed_clients, args.mixed_depth) < 1:
        parser.error("--minutes and the mixed load must be positive")
    args.root = args.root.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = int(args.minutes * 60)
    export = args.root / "export"
    export.mkdir(parents=True, exist_ok=True)
    jsonl, mixed_json, mixed_log = args.root / "mixed.jsonl", args.root / "mixed.json", args.root / "mixed.log"
    jsonl.unlink(missing_ok=True)
    failures: list[str] = []
    with Pysfsd(export, args.root / "run", workers=args.workers) as server:
        pid = server.pid
        assert pid is not None  # started
        print(f"pysfsd: pid {pid}, 127.0.0.1:{server.port}, export {export}, log {server.log_path}", flush=True)
        start = time.monotonic()
        nfs_rs, vm = Tally(start), Tally(start)
        mixed = subprocess.Popen(
            [sys.executable, str(HERE / "mixed.py"), "--port", str(server.port), "--pid", str(server.pid),
             "--export", str(export), "--clients", str(args.mixed_clients), "--depth", str(args.mixed_depth),
             # Three clients fill the server's caches for minutes (the VM's trees, nfs-rs's files):
             # memory is judged flat or not over the second half.
             "--seconds", str(seconds), "--interval", "60", "--stall", "30", "--warmup", str(seconds // 2),
             "--jsonl", str(jsonl), "--json", str(mixed_json)],
            stdout=mixed_log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        stop = threading.Event()
        url = f"nfs://127.0.0.1{export}?version=3&nfsport={server.port}&mountport={server.port}"
        workers = [threading.Thread(target=nfs_rs_worker, args=(url, i, stop, nfs_rs), daemon=True)
                   for i in range(args.nfs_rs_threads)]
        for worker in workers:
            worker.start()
        print(f"soak: {args.minutes:g} min; mixed.py {args.mixed_clients} x {args.mixed_depth} (log {mixed_log}), "
              f"{args.nfs_rs_threads} nfs-rs threads, {'no VM' if args.no_vm else 'VM kernel client'}\n{HEADER}",
              flush=True)
        memories: dict[int, Memory | None] = {}

        def monitor() -> None:
            """Each minute's line, printed a little after the minute so that mixed.py (started
            a few seconds later) has written its own line for it."""
            minute = 0
            while not stop.wait(max(0.0, start + 60 * (minute + 1) + REPORT_LAG_S - time.monotonic())):
                memories[minute] = server_memory_now(pid)
                print(minute_line(minute, mixed_minutes(jsonl), nfs_rs, vm, memories[minute]), flush=True)
                minute += 1
        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        if args.no_vm:
            time.sleep(seconds)
        else:
            failure = run_vm(server, seconds, vm, args.root / "vm")
            if failure:
                failures.append(failure)
        stop.set()
        for worker in workers:
            worker.join(180)
        try:
            mixed_rc = mixed.wait(timeout=max(60.0, start + seconds + 120 - time.monotonic()))
        except subprocess.TimeoutExpired:
            mixed.kill()
            mixed_rc = mixed.wait()
        end_memory = server_memory_now(pid)
        watcher.join(5)
    log_text = server.log_path.read_text(errors="replace")
    elapsed = time.monotonic() - start

    minutes = mixed_minutes(jsonl)
    print(f"\nper minute\n{HEADER}")
    for minute in range(-(-seconds // 60)):  # the last moments after the end count in the totals only
        print(minute_line(minute, minutes, nfs_rs, vm, memories.get(minute)))
    mixed_report = json.loads(mixed_json.read_text()) if mixed_json.exists() else None
    print(f"\ntotals over {elapsed:.0f} s:")
    if mixed_report is not None:
        print(f"  mixed.py: {mixed_report['total_ops']:,} ops ({mixed_report['total_ops'] / mixed_report['seconds']:,.0f}"
              f" ops/s), errors {mixed_report['errors']}, stalled clients {len(mixed_report['stalled_clients'])}, "
              f"{mixed_report['memory_verdict']}")
    print(f"  nfs-rs: {sum(nfs_rs.cycles.values()):,} write+read+compare cycles, "
          f"{sum(nfs_rs.units.values()) / MiB:,.0f} MiB moved, errors {len(nfs_rs.errors)}")
    print(f"  VM kernel client: {sum(vm.cycles.values()):,} copy+check+remove iterations, "
          f"{sum(vm.units.values()) / MiB:,.0f} MiB copied")
    print(f"  server memory at the end: {end_memory}")
    if args.max_anon_slope >= 0:
        anon_flat, anon_text = anon_verdict(memories, args.max_anon_slope, args.max_anon_rise)
        print(f"  server anonymous memory: {anon_text}")
        if not anon_flat:
            failures.append(f"server anonymous memory growing: {anon_text}")
    if mixed_rc != 0:
        failures.append(f"mixed.py exited {mixed_rc} (see {mixed_log})")
    failures += nfs_rs.errors[:20]
    if "Traceback" in log_text:
        failures.append(f"server log has {log_text.count('Traceback')} tracebacks ({server.log_path})")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"RESULT {'FAIL' if failures else 'PASS'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
