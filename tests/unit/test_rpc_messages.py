"""ONC RPC call parsing and reply building (RFC 5531).

``parse_call`` uses hand-precompiled layouts rather than the declared ``rpc_msg`` grammar,
and the reply builders likewise; decoding their output with the grammar (``decode_reply``)
checks that the two agree on the wire format.  Calls are built by hand here, not with
``encode_call``, so a shared mistake cannot cancel out.
"""
from __future__ import annotations

import struct

import pytest

from protocol import nfs3
from protocol.rpc import (AUTH_DH, AUTH_NONE, AUTH_SHORT, AUTH_SYS, RPCSEC_GSS, CallRejected,
                          Credentials, NotACall, accept_stat, accepted_error_reply,
                          auth_error_reply, auth_stat, decode_reply, encode_call, mismatch_info,
                          msg_type, opaque_auth, parse_call, reject_stat, reply_stat,
                          success_reply)
from xdr import XdrError, decode, encode

XID = 0xDEADBEEF
NULL_AUTH = opaque_auth(AUTH_NONE, b"")


def u32(*xs: int) -> bytes:
    return struct.pack(f">{len(xs)}I", *xs)


def opaque(body: bytes) -> bytes:
    return u32(len(body)) + body + bytes(-len(body) % 4)


def authsys_body(stamp: int, machine: bytes, uid: int, gid: int, gids: list[int]) -> bytes:
    return u32(stamp) + opaque(machine) + u32(uid, gid, len(gids), *gids)


def call(cred_flavor: int = AUTH_NONE, cred: bytes = b"", verf: bytes = b"", rpcvers: int = 2,
         mtype: int = 0, prog: int = 100003, vers: int = 3, proc: int = 1) -> bytes:
    """A call header, as a client puts it on the wire."""
    return (u32(XID, mtype, rpcvers, prog, vers, proc, cred_flavor) + opaque(cred)
            + u32(AUTH_NONE) + opaque(verf))


def rejection(data: bytes) -> tuple[int, object]:
    """The reply carried by the CallRejected that parsing ``data`` raises, decoded."""
    with pytest.raises(CallRejected) as info:
        parse_call(data)
    xid, body, off = decode_reply(info.value.reply)
    assert off == len(info.value.reply)
    return xid, body


# --- well-formed calls ----------------------------------------------------------------------

def test_auth_none_call() -> None:
    args = b"ARGS"
    c = parse_call(call(proc=6) + args)
    assert (c.xid, c.prog, c.vers, c.proc) == (XID, 100003, 3, 6)
    assert c.cred == Credentials(AUTH_NONE)
    assert c.cred.uid is None
    assert c.args_offset == len(call())


def test_auth_sys_call_decodes_identity() -> None:
    body = authsys_body(7, b"client.example", 1000, 100, [4, 24, 27])
    data = call(AUTH_SYS, body, verf=b"odd") + b"ARGS"  # a 3-byte verifier needs padding
    c = parse_call(data)
    assert c.cred == Credentials(AUTH_SYS, 1000, 100, (4, 24, 27), b"client.example")
    assert data[c.args_offset:] == b"ARGS"


def test_auth_sys_root_with_sixteen_gids() -> None:
    c = parse_call(call(AUTH_SYS, authsys_body(0, b"", 0, 0, list(range(16)))))
    assert (c.cred.uid, c.cred.gid, c.cred.gids) == (0, 0, tuple(range(16)))


def test_encode_call_matches_hand_built_header() -> None:
    body = authsys_body(0, b"m", 1, 2, [3])
    built = encode_call(XID, 100003, 3, 1, Credentials(AUTH_SYS, 1, 2, (3,), b"m"))
    assert bytes(built) == call(AUTH_SYS, body)
    assert bytes(encode_call(XID, 100003, 3, 1)) == call()


# --- rejected calls ---------------------------------------------------------------------------

def test_rpc_version_3_gets_rpc_mismatch() -> None:
    xid, body = rejection(call(rpcvers=3))
    assert xid == XID
    assert body == (reply_stat.MSG_DENIED, (reject_stat.RPC_MISMATCH, mismatch_info(2, 2)))


@pytest.mark.parametrize("flavor", [RPCSEC_GSS, AUTH_DH, AUTH_SHORT, 0xFFFFFFFF])
def test_unknown_auth_flavor_gets_auth_badcred(flavor: int) -> None:
    xid, body = rejection(call(flavor, b"\x01\x02\x03\x04\x05"))
    assert xid == XID
    assert body == (reply_stat.MSG_DENIED, (reject_stat.AUTH_ERROR, auth_stat.AUTH_BADCRED))


@pytest.mark.parametrize("cred", [
    b"",                                                        # empty
    authsys_body(0, b"host", 1, 1, [])[:-4],                    # gids count missing
    authsys_body(0, b"host", 1, 1, [5]) + u32(0),               # trailing bytes in the body
    authsys_body(0, b"host", 1, 1, list(range(17))),            # more than 16 gids
    authsys_body(0, b"h" * 256, 1, 1, []),                      # machinename over 255
    u32(0, 0xFFFFFFF0, 0, 0, 0),                                # machinename length huge
    u32(0) + opaque(b"host") + u32(1, 1, 2, 5),                 # gids shorter than count
], ids=["empty", "no-gids", "trailing", "17-gids", "long-name", "huge-name", "short-gids"])
def test_malformed_auth_sys_gets_auth_badcred(cred: bytes) -> None:
    _, body = rejection(call(AUTH_SYS, cred))
    assert body == (reply_stat.MSG_DENIED, (reject_stat.AUTH_ERROR, auth_stat.AUTH_BADCRED))


