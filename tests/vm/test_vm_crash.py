"""kill -9 of pysfsd under the Linux kernel NFSv3 client, in a qemu VM.

Boots scripts/vm/vm_mount_test.py's VM with the crash workload (scripts/vm/workloads/
crash.sh): files written from known patterns, one fsync'ed before the crash, one O_DIRECT
write the client sends as many UNSTABLE WRITEs and then one COMMIT, one stream of pieces
through a descriptor held open across the crash.  Its host action ``kill9-restart direct``
waits until the server answers the first WRITE of ``direct`` (it traces calls), then kills the
``server`` fixture with SIGKILL and starts it again on the same port and state.  The client
must recover by itself and every file must have its pattern's md5, in the guest (after
dropping caches, also through a descriptor opened before the crash) and on the host.  The
trace must show the stream's WRITEs on both sides of the crash, and UNSTABLE WRITEs that the
old server acknowledged and no COMMIT covered, every one of them sent again to the new server
(whose verifier differs).  ``pysfsd check`` must then find the state consistent.  Skips when
qemu or the Debian cloud kernel is missing, unless PYSFSD_REQUIRE_VM=1.  PYSFSD_VM_TRACE=N
traces at level N (at least 1, which this test needs).
"""
from __future__ import annotations

import io
import os
import re
import signal
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from nfsd.check.checker import main as check_main
from tests.vm_support import WORKLOADS, tail, vm_or_skip

pytestmark = pytest.mark.vm


def first_write_marker(name: str) -> str:
    """How a trace line shows a WRITE whose data begins with the pattern of ``name``."""
    return "data=" + f"pattern {name}".encode().hex()


_CALL = re.compile(r"NFS3\.(WRITE|COMMIT) file=\{data=([0-9a-f]+)\} offset=(\d+) count=(\d+)"
                   r"(?: stable=(\d))?.* -> NFS3_OK")


def writes_of(log: str, fh: str) -> int:
    return len(re.findall(r"NFS3\.WRITE file=\{data=" + fh + r"\}", log))


def uncommitted(log: str) -> dict[str, list[tuple[int, int]]]:
    """(offset, end) of the UNSTABLE WRITEs acknowledged after each file's last COMMIT."""
    pending: dict[str, list[tuple[int, int]]] = {}
    for proc, fh, offset, count, stable in _CALL.findall(log):
        if proc == "COMMIT":
            pending.pop(fh, None)  # the client COMMITs whole files (offset 0, count 0)
        elif stable == "0":
            pending.setdefault(fh, []).append((int(offset), int(offset) + int(count)))
    return pending


def written(log: str, fh: str) -> list[tuple[int, int]]:
    return sorted((int(o), int(o) + int(c)) for p, f, o, c, _ in _CALL.findall(log) if p == "WRITE" and f == fh)


def covered(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = span
    for s, e in spans:  # sorted
        if s <= start < e:
            start = e
        if start >= end:
            return True
    return False


def test_linux_client_survives_kill9_of_the_server(server, tmp_path: Path) -> None:
    vm = vm_or_skip()
    server.env = {"PYSFSD_TRACE": str(max(1, int(os.environ.get("PYSFSD_VM_TRACE") or "1")))}
    server.restart()
    earlier_logs: list[str] = []  # each start truncates the server's stderr file

    def kill9_restart(args: list[str]) -> str:
        """kill9-restart [NAME]: once the server got the first WRITE of NAME's pattern."""
        deadline = time.monotonic() + 60
        while args and first_write_marker(args[0]) not in server.log_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no WRITE of {args[0]} reached the server")
            time.sleep(0.01)
        port = server.port
        server.stop(signal.SIGKILL)
        earlier_logs.append(server.log_path.read_text(errors="replace"))
        server.start(port)
        assert server.port == port, (port, server.port)
        return f"killed -9 and restarted on port {port}"

    result = vm.run_vm_test(
        server.port, str(server.export), host_dir=server.export, log_dir=tmp_path / "vm",
        workload=WORKLOADS / "crash.sh", timeout=300.0, host_actions={"kill9-restart": kill9_restart})
    logs = earlier_logs + [server.log_path.read_text(errors="replace")]
    (tmp_path / "pysfsd-all.stderr").write_text("\n===== killed -9 and restarted =====\n".join(logs))
    assert result.passed, (f"{result.summary()}\n--- pysfsd stderr tail "
                           f"(all runs: {tmp_path / 'pysfsd-all.stderr'}) ---\n{tail(server.log_path)}")
    assert len(logs) == 2, "the workload did not have the server killed"
    assert not any("Traceback" in log for log in logs), tmp_path / "pysfsd-all.stderr"
    found = re.search(r"NFS3\.WRITE file=\{data=([0-9a-f]+)\} offset=0 .*" + first_write_marker("stream"), logs[0])
    assert found, "no WRITE of the stream before the crash"
    before, after = writes_of(logs[0], found.group(1)), writes_of(logs[1], found.group(1))
    assert before and after, f"the crash did not cut the stream: {before} WRITEs before, {after} after"
    unsure = uncommitted(logs[0])
    assert unsure, "no UNSTABLE WRITE was left uncommitted by the crash: the verifier change went untested"
    for fh, spans in unsure.items():
        again = written(logs[1], fh)
        for span in spans:
            assert covered(span, again), f"UNSTABLE WRITE {span} of {fh} not committed before the crash, not resent"
    report = io.StringIO()
    with redirect_stdout(report):
        rc = check_main(["check", "--export", str(server.export), "--state-dir", str(server.state_dir)])
    assert rc == 0, report.getvalue()
