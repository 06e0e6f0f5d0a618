"""The Linux kernel client mounts pysfsd with no port options, in a qemu VM.

The guest runs ``mount -t nfs -o vers=3,nolock 10.0.2.2:EXPORT /mnt``
(scripts/vm/workloads/plain_mount.sh; busybox mount adds ``addr=`` and passes the options
to the kernel) and the kernel finds NFS and MOUNT by asking the portmapper at 10.0.2.2:111,
which is the host's 127.0.0.1:111:

* ``embedded``: pysfsd's own portmapper (``--portmap``), when port 111 is free; its trace
  must show the kernel's GETPORT calls for NFS and MOUNT;
* ``rpcbind``: the system rpcbind, which pysfsd registered with (one is started here with
  ``rpcbind -f`` when none runs, and stopped afterwards).

Then a small read/write check, and a second mount whose MOUNT calls go over UDP.  Skips
when qemu or the Debian cloud kernel is missing, unless PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from tests.server.test_discovery import (discovery_status, port_111_busy, registered_or_skip,
                                  rpcbind_running, start_server)
from tests.vm_support import WORKLOADS, tail, vm_or_skip

pytestmark = pytest.mark.vm


@pytest.mark.parametrize("portmapper", ["embedded", "rpcbind"])
def test_plain_mount_finds_the_server_through_the_portmapper(portmapper: str, tmp_path: Path) -> None:
    vm = vm_or_skip()
    context: AbstractContextManager[None]
    args: tuple[str, ...]
    if portmapper == "embedded":
        if port_111_busy():
            pytest.skip("port 111 is in use (a system rpcbind runs: the rpcbind variant covers it)")
        context, args = nullcontext(), ("--portmap",)
    else:
        context, args = rpcbind_running(), ()
    with context:
        srv = start_server(tmp_path, portmapper, *args, env={"PYSFSD_TRACE": "1"})
        try:
            status = discovery_status(srv)
            if portmapper == "embedded":
                assert status == "serving portmap v2 on 127.0.0.1:111 (tcp, udp)", status
            else:
                registered_or_skip(srv)
            result = vm.run_vm_test(
                srv.port, str(srv.export), host_dir=srv.export, log_dir=tmp_path / "vm",
                workload=WORKLOADS / "plain_mount.sh", timeout=300.0)
        finally:
            log = srv.stop()
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(srv.log_path)}"
    assert "Traceback" not in log
    if portmapper == "embedded":  # the kernel asked our portmapper, over TCP and over UDP
        getports = [line for line in log.splitlines() if "PORTMAP2.GETPORT" in line and "-> " in line]
        for prog in (100003, 100005):
            assert any(f"prog={prog}" in line for line in getports), getports
        assert any("prot=17" in line for line in getports), getports  # mountproto=udp
