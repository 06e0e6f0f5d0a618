"""fsx and cthon04-"basic"-style checks through the Linux kernel client, in the qemu VM.

Our own equivalents of tools Debian does not package (scripts/vm/README.md): fsx.sh runs
scripts/vm/guest/fsx.c (random writes past EOF, reads, truncates, mmap reads and writes,
fsyncs, page-cache invalidations, reopens, each checked against a shadow copy; the file then
compared whole by md5 in the guest and on the host) with fixed seeds, and cthon_basic.sh
builds, walks, renames, links, symlinks, chmods and removes a tree, every step checked in the
guest and on the host.  Both on the sync export and on an ``async`` one (FILE_SYNC and
COMMIT answered before the data is on disk: what the client sees must not change).  About
50 s for the four runs under TCG on this 2-core machine (51 s, 2026-12-06, machine shared);
fsx once more mounted ``nconnect=2`` with two workers (37 s), each worker holding one of
the connections.  The same against NFS-Ganesha, with more
operations and seeds: scripts/vm/compare_fsx.py.  Skips when qemu or the Debian cloud kernel
is missing, unless PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.vm_support import REPO, WORKLOADS, tail, vm_or_skip

# which worker holds a connection: the load scripts' /proc reader, loaded by path
_spec = importlib.util.spec_from_file_location(
    "procfs", REPO / "scripts" / "benchmarks" / "load_generator" / "procfs.py")
assert _spec is not None and _spec.loader is not None
_procfs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_procfs)

pytestmark = pytest.mark.vm

# Small enough for the CI (each seed 6-10 s under TCG), big enough that every operation
# runs a few hundred times and the file grows, shrinks and gets holes.
FSX_ENV = {"FSX_SEEDS": "1,2", "FSX_OPS": "4000", "FSX_LEN": "262144"}
OPTIONS = {"sync": "*(rw,no_root_squash,insecure)", "async": "*(rw,no_root_squash,insecure,async)"}


@pytest.mark.parametrize("workload", ["fsx.sh", "cthon_basic.sh"])
@pytest.mark.parametrize("export", ["sync", "async"])
def test_fsx_and_basic_through_the_linux_client(export: str, workload: str, tmp_path: Path) -> None:
    vm = vm_or_skip()
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state", export_options=OPTIONS[export]).start()
    try:
        result = vm.run_vm_test(srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
                                workload=WORKLOADS / workload, timeout=300.0,
                                guest_env=FSX_ENV if workload == "fsx.sh" else None)
    finally:
        srv.stop()
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}"
    assert "Traceback" not in srv.log_path.read_text(errors="replace")
    if workload == "fsx.sh":   # every seed ran and reported
        assert sum(line.startswith("INFO fsx seed=") for _, line in result.lines) == 2


def test_fsx_with_nconnect_2_is_served_by_both_workers(tmp_path: Path) -> None:
    """With ``nconnect=2`` the kernel client spreads its calls over two connections, and
    with two workers each connection is served by its own process (the balanced accept):
    fsx must still see exactly the file it wrote (the shared write verifier, DRC and
    handle table), and both workers must really have held a connection and worked."""
    vm = vm_or_skip()
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state", args=("--workers", "2")).start()
    assert srv.proc is not None
    workers = srv.pids()[1:]
    assert len(workers) == 2, workers
    cpu0 = {pid: _procfs.cpu_seconds(pid) for pid in workers}
    held: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:  # which workers hold the client's connections, while it runs
        while not done.wait(0.25):
            for pid, count in _procfs.established_holders(srv.port, workers).items():
                held[pid] = max(held.get(pid, 0), count)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = vm.run_vm_test(srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
                                workload=WORKLOADS / "fsx.sh", timeout=300.0,
                                guest_env={**FSX_ENV, "MOUNT_OPTS": "nconnect=2"})
        cpu1 = {pid: _procfs.cpu_seconds(pid) for pid in workers}
    finally:
        done.set()
        sampler.join()
        srv.stop()
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}"
    assert "Traceback" not in srv.log_path.read_text(errors="replace")
    assert sum(line.startswith("INFO fsx seed=") for _, line in result.lines) == 2
    assert set(held) == set(workers), f"connections held per worker: {held}, workers {workers}"
    # each worker served part of the calls: fsx's thousands of calls cost seconds of CPU,
    # an idle worker a few ticks at most in the same time
    worked = {pid: cpu1[pid] - cpu0[pid] for pid in workers}
    assert min(worked.values()) >= 0.1, f"CPU seconds per worker during fsx: {worked}"
