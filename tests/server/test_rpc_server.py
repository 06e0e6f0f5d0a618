"""ONC RPC behaviour of the running server (RFC 5531): rejections, record marking,
pipelining and the duplicate-request cache, all through the server's TCP socket."""
from __future__ import annotations

import socket
import struct
import time

import pytest

from protocol import nfs3
from protocol.record import frame
from protocol.rpc import (AUTH_DH, AUTH_SYS, RPCSEC_GSS, accept_stat, auth_stat, encode_call,
                          mismatch_info, reject_stat, reply_stat)
from tests.nfs3_helpers import (MOUNT, NFS, OK, REMOVE, S, create_ok, diropargs, null_ok, pack,
                                raw_call_bytes, reply_of, u32)
from tests.conftest import serving
from tests.rpc_client import ROOT, RpcClient, fh

XID = 0x5EED0001


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for this module (starting one takes most of a second); every test
    still gets its own connection, and only the DRC test mutates the export."""
    base = tmp_path_factory.mktemp("rpcsrv")
    with serving(base) as srv:
        yield srv


@pytest.fixture
def rpc(server):
    with RpcClient(server.port) as client:
        yield client


def accepted(body):
    stat, acc = body
    assert stat == reply_stat.MSG_ACCEPTED, body
    return acc.reply_data


def denied(body):
    stat, rej = body
    assert stat == reply_stat.MSG_DENIED, body
    return rej


def getattr_args(h: bytes) -> bytes:
    return pack(nfs3.GETATTR3args, nfs3.GETATTR3args.cls(fh(h)))


def send_raw(rpc: RpcClient, record: bytes, xid: int) -> tuple:
    rpc.send_record(record)
    rxid, body, rest = reply_of(rpc.recv_record())
    assert rxid == xid
    return body, rest


# --- accepted errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("prog", [100004, 200000, 0, 0xFFFFFFFF])
def test_unknown_program_is_prog_unavail(server, rpc, prog):
    _, body, rest = rpc.raw_call(prog, 1, 0)
    assert accepted(body) == (accept_stat.PROG_UNAVAIL, None)
    assert rest == b""
    null_ok(rpc)


@pytest.mark.parametrize("prog,vers", [(NFS, 2), (NFS, 4), (NFS, 0), (MOUNT, 1), (MOUNT, 4)])
def test_unsupported_version_is_prog_mismatch_with_range(server, rpc, prog, vers):
    _, body, rest = rpc.raw_call(prog, vers, 0)
    assert accepted(body) == (accept_stat.PROG_MISMATCH, mismatch_info(3, 3))
    assert rest == b""
    null_ok(rpc)


@pytest.mark.parametrize("prog,proc", [(NFS, 22), (NFS, 1000), (MOUNT, 6), (MOUNT, 9)])
def test_unknown_procedure_is_proc_unavail(server, rpc, prog, proc):
    _, body, rest = rpc.raw_call(prog, 3, proc)
    assert accepted(body) == (accept_stat.PROC_UNAVAIL, None)
    assert rest == b""
    null_ok(rpc)


def test_garbage_args(server, rpc):
    root = rpc.mount(server.export_b)
    good = getattr_args(root)
    cases = {
        "truncated-handle": good[:-4],
        "length-only": u32(16),
        "empty": b"",
        "trailing-bytes": good + b"\0\0\0\0",
        "handle-over-64": u32(65) + bytes(68),
        "handle-huge-length": u32(0xFFFFFFF0) + bytes(16),
    }
    for name, args in cases.items():
        _, body, rest = rpc.raw_call(NFS, 3, 1, args)
        assert accepted(body) == (accept_stat.GARBAGE_ARGS, None), name
        assert rest == b"", name
        null_ok(rpc)
    # a non-idempotent procedure too (must not reach the handler or the reply cache)
    (tmp := server.export / "keep").write_bytes(b"")
    args = pack(nfs3.REMOVE3args, nfs3.REMOVE3args.cls(diropargs(root, b"keep")))
    _, body, _ = rpc.raw_call(NFS, 3, REMOVE, args[:-2])
    assert accepted(body) == (accept_stat.GARBAGE_ARGS, None)
    assert tmp.exists()
    # and MOUNT: a dirpath longer than MNTPATHLEN
    _, body, _ = rpc.raw_call(MOUNT, 3, 1, u32(1025) + b"/" * 1028)
    assert accepted(body) == (accept_stat.GARBAGE_ARGS, None)
    null_ok(rpc)


# --- denied calls ------------------------------------------------------------------------------

def test_rpc_version_3_is_rpc_mismatch(server, rpc):
    body, rest = send_raw(rpc, raw_call_bytes(XID, NFS, 3, 0, rpcvers=3), XID)
    assert denied(body) == (reject_stat.RPC_MISMATCH, mismatch_info(2, 2))
    assert rest == b""
    body, _ = send_raw(rpc, raw_call_bytes(XID + 1, NFS, 3, 0, rpcvers=1), XID + 1)
    assert denied(body) == (reject_stat.RPC_MISMATCH, mismatch_info(2, 2))
    null_ok(rpc)


@pytest.mark.parametrize("flavor", [AUTH_DH, RPCSEC_GSS, 2, 400000])
def test_unknown_auth_flavor_is_auth_badcred(server, rpc, flavor):
    body, rest = send_raw(rpc, raw_call_bytes(XID, NFS, 3, 0, cred_flavor=flavor,
                                               cred_body=b"\x01\x02\x03\x04\x05"), XID)
    assert denied(body) == (reject_stat.AUTH_ERROR, auth_stat.AUTH_BADCRED)
    assert rest == b""
    null_ok(rpc)


@pytest.mark.parametrize("cred_body", [
    b"",
    u32(0, 4) + b"host" + u32(0, 0),                    # gids count missing
    u32(0, 4) + b"host" + u32(0, 0, 17) + bytes(68),    # 17 gids
    u32(0, 0xFFFFFFF0, 0, 0, 0),                         # machinename length huge
    u32(0, 4) + b"host" + u32(0, 0, 0, 0),              # trailing bytes
], ids=["empty", "no-gids", "17-gids", "huge-name", "trailing"])
def test_malformed_auth_sys_is_auth_badcred(server, rpc, cred_body):
    body, _ = send_raw(rpc, raw_call_bytes(XID, NFS, 3, 0, cred_flavor=AUTH_SYS, cred_body=cred_body), XID)
    assert denied(body) == (reject_stat.AUTH_ERROR, auth_stat.AUTH_BADCRED)
    null_ok(rpc)


def test_truncated_header_and_stray_reply_leave_connection_usable(server, rpc):
    """Records the server cannot answer (no xid to answer, or a REPLY) are dropped."""
    rpc.send_record(u32(XID, 0, 2))                  # truncated call header
    rpc.send_record(u32(XID, 1, 0, 0, 0, 0))         # a REPLY sent to the server
    rpc.send_record(b"")                              # an empty record
    null_ok(rpc)


# --- record marking ------------------------------------------------------------------------------

def test_call_split_in_fragments_is_answered(server, rpc):
    root = rpc.mount(server.export_b)
    xid = XID + 7
    record = bytes(encode_call(xid, NFS, 3, 1, ROOT)) + getattr_args(root)
    framed = frame(record, max_fragment=5)
    assert framed.count(b"\x00\x00\x00\x05") > 5
    # each fragment in its own segment, with pauses, and a mark split across sends
    for i in range(0, len(framed), 7):
        rpc.sock.sendall(framed[i:i + 7])
        time.sleep(0.002)
    rxid, body, rest = reply_of(rpc.recv_record())
    assert rxid == xid
    assert accepted(body) == (accept_stat.SUCCESS, None)
    status, res = nfs3.GETATTR3res.unpack(rest, 0)[0]
    assert status == OK and res.obj_attributes.type == nfs3.ftype3.NF3DIR
    # empty non-final fragments are harmless
    xid += 1
    record = bytes(encode_call(xid, NFS, 3, 0, ROOT))
    rpc.sock.sendall(u32(0) + u32(0) + frame(record))
    assert reply_of(rpc.recv_record())[0] == xid


def _expect_closed(sock: socket.socket) -> None:
    sock.settimeout(10)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            raise AssertionError(f"unexpected data {data[:40]!r}")
    except ConnectionResetError:
        return


@pytest.mark.parametrize("mark", [0x80000000 | 0x7FFFFFFF, 0x7FFFFFFF, 0x80000000 | (64 << 20)])
def test_huge_record_mark_closes_connection(server, rpc, mark):
    rpc.sock.sendall(struct.pack(">I", mark) + bytes(100))
    _expect_closed(rpc.sock)
    with RpcClient(server.port) as fresh:
        null_ok(fresh)


def test_many_fragments_adding_up_past_the_bound_close_connection(server, rpc):
    chunk = bytes(256 << 10)
    try:
        for _ in range(16):  # 4 MiB in non-final fragments; the bound is about 1 MiB
            rpc.sock.sendall(struct.pack(">I", len(chunk)) + chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    else:
        _expect_closed(rpc.sock)
    with RpcClient(server.port) as fresh:
        null_ok(fresh)


def test_200_pipelined_calls_all_answered(server, rpc):
    root = rpc.mount(server.export_b)
    fileh = create_ok(rpc, root, b"data")
    (server.export / "data").write_bytes(b"x" * 5000)
    read_args = pack(nfs3.READ3args, nfs3.READ3args.cls(fh(fileh), 0, 4096))
    calls = []
    for i in range(200):
        xid = 0x7000_0000 + i
        kind = i % 4
        if kind == 0:
            rec = bytes(encode_call(xid, NFS, 3, 0, ROOT))                           # NULL
        elif kind == 1:
            rec = bytes(encode_call(xid, NFS, 3, 1, ROOT)) + getattr_args(root)      # GETATTR
        elif kind == 2:
            rec = bytes(encode_call(xid, NFS, 3, 6, ROOT)) + read_args              # READ (threaded)
        else:
            rec = bytes(encode_call(xid, NFS, 3, 18, ROOT)) + getattr_args(root)     # FSSTAT (threaded)
        calls.append((xid, kind, rec))
    rpc.sock.sendall(b"".join(frame(rec) for _, _, rec in calls))
    seen: dict[int, bytes] = {}
    for _ in range(200):
        xid, body, rest = reply_of(rpc.recv_record())
        assert xid not in seen, f"xid {xid:#x} answered twice"
        assert accepted(body) == (accept_stat.SUCCESS, None)
        seen[xid] = rest
    kinds = {xid: kind for xid, kind, _ in calls}
    assert set(seen) == set(kinds)
    for xid, rest in seen.items():
        if kinds[xid] == 2:
            status, res = nfs3.READ3res.unpack(rest, 0)[0]
            assert status == OK and res.data == b"x" * 4096
    null_ok(rpc)


# --- duplicate-request cache --------------------------------------------------------------------

def _remove_record(xid: int, d: bytes, name: bytes) -> bytes:
    args = pack(nfs3.REMOVE3args, nfs3.REMOVE3args.cls(diropargs(d, name)))
    return bytes(encode_call(xid, NFS, 3, REMOVE, ROOT)) + args


def _remove_status(rpc: RpcClient, record: bytes, xid: int) -> tuple[int, bytes]:
    body, rest = send_raw(rpc, record, xid)
    assert accepted(body) == (accept_stat.SUCCESS, None)
    return nfs3.REMOVE3res.unpack(rest, 0)[0][0], rest


def test_retransmitted_remove_is_replayed(server, rpc):
    root = rpc.mount(server.export_b)
    create_ok(rpc, root, b"victim")
    create_ok(rpc, root, b"other")
    xid = 0x0D0C0001
    record = _remove_record(xid, root, b"victim")
    status, first = _remove_status(rpc, record, xid)
    assert status == OK
    assert not (server.export / "victim").exists()
    # the identical retransmission: the cached NFS3_OK, not NOENT
    status, again = _remove_status(rpc, record, xid)
    assert status == OK
    assert again == first
    # also from another connection of the same host (a client reconnecting)
    with RpcClient(server.port) as other:
        status, _ = _remove_status(other, record, xid)
        assert status == OK
    # a new xid is a new request
    status, _ = _remove_status(rpc, _remove_record(xid + 1, root, b"victim"), xid + 1)
    assert status == S.NFS3ERR_NOENT
    # same xid, different arguments: not replayed
    status, _ = _remove_status(rpc, _remove_record(xid, root, b"missing"), xid)
    assert status == S.NFS3ERR_NOENT
    assert (server.export / "other").exists()
    status, _ = _remove_status(rpc, _remove_record(xid, root, b"other"), xid)
    assert status == OK
    assert not (server.export / "other").exists()
    null_ok(rpc)


def _drc_cases(server, rpc, root):
    """(procedure, args, result type) of non-idempotent calls that fail if executed twice."""
    from tests.nfs3_helpers import NO_SATTR, attrs, mkdir_ok, sattr
    d = mkdir_ok(rpc, root, b"drc2")
    (server.export / "drc2" / "old").write_bytes(b"")
    (server.export / "drc2" / "linked").write_bytes(b"")
    mkdir_ok(rpc, d, b"emptydir")
    f = create_ok(rpc, d, b"guarded-file")
    linked = rpc.nfs(3, nfs3.LOOKUP3args.cls(diropargs(d, b"linked")))[1].object.data
    ctime = attrs(rpc, f).ctime
    return [
        (8, nfs3.CREATE3args.cls(diropargs(d, b"c"), (nfs3.createmode3.GUARDED, NO_SATTR)), nfs3.CREATE3res),
        (9, nfs3.MKDIR3args.cls(diropargs(d, b"m"), NO_SATTR), nfs3.MKDIR3res),
        (10, nfs3.SYMLINK3args.cls(diropargs(d, b"s"), nfs3.symlinkdata3.cls(NO_SATTR, b"t")), nfs3.SYMLINK3res),
        (11, nfs3.MKNOD3args.cls(diropargs(d, b"p"), (nfs3.ftype3.NF3FIFO, NO_SATTR)), nfs3.MKNOD3res),
        (13, nfs3.RMDIR3args.cls(diropargs(d, b"emptydir")), nfs3.RMDIR3res),
        (14, nfs3.RENAME3args.cls(diropargs(d, b"old"), diropargs(d, b"new")), nfs3.RENAME3res),
        (15, nfs3.LINK3args.cls(fh(linked), diropargs(d, b"hard")), nfs3.LINK3res),
        (2, nfs3.SETATTR3args.cls(fh(f), sattr(mode=0o600), ctime), nfs3.SETATTR3res),
    ]


def test_retransmitted_non_idempotent_calls_are_replayed(server, rpc):
    root = rpc.mount(server.export_b)
    for i, (proc, args, res_type) in enumerate(_drc_cases(server, rpc, root)):
        xid = 0x0D0C1000 + i
        record = bytes(encode_call(xid, NFS, 3, proc, ROOT)) + pack(nfs3.NFS3.procedures[proc].args, args)
        replies = []
        for _ in range(2):
            body, rest = send_raw(rpc, record, xid)
            assert accepted(body) == (accept_stat.SUCCESS, None)
            replies.append(rest)
        assert res_type.unpack(replies[0], 0)[0][0] == OK, nfs3.NFS3.procedures[proc].name
        assert replies[1] == replies[0], nfs3.NFS3.procedures[proc].name
        # the same call under a new xid really runs again, and fails
        body, rest = send_raw(rpc, bytes(encode_call(xid + 0x100, NFS, 3, proc, ROOT))
                              + record[len(encode_call(xid, NFS, 3, proc, ROOT)):], xid + 0x100)
        assert res_type.unpack(rest, 0)[0][0] != OK, nfs3.NFS3.procedures[proc].name
    null_ok(rpc)


@pytest.mark.parametrize("shift", [0, 512], ids=["whole pages, inline", "partial pages, in threads"])
def test_pipelined_1mib_writes_land_intact(server, rpc, shift):
    """1 MiB WRITEs sent back to back on one connection are received into reused buffers
    (protocol/record.py), written on the event loop (whole pages) or in threads while later
    ones arrive (partial pages: nfsd/nfs3/procedures.py): every byte lands where it was
    sent, and a second round (other data, the first round's buffers) replaces the first
    exactly."""
    import random
    root = rpc.mount(server.export_b)
    name = b"big-writes-%d" % shift
    fileh = create_ok(rpc, root, name)
    mib, count = 1 << 20, 12
    expected = bytearray(shift + count * mib)
    rng = random.Random(10)
    for round_ in range(2):
        records = []
        for i in range(count):
            data = rng.randbytes(mib)
            expected[shift + i * mib:shift + (i + 1) * mib] = data
            args = nfs3.WRITE3args.cls(fh(fileh), shift + i * mib, mib, nfs3.stable_how.UNSTABLE, data)
            records.append(bytes(encode_call(0x7100_0000 + round_ * 100 + i, NFS, 3, 7, ROOT))
                           + pack(nfs3.WRITE3args, args))
        rpc.sock.sendall(b"".join(frame(r) for r in records))
        for _ in range(count):
            _xid, body, rest = reply_of(rpc.recv_record())
            assert accepted(body) == (accept_stat.SUCCESS, None)
            assert struct.unpack_from(">I", rest)[0] == OK
        assert (server.export / name.decode()).read_bytes() == expected, f"round {round_}"
