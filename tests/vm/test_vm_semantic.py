"""pysfsd's semantic namespace through the real Linux NFSv3 client, in a qemu VM.

Writes the tree of tests/vm_support.py into the export, restarts the ``server`` fixture so
its start-up scan indexes it, then boots scripts/vm/vm_mount_test.py's VM with the semantic
workload (scripts/vm/workloads/semantic.sh): field and value directories, result symlinks,
order-free paths, name clashes, read-only results, lab views in the root and in src/,
changes through the mount (also on a second mount with the default close-to-open options:
a file created or removed shows in the very next ``ls`` of ``ext:/c``) and behind the
server's back (host action ``write``/``rm``), and a
virtual directory used as cwd across a server restart (host action ``restart``, same port).
Skips when qemu or the Debian cloud kernel is missing, unless PYSFSD_REQUIRE_VM=1.
PYSFSD_VM_TRACE=N runs the server with PYSFSD_TRACE=N (trace on its stderr, in the report).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vm_support import WORKLOADS, tail, vm_or_skip, write_semantic_tree

pytestmark = pytest.mark.vm


def test_linux_client_semantic_workload(server, tmp_path: Path) -> None:
    vm = vm_or_skip()
    write_semantic_tree(server.export)
    trace = os.environ.get("PYSFSD_VM_TRACE")
    if trace:
        server.env = {"PYSFSD_TRACE": trace}
    server.restart()  # the start-up scan indexes the tree

    earlier_logs: list[str] = []  # restart() truncates the server's stderr file

    def restart(args: list[str]) -> str:
        port = server.port
        earlier_logs.append(server.log_path.read_text(errors="replace"))
        server.restart()
        assert server.port == port, (port, server.port)
        return f"server restarted on port {port}"

    result = vm.run_vm_test(
        server.port, str(server.export), host_dir=server.export, log_dir=tmp_path / "vm",
        workload=WORKLOADS / "semantic.sh", timeout=600.0, host_actions={"restart": restart})
    logs = earlier_logs + [server.log_path.read_text(errors="replace")]
    (tmp_path / "pysfsd-all.stderr").write_text("\n===== server restarted =====\n".join(logs))
    assert result.passed, (f"{result.summary()}\n--- pysfsd stderr tail "
                           f"(all runs: {tmp_path / 'pysfsd-all.stderr'}) ---\n{tail(server.log_path)}")
    assert not any("Traceback" in log for log in logs), tmp_path / "pysfsd-all.stderr"
