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
