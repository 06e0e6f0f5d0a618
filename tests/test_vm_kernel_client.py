"""The real Linux NFSv3 client against pysfsd, in a qemu VM.

Boots scripts/vm/vm_mount_test.py's VM, whose kernel mounts the export of the ``server``
fixture and runs the core workload (copy and diff a tree, mv, rm -r, ln -s, ln, chmod,
touch, truncate, a 100 MB dd with md5 after dropping caches, a 2000-entry ``ls -l``,
find); the host then checks the files in the export.  Skips when qemu or the Debian cloud
kernel is missing, unless PYSFSD_REQUIRE_VM=1.  PYSFSD_VM_DD_MB changes the dd size.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
VM_SCRIPT = REPO / "scripts" / "vm" / "vm_mount_test.py"

pytestmark = pytest.mark.vm


def _load_vm_module() -> ModuleType:
    """scripts/ is not a package, so import the VM script by path."""
    spec = importlib.util.spec_from_file_location("vm_mount_test", VM_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _tail(path: Path, count: int = 40) -> str:
    if not path.exists():
        return "(missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-count:])


def test_linux_client_core_workload(server, tmp_path: Path) -> None:
    vm = _load_vm_module()
    missing = vm.missing_prerequisites()
    if missing:
        reason = "VM test cannot run: " + "; ".join(missing)
        if os.environ.get("PYSFSD_REQUIRE_VM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    result = vm.run_vm_test(
        server.port, str(server.export), host_dir=server.export, log_dir=tmp_path / "vm",
        dd_mb=int(os.environ.get("PYSFSD_VM_DD_MB", "100")), timeout=600.0)
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{_tail(server.log_path)}"
    assert "Traceback" not in server.log_path.read_text(errors="replace")
