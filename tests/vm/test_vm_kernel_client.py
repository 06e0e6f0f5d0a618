"""The real Linux NFSv3 client against pysfsd, in a qemu VM.

Boots scripts/vm/vm_mount_test.py's VM, whose kernel mounts the export of the ``server``
fixture and runs the core workload (copy and diff a tree, mv, rm -r, ln -s, ln, chmod,
touch, truncate, a 100 MB dd with md5 after dropping caches, a 2000-entry ``ls -l``,
find); the host then checks the files in the export.  Skips when qemu or the Debian cloud
kernel is missing, unless PYSFSD_REQUIRE_VM=1.  PYSFSD_VM_DD_MB changes the dd size.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vm_support import tail, vm_or_skip

pytestmark = pytest.mark.vm


def test_linux_client_core_workload(server, tmp_path: Path) -> None:
    vm = vm_or_skip()
    result = vm.run_vm_test(
        server.port, str(server.export), host_dir=server.export, log_dir=tmp_path / "vm",
        dd_mb=int(os.environ.get("PYSFSD_VM_DD_MB", "100")), timeout=600.0)
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(server.log_path)}"
    assert "Traceback" not in server.log_path.read_text(errors="replace")


def test_linux_client_core_workload_on_an_async_export(tmp_path: Path) -> None:
    """The same workload on an exports(5) ``async`` export: the client is told FILE_SYNC
    writes and namespace changes are stable before they reach the disk, and COMMIT does
    not fsync (docs/running.rst); every file must still be what the client wrote."""
    from tests.conftest import ServerProcess
    vm = vm_or_skip()
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state",
                        export_options="*(rw,no_root_squash,insecure,async)").start()
    try:
        result = vm.run_vm_test(
            srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
            dd_mb=int(os.environ.get("PYSFSD_VM_DD_MB", "100")), timeout=600.0)
    finally:
        srv.stop()
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}"
    assert "Traceback" not in srv.log_path.read_text(errors="replace")
