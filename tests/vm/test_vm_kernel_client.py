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
