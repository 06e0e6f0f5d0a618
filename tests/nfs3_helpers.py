"""Shared helpers for the protocol-level tests against a running server: typed NFSv3
calls with short names, raw RPC records and reply decoding."""
from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

from protocol import nfs3
from protocol.rpc import AUTH_NONE, AUTH_SYS, Credentials, decode_reply
from protocol.rpc import encode_call
from nfsd.rpc.client import next_xid
from tests.rpc_client import ROOT, RpcClient, fh

NFS, MOUNT = 100003, 100005
S = nfs3.nfsstat3
OK = nfs3.NFS3_OK

# procedure numbers
GETATTR, SETATTR, LOOKUP, ACCESS, READLINK, READ, WRITE, CREATE, MKDIR, SYMLINK, MKNOD = range(1, 12)
REMOVE, RMDIR, RENAME, LINK, READDIR, READDIRPLUS, FSSTAT, FSINFO, PATHCONF, COMMIT = range(12, 22)

NO_SATTR = nfs3.sattr3.cls(None, None, None, None, (0, None), (0, None))
ZERO_VERF = b"\0" * 8


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def pack(t: Any, value: Any) -> bytes:
    buf = bytearray()
    t.pack(buf, value)
    return bytes(buf)


def sattr(mode: int | None = None, uid: int | None = None, gid: int | None = None,
          size: int | None = None) -> Any:
    return nfs3.sattr3.cls(mode, uid, gid, size, (0, None), (0, None))


def diropargs(d: bytes, name: bytes) -> Any:
    return nfs3.diropargs3.cls(fh(d), name)


def cred(uid: int, gid: int, gids: tuple[int, ...] = ()) -> Credentials:
    return Credentials(AUTH_SYS, uid, gid, gids, b"host")


def raw_call_bytes(xid: int, prog: int, vers: int, proc: int, args: bytes = b"",
                   cred_flavor: int = AUTH_NONE, cred_body: bytes = b"", rpcvers: int = 2) -> bytes:
    """A call record built by hand (so malformed headers can be sent)."""
    def opaque(b: bytes) -> bytes:
        return u32(len(b)) + b + bytes(-len(b) % 4)
    return (u32(xid, 0, rpcvers, prog, vers, proc, cred_flavor) + opaque(cred_body)
            + u32(AUTH_NONE, 0) + args)


def reply_of(record: bytes) -> tuple[int, Any, bytes]:
    xid, body, off = decode_reply(record)
    return xid, body, record[off:]


def null_ok(client: RpcClient) -> None:
    """The connection still answers NFS NULL."""
    _, body, results = client.raw_call(NFS, 3, 0)
    stat, accepted = body
    assert stat == 0 and accepted.reply_data == (0, None), body
    assert results == b""


# --- typed calls -------------------------------------------------------------------------------

def getattr_(rpc: RpcClient, h: bytes) -> Any:
    return rpc.nfs(GETATTR, nfs3.GETATTR3args.cls(fh(h)))


def attrs(rpc: RpcClient, h: bytes) -> Any:
    status, res = getattr_(rpc, h)
    assert status == OK, status
    return res.obj_attributes


def lookup(rpc: RpcClient, d: bytes, name: bytes, c: Credentials | None = None) -> Any:
    args = nfs3.LOOKUP3args.cls(diropargs(d, name))
    return rpc.nfs(LOOKUP, args) if c is None else rpc.nfs(LOOKUP, args, c)


def create(rpc: RpcClient, d: bytes, name: bytes, mode: int = 0, how: Any = None) -> Any:
    """CREATE; ``mode`` a createmode3, ``how`` the sattr3 (default: none) or the verifier."""
    if how is None:
        how = NO_SATTR if mode != nfs3.createmode3.EXCLUSIVE else b"verifier"
    return rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(d, name), (mode, how)))


def create_ok(rpc: RpcClient, d: bytes, name: bytes, perm: int = 0o644) -> bytes:
    status, res = create(rpc, d, name, nfs3.createmode3.GUARDED, sattr(mode=perm))
    assert status == OK, (name, status)
    return res.obj.data


def mkdir(rpc: RpcClient, d: bytes, name: bytes, perm: int | None = 0o755) -> Any:
    return rpc.nfs(MKDIR, nfs3.MKDIR3args.cls(diropargs(d, name), sattr(mode=perm)))


def mkdir_ok(rpc: RpcClient, d: bytes, name: bytes, perm: int = 0o755) -> bytes:
    status, res = mkdir(rpc, d, name, perm)
    assert status == OK, (name, status)
    return res.obj.data


def symlink(rpc: RpcClient, d: bytes, name: bytes, target: bytes) -> Any:
    return rpc.nfs(SYMLINK, nfs3.SYMLINK3args.cls(diropargs(d, name),
                                                  nfs3.symlinkdata3.cls(NO_SATTR, target)))


def remove(rpc: RpcClient, d: bytes, name: bytes) -> Any:
    return rpc.nfs(REMOVE, nfs3.REMOVE3args.cls(diropargs(d, name)))


def rmdir(rpc: RpcClient, d: bytes, name: bytes) -> Any:
    return rpc.nfs(RMDIR, nfs3.RMDIR3args.cls(diropargs(d, name)))


