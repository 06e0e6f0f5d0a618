"""Shared helpers of the VM tests (tests/vm/test_vm_*.py): load the VM runner by path, skip or
fail when this machine cannot boot the VM, and the source tree of the semantic workload.

Also runnable, to prepare an export for the semantic workload by hand:
    python -m tests.vm_support semantic-tree EXPORT_DIR
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
VM_DIR = REPO / "scripts" / "vm"
VM_SCRIPT = VM_DIR / "vm_mount_test.py"
WORKLOADS = VM_DIR / "workloads"


def load_script(path: Path) -> ModuleType:
    """scripts/ is not a package, so a script is imported by path (named after its file)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def load_vm_module() -> ModuleType:
    """The VM runner, scripts/vm/vm_mount_test.py."""
    return load_script(VM_SCRIPT)


def vm_or_skip() -> ModuleType:
    """The VM runner module; skips the test when qemu or the Debian cloud kernel is
    missing, or fails it instead when PYSFSD_REQUIRE_VM=1."""
    vm = load_vm_module()
    missing = vm.missing_prerequisites()
    if missing:
        reason = "VM test cannot run: " + "; ".join(missing)
        if os.environ.get("PYSFSD_REQUIRE_VM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return vm


def tail(path: Path, count: int = 40) -> str:
    if not path.exists():
        return "(missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-count:])


# The tree scripts/vm/workloads/semantic.sh expects in the export root (it knows these
# names; contents are compared through the mount and by HOSTCHECK, not hard-coded there).
# src/a.c and lib/a.c clash in ext:/c; util.h, README, x.py and the .txt/.md files never
# show in :extension=.c views.
SEMANTIC_TREE: dict[str, str] = {
    "top.c": "int top(void) { return 1; }\n",
    "notes.txt": "semantic file systems are fun\n",
    "readme.md": "# a small tree for the semantic VM test\n",
    "src/a.c": "int main(void) { return helper(); }\n",
    "src/b.c": "static int helper(void) { return 0; }\n",
    "src/c.c": "int c_value = 3;\n",
    "src/util.h": "#include <stdio.h>\n",
    "src/README": "the source\n",
    "lib/a.c": "int lib_a;\n",
    "lib/x.py": "print('x')\n",
}


def write_semantic_tree(root: Path) -> None:
    """Write SEMANTIC_TREE under root (files owned by whoever runs this: root in the VM
    test, so that owner:/root matches)."""
    for rel, text in SEMANTIC_TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "semantic-tree":
        sys.exit("usage: python -m tests.vm_support semantic-tree EXPORT_DIR")
    write_semantic_tree(Path(sys.argv[2]))