@pytest.mark.parametrize("data", [
    call(AUTH_NONE, bytes(404)),                                # credential over MAX_AUTH_BYTES
    call(AUTH_NONE, verf=bytes(401)),                           # verifier over MAX_AUTH_BYTES
    call(AUTH_SYS, authsys_body(0, b"h", 1, 1, []))[:-4],       # verifier body length missing
    u32(XID, 0, 2, 100003, 3, 0, AUTH_NONE),                    # header only
], ids=["long-cred", "long-verf", "no-verf", "header-only"])
def test_bad_credential_or_verifier_framing_gets_auth_badcred(data: bytes) -> None:
    _, body = rejection(data)
    assert body == (reply_stat.MSG_DENIED, (reject_stat.AUTH_ERROR, auth_stat.AUTH_BADCRED))


@pytest.mark.parametrize("reply", [
    accepted_error_reply(XID, accept_stat.SYSTEM_ERR),     # 24 bytes: shorter than a call header
    auth_error_reply(XID, auth_stat.AUTH_TOOWEAK),          # 20 bytes
    bytes(success_reply(XID)) + bytes(64),
    call(mtype=msg_type.REPLY),
], ids=["accepted-error", "auth-error", "success", "reply-type-call-shape"])
def test_reply_message_is_not_a_call(reply: bytes) -> None:
    with pytest.raises(NotACall):
        parse_call(reply)


@pytest.mark.parametrize("extra", range(4))
def test_header_without_a_whole_credential_length_is_checked_in_order(extra: int) -> None:
    # 28-31 bytes: parse_call reads the header and the credential's length in one unpack,
    # so these go through its short-message path, which must answer as the header says.
    head = u32(XID, 0, 2, 100003, 3, 0, AUTH_SYS) + bytes(extra)
    _, body = rejection(head)
    assert body == (reply_stat.MSG_DENIED, (reject_stat.AUTH_ERROR, auth_stat.AUTH_BADCRED))
    _, body = rejection(u32(XID, 0, 3, 100003, 3, 0, AUTH_SYS) + bytes(extra))
    assert body == (reply_stat.MSG_DENIED, (reject_stat.RPC_MISMATCH, mismatch_info(2, 2)))
    with pytest.raises(NotACall):
        parse_call(u32(XID, msg_type.REPLY, 2, 100003, 3, 0, AUTH_SYS) + bytes(extra))


@pytest.mark.parametrize("n", range(28))
def test_truncated_header_is_an_xdr_error(n: int) -> None:
    with pytest.raises(XdrError):
        parse_call(call()[:n])


# --- replies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stat", [accept_stat.PROG_UNAVAIL, accept_stat.PROC_UNAVAIL,
                                  accept_stat.GARBAGE_ARGS, accept_stat.SYSTEM_ERR])
def test_accepted_error_replies(stat: int) -> None:
    reply = accepted_error_reply(XID, stat)
    xid, body, off = decode_reply(reply)
    assert (xid, off) == (XID, len(reply))
    assert body == (reply_stat.MSG_ACCEPTED, (NULL_AUTH, (stat, None)))


def test_prog_mismatch_reply_carries_range() -> None:
    reply = accepted_error_reply(XID, accept_stat.PROG_MISMATCH, 2, 4)
    xid, body, off = decode_reply(reply)
    assert (xid, off) == (XID, len(reply))
    assert body == (reply_stat.MSG_ACCEPTED, (NULL_AUTH, (accept_stat.PROG_MISMATCH, mismatch_info(2, 4))))


def test_success_reply_is_followed_by_results() -> None:
    buf = success_reply(XID, reserve=4)
    assert buf[:4] == bytes(4)
    nfs3.GETATTR3res.pack(buf, (nfs3.nfsstat3.NFS3ERR_STALE, None))
    xid, body, off = decode_reply(bytes(buf[4:]))
    assert xid == XID
    assert body == (reply_stat.MSG_ACCEPTED, (NULL_AUTH, (accept_stat.SUCCESS, None)))
    assert decode(nfs3.GETATTR3res, bytes(buf[4 + off:])) == (nfs3.nfsstat3.NFS3ERR_STALE, None)


def test_decode_reply_refuses_a_call() -> None:
    with pytest.raises(XdrError):
        decode_reply(call())


def test_failure_result_derived_from_the_result_type() -> None:
    """A call failing before its handler gathered anything gets the procedure's failure
    arm with every attribute absent, derived from the result type alone (protocol/program.py):
    the dispatcher needs to know no program.  Results without a status union have none."""
    from protocol.mount3 import MOUNT3, mountstat3
    from protocol.nlm4 import NLM4
    from protocol.nsm import SM
    procs = {p.name: p for p in nfs3.NFS3.procedures.values()}
    stale = nfs3.nfsstat3.NFS3ERR_STALE
    assert procs["GETATTR"].failure(stale) == (stale, None)
    assert procs["LOOKUP"].failure(stale) == (stale, nfs3.LOOKUP3resfail.cls(None))
    no_wcc = nfs3.wcc_data.cls(None, None)
    assert procs["RENAME"].failure(stale) == (stale, nfs3.RENAME3resfail.cls(no_wcc, no_wcc))
    failure = procs["WRITE"].failure(stale)
    assert failure == (stale, nfs3.WRITE3resfail.cls(no_wcc))
    status, body = failure
    # the arm round-trips through the result's own encoder
    assert decode(nfs3.WRITE3res, encode(nfs3.WRITE3res, (status, body))) == (stale, body)
    assert MOUNT3.procedures[1].failure(mountstat3.MNT3ERR_ACCES) == (mountstat3.MNT3ERR_ACCES, None)
    assert NLM4.procedures[2].failure(stale) is None
    assert SM.procedures[1].failure(stale) is None