def rename(rpc: RpcClient, sd: bytes, sname: bytes, dd: bytes, dname: bytes) -> Any:
    return rpc.nfs(RENAME, nfs3.RENAME3args.cls(diropargs(sd, sname), diropargs(dd, dname)))


def read(rpc: RpcClient, h: bytes, offset: int, count: int) -> Any:
    return rpc.nfs(READ, nfs3.READ3args.cls(fh(h), offset, count))


def write(rpc: RpcClient, h: bytes, offset: int, data: bytes, stable: int = 2) -> Any:
    return rpc.nfs(WRITE, nfs3.WRITE3args.cls(fh(h), offset, len(data), stable, data))


def commit(rpc: RpcClient, h: bytes, offset: int = 0, count: int = 0) -> Any:
    return rpc.nfs(COMMIT, nfs3.COMMIT3args.cls(fh(h), offset, count))


def _listing_call(rpc: RpcClient, proc: int, args: bytes, res_type: Any) -> tuple[Any, int]:
    """Send a listing call; (result, length of the whole reply record)."""
    xid = next_xid()
    rpc.send_record(bytes(encode_call(xid, NFS, 3, proc, ROOT)) + args)
    record = rpc.recv_record()
    rxid, body, off = decode_reply(record)
    assert rxid == xid
    assert body[0] == 0 and body[1].reply_data == (0, None), body
    value, end = res_type.unpack(record, off)
    assert end == len(record)
    return value, len(record)


def readdir_raw(rpc: RpcClient, d: bytes, cookie: int, verf: bytes, count: int) -> tuple[Any, int]:
    """READDIR: (result, length of the reply record: RPC header and READDIR3res)."""
    args = pack(nfs3.READDIR3args, nfs3.READDIR3args.cls(fh(d), cookie, verf, count))
    return _listing_call(rpc, READDIR, args, nfs3.READDIR3res)


def readdirplus_raw(rpc: RpcClient, d: bytes, cookie: int, verf: bytes, dircount: int,
                    maxcount: int) -> tuple[Any, int]:
    """READDIRPLUS: (result, length of the reply record: RPC header and READDIRPLUS3res)."""
    args = pack(nfs3.READDIRPLUS3args, nfs3.READDIRPLUS3args.cls(fh(d), cookie, verf, dircount, maxcount))
    return _listing_call(rpc, READDIRPLUS, args, nfs3.READDIRPLUS3res)


def listing_status(rpc: RpcClient, d: bytes) -> int:
    """The status of a first READDIRPLUS of ``d`` (a query directory: JUKEBOX while its
    fields are being indexed)."""
    (status, _), _ = readdirplus_raw(rpc, d, 0, ZERO_VERF, 4096, 4096)
    return status


def udp_listing_status(port: int, d: bytes) -> int:
    """``listing_status`` over UDP, where the server holds no call (nfsd/rpc/held.py): a
    query directory whose fields are still being indexed answers JUKEBOX at once there,
    while over TCP the call is held until they are."""
    from tests.rpc_client import UdpRpcClient
    with UdpRpcClient(port) as udp:
        status, _ = udp.nfs(17, nfs3.READDIRPLUS3args.cls(fh(d), 0, ZERO_VERF, 4096, 4096))
    return int(status)


def wait_listable(rpc: RpcClient, d: bytes, seconds: float = 60.0) -> None:
    """Wait while ``d`` answers JUKEBOX; any other error fails."""
    deadline = time.monotonic() + seconds
    while (status := listing_status(rpc, d)) != OK:
        assert status == S.NFS3ERR_JUKEBOX and time.monotonic() < deadline, status
        time.sleep(0.02)


def content_pass_tree(export: Path) -> None:
    """A tree whose content passes take visibly different times on a first index: one C
    file (``exports``: a quick pass over the few files it reads) and 40 text files of 1 MiB
    holding ``needle`` (``text``: every file read, seconds)."""
    export.mkdir()
    (export / "a.c").write_text("int exported_fn(void) { return 0; }\n")
    words = b" ".join(b"w%d" % i for i in range(150_000))[: 1 << 20]
    for i in range(40):
        (export / f"n{i:02d}.txt").write_bytes(b"needle " + words)


def list_dir(rpc: RpcClient, d: bytes, plus: bool = True, maxcount: int = 32768) -> list[Any]:
    """Every entry of a directory, following cookies until eof."""
    out: list[Any] = []
    cookie, verf = 0, ZERO_VERF
    for _ in range(1_000_000):
        if plus:
            (status, res), _ = readdirplus_raw(rpc, d, cookie, verf, maxcount, maxcount)
        else:
            (status, res), _ = readdir_raw(rpc, d, cookie, verf, maxcount)
        assert status == OK, status
        out.extend(res.reply.entries)
        if res.reply.eof:
            return out
        assert res.reply.entries, "no progress without eof"
        cookie, verf = res.reply.entries[-1].cookie, res.cookieverf
    raise AssertionError("listing never reached eof")


def look(rpc: RpcClient, d: bytes, *path: bytes) -> bytes:
    """The handle of ``d/path...`` (LOOKUP each name, asserting OK)."""
    for name in path:
        status, res = lookup(rpc, d, name)
        assert status == OK, (name, status)
        d = res.object.data
    return d


def names(rpc: RpcClient, d: bytes) -> set[bytes]:
    """The entry names of directory ``d``, without ``.`` and ``..``."""
    return {e.name for e in list_dir(rpc, d)} - {b".", b".."}
