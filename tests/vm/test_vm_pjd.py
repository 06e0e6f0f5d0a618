"""pjdfstest-style conformance cases through the Linux kernel client, in the qemu VM.

Our own equivalent of pjdfstest (not packaged by Debian; scripts/vm/README.md):
scripts/vm/workloads/pjd.sh runs scripts/vm/guest/fstest.c, one system call per case as
root or as an unprivileged user (AUTH_SYS carries the caller's uid and groups), and
compares the errno or the stat fields with what Linux answers on a local file system:
chmod, chown, link, mkdir, open, rename, rmdir, symlink, truncate, ftruncate, unlink,
mkfifo/mknod, directory permission bits, sticky directories, set-group-ID inheritance,
utimes, set-ID bits dropped, credentials, name lengths, symlink loops.  On the sync export
(no_root_squash: root makes the fixtures); 12-28 s under TCG on this 2-core machine
(2026-12-06, machine shared).  The expectations alone, on a local file system:
tests/unit/test_vm_pjd_local.py.  The same side by side with NFS-Ganesha:
scripts/vm/compare_pjd.py.  Skips when qemu or the Debian cloud kernel is missing, unless
PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.vm_support import WORKLOADS, tail, vm_or_skip

pytestmark = pytest.mark.vm


def test_pjd_cases_through_the_linux_client(tmp_path: Path) -> None:
    vm = vm_or_skip()
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state",
                        export_options="*(rw,no_root_squash,insecure)").start()
    try:
        result = vm.run_vm_test(srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
                                workload=WORKLOADS / "pjd.sh", timeout=300.0)
    finally:
        srv.stop()
    mismatches = [line for _, line in result.lines
                  if line.startswith("INFO pjd ") and " got=" in line and not _agrees(line)]
    assert result.passed and not mismatches, (
        "\n".join(mismatches) + f"\n{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}")
    assert "Traceback" not in srv.log_path.read_text(errors="replace")
    assert any(line == "INFO pjd done" for _, line in result.lines)   # every group ran


def _agrees(line: str) -> bool:
    """An "INFO pjd GROUP.N got=GOT want=A|B: ARGS" line whose GOT is one of the wanted."""
    got = line.split(" got=", 1)[1].split(" want=", 1)
    return got[0] in got[1].split(": ", 1)[0].split("|")
