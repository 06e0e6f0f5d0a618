"""Two heads over one CephFS (issue 16 groundwork): today's server, unchanged, run as heads A
and B, each in its own network and mount namespace with its own ceph-fuse mount of the same
file system at the same path and its own state directory (LMDB); a raw NFSv3 client in a
third namespace.  Handles are byte-identical from both heads (a handle is the file system's
own identity, so either head resolves the other's), and a file created and written through A
is read through B.  What does *not* yet agree (B's query directories, a handle B never saw
resolved without a search) is the subject of issue 16 proper.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from scripts.cluster.netns import Host
from tests.conftest import REPO
from tests.nfs3_helpers import OK, create_ok, lookup, read, write
from tests.rpc_client import RpcClient

PORT = 2049


def start_head(host: Host, export: str, state_dir: Path) -> subprocess.Popen:
    """``python -m nfsd`` in ``host``, on all of its addresses; returns once it has indexed."""
    state_dir.mkdir(parents=True)
    proc = host.popen([sys.executable, "-m", "nfsd", "--export",
                       f'"{export}" *(rw,no_root_squash,insecure)', "--bind", "0.0.0.0",
                       "--port", str(PORT), "--state-dir", str(state_dir),
                       "--no-register", "--no-locks"],
                      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), text=True,
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=(state_dir.parent / f"{host.name}.stderr").open("w"))
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("pysfsd: index ready"):
            break
        assert time.monotonic() < deadline, "head did not finish indexing"
    else:
        raise RuntimeError(f"head in {host.name} exited: "
                           f"{(state_dir.parent / f'{host.name}.stderr').read_text()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()   # drain the rest
    return proc


def connect(client: Host, head: Host) -> RpcClient:
    """A TCP connection opened from inside the client's network namespace."""
    with client.network():
        for _ in range(50):
            try:
                return RpcClient(PORT, host=head.address or "")
            except ConnectionRefusedError:
                time.sleep(0.1)
        return RpcClient(PORT, host=head.address or "")


def handles(rpc: RpcClient, export: str) -> tuple[bytes, bytes, bytes]:
    root = rpc.mount(os.fsencode(export))
    status, res = lookup(rpc, root, b"shared")
    assert status == OK, status
    d = res.object.data
    status, res = lookup(rpc, d, b"file.c")
    assert status == OK, status
    return root, d, res.object.data


def test_two_heads_share_handles_and_files(ceph, host_factory, tmp_path: Path) -> None:
    a, b, client = host_factory("a"), host_factory("b"), host_factory("client")
    export = f"{ceph.dir}/mnt-heads"           # the same path in A and B, each its own mount
    for head in (a, b):
        ceph.mount(head, export)
    base = Path(a.path(export))
    (base / "shared").mkdir()
    (base / "shared" / "file.c").write_bytes(b"int main(void) { return 0; }\n")

    start_head(a, export, tmp_path / "state-a")
    start_head(b, export, tmp_path / "state-b")
    with connect(client, a) as ra, connect(client, b) as rb:
        from_a, from_b = handles(ra, export), handles(rb, export)
        assert from_a == from_b                 # root, directory, file: byte for byte

        # created and written through A, read through B (by the handle A gave)
        _, d, _ = from_a
        h = create_ok(ra, d, b"new.c")
        status, res = write(ra, h, 0, b"written through A\n", stable=2)  # FILE_SYNC
        assert status == OK, status
        status, res = lookup(rb, d, b"new.c")
        assert status == OK, status
        assert res.object.data == h
        status, res = read(rb, h, 0, 100)
        assert status == OK, status
        assert res.data == b"written through A\n"
