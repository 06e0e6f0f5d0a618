#!/usr/bin/env python3
"""A directory of 100k entries listed while other clients create and remove files in it.

The host fills EXPORT/bigdir with ``--entries`` empty files (``entry-NNNNNN``), starts pysfsd,
and starts the churn: ``--clients`` x ``--depth`` raw-RPC slots each CREATing new files
(``churn-...``) in that directory and REMOVing the one it made eight creates before, for as
long as the listings last.  Meanwhile a lister reads the whole directory ``--rounds`` times:

* ``--lister vm`` (default): the Linux kernel client in the qemu VM of scripts/vm/, with
  scripts/vm/workloads/bigdir.sh (the shell's readdir, ``ls -1 -A``, ``find -maxdepth 1``
  in turn, caches dropped before each); its listings come back as files in the export;
* ``--lister nfs-rs``: nfs-rs's ``scandir`` on the host (READDIRPLUS), no VM needed.

Every listing must hold each original entry (none of which the churn touches) exactly once
and no name twice; churn names may or may not show.  Prints each listing's time and counts,
the churn's ops/s, and exits 1 on any missing or repeated name, churn error or stall.

    python scripts/load/bigdir.py                                  # 100k, kernel client
    python scripts/load/bigdir.py --entries 10000 --lister nfs-rs --rounds 2
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadcli import REPO, doc_parser  # noqa: E402  (first: it sets the import paths)

from driver import mount_and_lookup  # noqa: E402
from engine import LoadReport, LoadRun, LoadSettings  # noqa: E402
from loadgen import prepare_process  # noqa: E402
from mixops import SlotContext  # noqa: E402
from servers import Pysfsd  # noqa: E402

BIGDIR, LISTINGS = "bigdir", "bigdir-listings"
WORKLOAD = REPO / "scripts" / "vm" / "workloads" / "bigdir.sh"
DEFAULT_ROOT = Path("/tmp/load/bigdir")
_INFO = re.compile(r"INFO listing (.*)$")


def entry_name(index: int) -> str:
    return f"entry-{index:06d}"


def build_bigdir(export: Path, entries: int) -> set[str]:
    """EXPORT/bigdir holding exactly the ``entries`` original names (churn leftovers of an
    earlier run removed); returns those names."""
    directory = export / BIGDIR
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {entry_name(i) for i in range(entries)}
    present = set(os.listdir(directory))
    for name in present - wanted:
        os.unlink(directory / name)
    for name in wanted - present:
        os.close(os.open(directory / name, os.O_CREAT | os.O_WRONLY, 0o644))
    return wanted


# -- checking a listing --------------------------------------------------------------------

@dataclass
class Listing:
    label: str                 # "round 1 (glob)"
    names: list[str]
    seconds: float | None
    note: str = ""


@dataclass
class ListingCheck:
    listed: int
    originals: int
    churn_seen: int
    missing: list[str] = field(default_factory=list)
    repeated: dict[str, int] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.repeated and not self.foreign


def check_listing(names: list[str], originals: set[str]) -> ListingCheck:
    """Each original exactly once, no name twice, nothing but originals and churn names."""
    counts = Counter(name for name in names if name not in (".", ".."))
    present = originals & counts.keys()
    return ListingCheck(
        listed=sum(counts.values()), originals=len(present),
        churn_seen=sum(1 for name in counts if name.startswith("churn-")),
        missing=sorted(originals - present),
        repeated={name: n for name, n in counts.items() if n > 1},
        foreign=sorted(n for n in counts if n not in originals and not n.startswith("churn-")))


# -- the churn -----------------------------------------------------------------------------

class Churn:
    """The mixed load engine running only ``churn`` in the big directory, in a thread with its
    own event loop, until stopped."""

    def __init__(self, port: int, pid: int | None, dir_handle: bytes, clients: int, depth: int,
                 interval: float, stall: float) -> None:
        settings = LoadSettings(clients, depth, interval, stall, warmup=0.0, max_growth=None)
        self.run = LoadRun(port, lambda conn, slot: SlotContext(None, conn, slot, churn_dir=dir_handle),
                           {"churn": 1}, settings, pid=pid, label="churn ")
        self.report: LoadReport | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="churn", daemon=True)

    def _main(self) -> None:
        try:
            self.report = asyncio.run(self.run.run(None))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.failure = exc
            self.run.started.set()

    def start(self) -> None:
        self._thread.start()
        if not self.run.started.wait(60):
            raise RuntimeError("the churn did not start within 60 s")
        if self.failure is not None:
            raise RuntimeError(f"the churn failed to start: {self.failure!r}")

    def stop(self) -> LoadReport:
        self.run.stop_soon()
        self._thread.join(120)
        if self.report is None:
            raise RuntimeError(f"the churn did not report: {self.failure!r}")
        return self.report


# -- listers -------------------------------------------------------------------------------

def list_with_nfs_rs(server: Pysfsd, rounds: int) -> list[Listing]:
    """nfs-rs scandir of the big directory, ``rounds`` times, from the host."""
    from nfs_rs import Client
    url = f"nfs://127.0.0.1{server.export}?version=3&nfsport={server.port}&mountport={server.port}"
    listings = []
    with Client.connect(url, connect_timeout=10, operation_timeout=120) as client:
        for number in range(1, rounds + 1):
            t0 = time.perf_counter()
            names = [entry.name for entry in client.scandir(BIGDIR)]
            listings.append(Listing(f"round {number} (nfs-rs scandir)", names, time.perf_counter() - t0))
    return listings


def list_with_vm(server: Pysfsd, rounds: int, methods: str, log_dir: Path, timeout: float) -> tuple[list[Listing], list[str]]:
    """The kernel client in the VM lists the directory; returns the listings and, when the
    VM run failed, why."""
    from tests.vm_support import load_vm_module
    vm = load_vm_module()
    missing = vm.missing_prerequisites()
    if missing:
        return [], [f"VM cannot run: {'; '.join(missing)}"]
    result = vm.run_vm_test(server.port, str(server.export), host_dir=server.export, workload=WORKLOAD,
                            timeout=timeout, log_dir=log_dir, echo=lambda line: print(f"vm {line}", flush=True),
                            guest_env={"BIGDIR": BIGDIR, "OUT": LISTINGS, "ROUNDS": str(rounds), "METHODS": methods})
    listings = []
    for _, line in result.lines:
        found = _INFO.search(line)
        if found is None:
            continue
        info = dict(item.split("=", 1) for item in found.group(1).split())
        path = server.export / LISTINGS / f"round-{info['round']}-{info['method']}.txt"
        names = path.read_text().splitlines() if path.exists() else []
        listings.append(Listing(f"round {info['round']} ({info['method']})", names, float(info["secs"]),
                                note=f"rc={info['rc']} complaints={info['complaints']}"))
    return listings, ([] if result.passed else [f"VM run: {result.reason}"])


# -- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser(__doc__)
    parser.add_argument("--entries", type=int, default=100_000, help="original entries (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="listings (default 3)")
    parser.add_argument("--lister", choices=("vm", "nfs-rs"), default="vm")
    parser.add_argument("--methods", default="glob",
                        help="VM listing methods, cycled over the rounds: glob (the shell's readdir, as ls -f), "
                             "ls (ls -1 -A: readdir, then lstat of each entry), find (find -maxdepth 1); "
                             "default glob: under churn each lstat costs the TCG guest two round trips")
    parser.add_argument("--clients", type=int, default=8, help="churn connections (default 8)")
    parser.add_argument("--depth", type=int, default=4, help="churn calls in flight each (default 4)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per churn line (default 10)")
    parser.add_argument("--stall", type=float, default=20.0, help="a churn client with no reply this long is stalled")
    parser.add_argument("--timeout", type=float, default=1800.0, help="VM run limit in seconds")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"work directory (default {DEFAULT_ROOT})")
    parser.add_argument("--json", type=Path, help="write the listings' checks and the churn's figures here")
    args = parser.parse_args(argv)
    if min(args.entries, args.rounds, args.clients, args.depth) < 1:
        parser.error("--entries, --rounds, --clients and --depth must be positive")
    args.root = args.root.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_process()
    export = args.root / "export"
    t0 = time.perf_counter()
    originals = build_bigdir(export, args.entries)
    print(f"bigdir: {len(originals):,} entries in {export / BIGDIR} ({time.perf_counter() - t0:.1f} s)", flush=True)
    failures: list[str] = []
    with Pysfsd(export, args.root / "run") as server:
        print(f"pysfsd: pid {server.pid}, 127.0.0.1:{server.port}, log {server.log_path} "
              f"(started and indexed in {time.perf_counter() - t0:.1f} s)", flush=True)
        _, found, _ = asyncio.run(mount_and_lookup(server.port, server.port, os.fsencode(export),
                                                   [BIGDIR.encode()]))
        churn = Churn(server.port, server.pid, found[BIGDIR.encode()], args.clients, args.depth,
                      args.interval, args.stall)
        churn.start()
        try:
            if args.lister == "vm":
                listings, failures = list_with_vm(server, args.rounds, args.methods, args.root / "vm", args.timeout)
            else:
                listings = list_with_nfs_rs(server, args.rounds)
        finally:
            churn_report = churn.stop()
        log_text = server.log_path.read_text(errors="replace")
    if "Traceback" in log_text:
        failures.append(f"server log has {log_text.count('Traceback')} tracebacks ({server.log_path})")

    print(f"\n{'listing':28}{'seconds':>9}{'listed':>9}{'originals':>11}{'churn':>7}{'missing':>9}"
          f"{'repeated':>10}{'foreign':>9}  note")
    checks = []
    for listing in listings:
        check = check_listing(listing.names, originals)
        checks.append({"label": listing.label, "seconds": listing.seconds, "note": listing.note,
                       **{k: v for k, v in asdict(check).items() if k not in ("missing", "repeated", "foreign")},
                       "missing": len(check.missing), "repeated": len(check.repeated), "foreign": len(check.foreign)})
        secs = "-" if listing.seconds is None else f"{listing.seconds:.1f}"
        print(f"{listing.label:28}{secs:>9}{check.listed:>9,}{check.originals:>11,}{check.churn_seen:>7,}"
              f"{len(check.missing):>9}{len(check.repeated):>10}{len(check.foreign):>9}  {listing.note}")
        if not check.ok:
            failures.append(f"{listing.label}: {len(check.missing)} originals missing {check.missing[:5]}, "
                            f"{len(check.repeated)} names repeated {list(check.repeated.items())[:5]}, "
                            f"foreign names {check.foreign[:5]}")
    if len(listings) != args.rounds:
        failures.append(f"{len(listings)} listings of {args.rounds} came back")
    rate = churn_report.total_ops / churn_report.seconds if churn_report.seconds else 0.0
    print(f"\nchurn: {churn_report.total_ops:,} CREATE(+REMOVE) ops in {churn_report.seconds:.0f} s "
          f"({rate:,.0f} ops/s, p99 {churn_report.per_op['churn']['p99_ms'] or 0:.1f} ms), "
          f"{args.clients} clients x {args.depth} in flight; errors {churn_report.errors}, "
          f"stalled clients {len(churn_report.stalled_clients)}, unanswered {churn_report.unanswered}")
    for reason, count in churn_report.reasons.items():
        print(f"  {count} x {reason}")
    if not churn_report.ok:
        failures.append("the churn had errors or stalls")
    if churn_report.memory_last is not None:
        print(f"server memory at the end: {churn_report.memory_last}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"RESULT {'FAIL' if failures else 'PASS'}")
    if args.json:
        args.json.write_text(json.dumps({"entries": args.entries, "listings": checks, "failures": failures,
                                         "churn": json.loads(churn_report.to_json())}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
