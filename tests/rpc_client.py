"""The shared blocking RPC clients (``nfsd.rpc.client``, TCP and UDP) as the tests use them:
root's AUTH_SYS credentials by default, and MOUNT and NFSv3 conveniences."""
from __future__ import annotations

import struct
from typing import Any

from nfsd.rpc import client as rpc_client
from protocol import mount3, nfs3
from protocol.rpc import AUTH_SYS, Credentials

ROOT = Credentials(AUTH_SYS, 0, 0, (), b"pytest")


class _Conveniences(rpc_client.RpcClient):
    def mount(self, path: bytes) -> bytes:
        status, ok = self.call(mount3.MOUNT3, 1, path)
        assert status == 0, f"MNT {path!r}: {status}"
        return bytes(ok.fhandle)

    def nfs(self, proc: int, args: Any, cred: Credentials | None = ROOT) -> Any:
        return self.call(nfs3.NFS3, proc, args, cred)


# How long a call may take before the test fails.  A first READDIRPLUS of 100,000 entries
# took over 10 s on a loaded 2-core machine (test_readdirplus_100k_entries timed out, the
# server still working): the bound is for a server that hangs, not a speed figure.
CALL_TIMEOUT_S = 60.0


class RpcClient(_Conveniences):
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = CALL_TIMEOUT_S,
                 source_port: int | None = None) -> None:
        super().__init__(port, host, timeout, source_port, cred=ROOT)


class UdpRpcClient(_Conveniences, rpc_client.UdpRpcClient):
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> None:
        rpc_client.UdpRpcClient.__init__(self, port, host, timeout, cred=ROOT)


def fh(data: bytes) -> Any:
    return nfs3.nfs_fh3.cls(data)


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)
