"""The real Linux NFSv3 client against pysfsd, in a qemu VM.

Starts `python -m nfsd` on 127.0.0.1 (its first stdout line names the port),
then boots scripts/vm/vm_mount_test.py's VM, whose kernel mounts the export
and runs the core workload.  Skips when qemu or the Debian cloud kernel is
missing, unless PYSFSD_REQUIRE_VM=1.  PYSFSD_VM_DD_MB changes the size of the
dd file (default 100).
"""
from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
VM_SCRIPT = REPO / "scripts" / "vm" / "vm_mount_test.py"
LISTENING_RE = re.compile(r"^pysfsd: listening on 127\.0\.0\.1:(\d+) export (.+)$")
SERVER_START_TIMEOUT_S = 30.0

pytestmark = pytest.mark.vm


def _load_vm_module() -> ModuleType:
    """scripts/ is not a package, so import the VM script by path."""
    spec = importlib.util.spec_from_file_location("vm_mount_test", VM_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _pump(stream: IO[str], first_line: queue.Queue[str], rest: Path) -> None:
    """Hand the first stdout line over, then keep draining stdout into a file
    so that a chatty server never blocks on a full pipe."""
    first_line.put(stream.readline())
    with rest.open("w") as out:
        for line in stream:
            out.write(line)
            out.flush()


def _tail(path: Path, count: int = 40) -> str:
    if not path.exists():
        return "(missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-count:])


@contextmanager
def pysfsd(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A pysfsd server on 127.0.0.1: yields (port, export dir, stderr log)."""
    export = tmp_path / "export"
    state = tmp_path / "state"
    export.mkdir()
    state.mkdir()
    stderr_log = tmp_path / "pysfsd.stderr"
    with stderr_log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nfsd", "--export", str(export), "--port", "0",
             "--bind", "127.0.0.1", "--state-dir", str(state)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        first: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, first, tmp_path / "pysfsd.stdout"),
                         daemon=True).start()
        try:
            line = first.get(timeout=SERVER_START_TIMEOUT_S).strip()
        except queue.Empty:
            pytest.fail(f"pysfsd printed nothing in {SERVER_START_TIMEOUT_S:.0f}s; stderr:\n{_tail(stderr_log)}")
        match = LISTENING_RE.match(line)
        if match is None:
            pytest.fail(f"pysfsd's first line {line!r} is not the listening line; stderr:\n{_tail(stderr_log)}")
        yield int(match.group(1)), export, stderr_log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_linux_client_core_workload(tmp_path: Path) -> None:
    vm = _load_vm_module()
    missing = vm.missing_prerequisites()
    if missing:
        reason = "VM test cannot run: " + "; ".join(missing)
        if os.environ.get("PYSFSD_REQUIRE_VM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with pysfsd(tmp_path) as (port, export, server_stderr):
        result = vm.run_vm_test(
            port, str(export), host_dir=export, log_dir=tmp_path / "vm",
            dd_mb=int(os.environ.get("PYSFSD_VM_DD_MB", "100")), timeout=600.0)
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{_tail(server_stderr)}"
