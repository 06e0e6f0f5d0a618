"""Attributes as knfsd sets them, through the Linux kernel client in a qemu VM, as users
other than root (scripts/vm/workloads/attrs.sh): ``touch -a`` and ``touch -m`` by a group
member who may write a file it does not own succeed and leave the other timestamp alone
(ACCES without write permission), and two clients racing ``open(O_CREAT)`` (the loser's
CREATE UNCHECKED finds the file) neither change the owner's mode nor refuse a group member.
Skips when qemu or the Debian cloud kernel is missing, unless PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.vm_support import WORKLOADS, tail, vm_or_skip

pytestmark = pytest.mark.vm


def test_attributes_through_the_linux_client(server: ServerProcess, tmp_path: Path) -> None:
    vm = vm_or_skip()
    result = vm.run_vm_test(server.port, str(server.export), host_dir=server.export,
                            log_dir=tmp_path / "vm", workload=WORKLOADS / "attrs.sh", timeout=300.0)
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(server.log_path)}"
    assert "Traceback" not in server.log_path.read_text(errors="replace")
