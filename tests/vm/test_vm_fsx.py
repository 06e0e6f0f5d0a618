"""fsx and cthon04-"basic"-style checks through the Linux kernel client, in the qemu VM.

Our own equivalents of tools Debian does not package (scripts/vm/README.md): fsx.sh runs
scripts/vm/guest/fsx.c (random writes past EOF, reads, truncates, mmap reads and writes,
fsyncs, page-cache invalidations, reopens, each checked against a shadow copy; the file then
compared whole by md5 in the guest and on the host) with fixed seeds, and cthon_basic.sh
builds, walks, renames, links, symlinks, chmods and removes a tree, every step checked in the
guest and on the host.  Both on the sync export and on an ``async`` one (FILE_SYNC and
COMMIT answered before the data is on disk: what the client sees must not change).  About
50 s for the file under TCG on this 2-core machine (51 s, 2026-12-06, machine shared).  The same against NFS-Ganesha, with more
operations and seeds: scripts/vm/compare_fsx.py.  Skips when qemu or the Debian cloud kernel
is missing, unless PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.vm_support import WORKLOADS, tail, vm_or_skip

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
