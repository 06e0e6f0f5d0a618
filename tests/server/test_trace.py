"""PYSFSD_TRACE=2 explains a refusal: the credentials the call ran with after the export
rules squashed them, beside those the client sent, and modes in octal."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import nfs3_helpers as h
from tests.conftest import ServerProcess
from tests.rpc_client import RpcClient


def test_trace_shows_effective_credentials_and_octal_modes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("squashing acts only when the server runs as root")
    export = tmp_path / "export"
    export.mkdir()
    export.chmod(0o755)  # root's, not writable by nobody: root on the client is refused
    srv = ServerProcess(export, tmp_path / "state", env={"PYSFSD_TRACE": "2"},
                        export_options="*(rw,root_squash,insecure)").start()
    try:
        with RpcClient(srv.port) as rpc:
            root = rpc.mount(srv.export_b)
            status, _ = h.create(rpc, root, b"new", how=h.sattr(mode=0o640))
            assert status == h.S.NFS3ERR_ACCES
            h.getattr_(rpc, root)
    finally:
        log = srv.stop()
    create = log[log.index("NFS3.CREATE"):]
    assert "sent uid=0 gid=0 gids=[] -> ran as uid=65534 gid=65534 gids=[] (rule '*')" in create, create[:2000]
    assert "mode = 0640" in create, create[:2000]
    getattr_ = log[log.index("NFS3.GETATTR"):]
    assert "mode = 0755" in getattr_, getattr_[:2000]


def test_each_worker_names_itself_in_the_trace(tmp_path: Path) -> None:
    """With several workers every trace line says which one served the call (``w0``, ``w1``):
    two workers' lines interleave in the one stderr, and a connection stays on one worker."""
    export = tmp_path / "export"
    export.mkdir()
    srv = ServerProcess(export, tmp_path / "state", env={"PYSFSD_TRACE": "1"}, args=("--workers", "2")).start()
    clients: list[RpcClient] = []
    try:
        seen: set[str] = set()
        for _ in range(20):  # connections spread over the workers: until both have served one
            rpc = RpcClient(srv.port).__enter__()
            clients.append(rpc)
            h.getattr_(rpc, rpc.mount(srv.export_b))
            lines = [line for line in srv.log_path.read_text().splitlines() if "pysfsd.trace" in line]
            seen = {line.split()[3] for line in lines}
            if seen == {"w0", "w1"}:
                break
        assert seen == {"w0", "w1"}, lines[-10:]
        by_port: dict[str, set[str]] = {}
        for line in lines:
            fields = line.split()
            by_port.setdefault(fields[5], set()).add(fields[3])  # 127.0.0.1:PORT -> worker
        assert all(len(workers) == 1 for workers in by_port.values()), by_port
    finally:
        for rpc in clients:
            rpc.__exit__(None, None, None)
        srv.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_embedded_portmapper_is_traced_with_any_worker_count(tmp_path: Path, workers: str) -> None:
    """With several workers the parent serves the embedded portmapper: PYSFSD_TRACE must show
    its calls too (the kernel client's GETPORTs at mount time; tests/vm/test_vm_plain_mount.py
    looks for them).  It did not with two workers: the parent passed trace level 0."""
    from protocol import portmap
    from tests.server.test_discovery import start_with_portmap
    export = tmp_path / "export"
    export.mkdir()
    srv = ServerProcess(export, tmp_path / "state", env={"PYSFSD_TRACE": "1"}, args=("--workers", workers))
    pm_port = start_with_portmap(srv)
    try:
        with RpcClient(pm_port) as pm:
            assert pm.call(portmap.PORTMAP2, 3, portmap.mapping(100003, 3, 6, 0)) == srv.port
        log = srv.stop()
    finally:
        srv.stop()
    getports = [line for line in log.splitlines() if "PORTMAP2.GETPORT" in line and "-> " in line]
    assert any("prog=100003" in line for line in getports), log[-2000:]
