"""The server answers NULL, MNT and GETATTR over TCP."""
from protocol import nfs3
from tests.rpc_client import fh


def test_mount_and_getattr(server, rpc):
    root = rpc.mount(server.export_b)
    status, ok = rpc.nfs(1, nfs3.GETATTR3args.cls(fh(root)))
    assert status == nfs3.NFS3_OK
    assert ok.obj_attributes.type == nfs3.ftype3.NF3DIR
    assert ok.obj_attributes.fileid == server.export.stat().st_ino
