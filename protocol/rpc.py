"""ONC RPC v2 messages (RFC 5531), pure encode/decode.

The full message grammar is declared below for tracing and tests; the hot path (parsing a
call header, prefixing a reply header) uses precompiled layouts of the same wire format.
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple, NoReturn

from xdr import (Enum, Opaque, Struct, Union, VarArray, XdrError, String,
                 uint32, void)

RPC_VERSION = 2
MAX_AUTH_BYTES = 400

msg_type = Enum("msg_type", dict(CALL=0, REPLY=1))
reply_stat = Enum("reply_stat", dict(MSG_ACCEPTED=0, MSG_DENIED=1))
accept_stat = Enum("accept_stat", dict(SUCCESS=0, PROG_UNAVAIL=1, PROG_MISMATCH=2,
                                       PROC_UNAVAIL=3, GARBAGE_ARGS=4, SYSTEM_ERR=5))
reject_stat = Enum("reject_stat", dict(RPC_MISMATCH=0, AUTH_ERROR=1))
auth_stat = Enum("auth_stat", dict(AUTH_OK=0, AUTH_BADCRED=1, AUTH_REJECTEDCRED=2,
                                   AUTH_BADVERF=3, AUTH_REJECTEDVERF=4, AUTH_TOOWEAK=5,
                                   AUTH_INVALIDRESP=6, AUTH_FAILED=7))
# auth_flavor is open-ended on the wire (unknown flavors must be answered, not rejected as
# garbage), so it is decoded as a plain unsigned int; these are the known values.
AUTH_NONE, AUTH_SYS, AUTH_SHORT, AUTH_DH, RPCSEC_GSS = 0, 1, 2, 3, 6

opaque_auth = Struct("opaque_auth", [("flavor", uint32), ("body", Opaque(MAX_AUTH_BYTES))])
authsys_parms = Struct("authsys_parms", [
    ("stamp", uint32), ("machinename", String(255)), ("uid", uint32), ("gid", uint32),
    ("gids", VarArray(uint32, 16)),
])
call_body = Struct("call_body", [
    ("rpcvers", uint32), ("prog", uint32), ("vers", uint32), ("proc", uint32),
    ("cred", opaque_auth), ("verf", opaque_auth),
])
mismatch_info = Struct("mismatch_info", [("low", uint32), ("high", uint32)])
accepted_reply_data = Union("accepted_reply_data", accept_stat, {
    accept_stat.SUCCESS: void,  # procedure results follow, encoded by the program
    accept_stat.PROG_MISMATCH: mismatch_info,
}, default=void)
accepted_reply = Struct("accepted_reply", [("verf", opaque_auth), ("reply_data", accepted_reply_data)])
rejected_reply = Union("rejected_reply", reject_stat, {
    reject_stat.RPC_MISMATCH: mismatch_info,
    reject_stat.AUTH_ERROR: auth_stat,
})
reply_body = Union("reply_body", reply_stat, {
    reply_stat.MSG_ACCEPTED: accepted_reply,
    reply_stat.MSG_DENIED: rejected_reply,
})
rpc_msg_body = Union("rpc_msg_body", msg_type, {msg_type.CALL: call_body, msg_type.REPLY: reply_body})
rpc_msg = Struct("rpc_msg", [("xid", uint32), ("body", rpc_msg_body)])


class Credentials(NamedTuple):
    """The caller's identity: AUTH_SYS fields, or ``uid=None`` for AUTH_NONE."""

    flavor: int
    uid: int | None = None
    gid: int | None = None
    gids: tuple[int, ...] = ()
    machinename: bytes = b""


class Call(NamedTuple):
    xid: int
    prog: int
    vers: int
    proc: int
    cred: Credentials
    args_offset: int


_NO_CRED = Credentials(0)


class NotACall(XdrError):
    """A well-formed message that is not a CALL (a stray REPLY): dropped silently."""


class CallRejected(Exception):
    """The header decoded far enough to answer with a rejection reply (already encoded)."""

    def __init__(self, reply: bytes, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply


_HEAD = struct.Struct(">IIIIIII")  # xid mtype rpcvers prog vers proc cred.flavor
_HEAD_CRED = struct.Struct(">IIIIIIII")  # the same and the credential body's length
_SUCCESS_HEAD = struct.Struct(">IIIIII")  # xid REPLY MSG_ACCEPTED verf(AUTH_NONE,0) SUCCESS
_MARKED_SUCCESS_HEAD = struct.Struct(">IIIIIII")  # the same after 4 bytes kept for a record mark
_ACCEPTED_HEAD = _SUCCESS_HEAD
_DENIED_HEAD = struct.Struct(">IIII")  # xid REPLY MSG_DENIED reject_stat
_U32x2 = struct.Struct(">II")
_U32x3 = struct.Struct(">III")
_CRED_AT = _HEAD.size  # where the credential body's length is
_new = tuple.__new__
_authsys_unpack = authsys_parms.compiled()[1]


def parse_call(data: bytes | bytearray | memoryview) -> Call:
    """Decode a call header; raises CallRejected (with the reply to send), NotACall or XdrError."""
    try:  # the fixed header and the credential's length: one unpack
        xid, mtype, rpcvers, prog, vers, proc, flavor, length = _HEAD_CRED.unpack_from(data, 0)
    except struct.error:
        _short_message(data)
    if mtype != 0:
        raise NotACall(f"message type {mtype}")
    if rpcvers != RPC_VERSION:
        raise CallRejected(rpc_mismatch_reply(xid), f"rpc version {rpcvers}")
    # The credential and verifier bodies (opaque<400>) laid out by hand: this runs per call.
    try:
        end = _CRED_AT + 4 + length
        _verf_flavor, verf_length = _U32x2.unpack_from(data, (end + 3) & ~3)
        off = ((end + 3) & ~3) + 8 + ((verf_length + 3) & ~3)
        if length > MAX_AUTH_BYTES or verf_length > MAX_AUTH_BYTES or off > len(data):
            raise XdrError("credential or verifier too long")
    except (struct.error, XdrError):
        raise CallRejected(auth_error_reply(xid, auth_stat.AUTH_BADCRED), "bad credentials") from None
    if flavor == AUTH_SYS:
        cred_body = bytes(data[_CRED_AT + 4:end])
        cred = _authsys_cache.get(cred_body)
        if cred is None:
            cred = _decode_authsys(xid, cred_body)
    elif flavor == AUTH_NONE:
        cred = _NO_CRED
    else:
        raise CallRejected(auth_error_reply(xid, auth_stat.AUTH_BADCRED), f"auth flavor {flavor}")
    return _new(Call, (xid, prog, vers, proc, cred, off))


def _short_message(data: bytes | bytearray | memoryview) -> NoReturn:
    """What a message too short for a call header and a credential length is: a stray
    reply (an error reply is 20-24 bytes), a truncated header, or a call whose
    credential is cut off (rejected, as any bad credential)."""
    if len(data) < _HEAD.size:
        mtype = _U32x2.unpack_from(data, 0)[1] if len(data) >= 8 else 0
        if mtype != 0:
            raise NotACall(f"message type {mtype}") from None
        raise XdrError("RPC header truncated") from None
    xid, mtype, rpcvers = _U32x3.unpack_from(data, 0)
    if mtype != 0:
        raise NotACall(f"message type {mtype}") from None
    if rpcvers != RPC_VERSION:
        raise CallRejected(rpc_mismatch_reply(xid), f"rpc version {rpcvers}") from None
    raise CallRejected(auth_error_reply(xid, auth_stat.AUTH_BADCRED), "bad credentials") from None


_authsys_cache: dict[bytes, Credentials] = {}


def _decode_authsys(xid: int, body: bytes) -> Credentials:
    """Decode an AUTH_SYS body; clients send the same few bodies over and over, so the
    decoded credentials are remembered (bounded)."""
    try:
        p, end = _authsys_unpack(body, 0)
    except (struct.error, XdrError):
        end, p = -1, None
    if p is None or end != len(body):
        raise CallRejected(auth_error_reply(xid, auth_stat.AUTH_BADCRED), "malformed AUTH_SYS")
    cred = Credentials(AUTH_SYS, p.uid, p.gid, tuple(p.gids), p.machinename)
    if len(_authsys_cache) >= 4096:
        _authsys_cache.clear()
    _authsys_cache[body] = cred
    return cred


def success_reply(xid: int, reserve: int = 0) -> bytearray:
    """A reply buffer holding ``reserve`` zero bytes (room for a record mark) and the
    accepted/SUCCESS header; the caller appends the procedure's results."""
    if reserve == 4:  # TCP: one allocation
        return bytearray(_MARKED_SUCCESS_HEAD.pack(0, xid, 1, 0, 0, 0, 0))
    buf = bytearray(reserve)
    buf += _SUCCESS_HEAD.pack(xid, 1, 0, 0, 0, 0)
    return buf


def accepted_error_reply(xid: int, stat: int, low: int = 0, high: int = 0) -> bytes:
    """PROG_UNAVAIL, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR, or PROG_MISMATCH with its range."""
    head = _ACCEPTED_HEAD.pack(xid, 1, 0, 0, 0, stat)
    if stat == accept_stat.PROG_MISMATCH:
        return head + _U32x2.pack(low, high)
    return head


def rpc_mismatch_reply(xid: int) -> bytes:
    return _DENIED_HEAD.pack(xid, 1, 1, reject_stat.RPC_MISMATCH) + _U32x2.pack(RPC_VERSION, RPC_VERSION)


def auth_error_reply(xid: int, stat: int) -> bytes:
    return _DENIED_HEAD.pack(xid, 1, 1, reject_stat.AUTH_ERROR) + struct.pack(">I", stat)


def encode_call(xid: int, prog: int, vers: int, proc: int, cred: Credentials | None = None) -> bytearray:
    """A call header (for clients, tests and benchmarks); append the arguments to it."""
    buf = bytearray()
    if cred is None or cred.flavor == AUTH_NONE:
        cred_auth = opaque_auth(AUTH_NONE, b"")
    else:
        body = bytearray()
        authsys_parms.pack(body, authsys_parms(0, cred.machinename, cred.uid or 0, cred.gid or 0, list(cred.gids)))
        cred_auth = opaque_auth(AUTH_SYS, bytes(body))
    call_body_value = call_body(RPC_VERSION, prog, vers, proc, cred_auth, opaque_auth(AUTH_NONE, b""))
    rpc_msg.pack(buf, rpc_msg(xid, (msg_type.CALL, call_body_value)))
    return buf


def decode_reply(data: bytes | memoryview) -> tuple[int, Any, int]:
    """Decode a reply: (xid, reply_body value, offset of the results)."""
    msg, off = rpc_msg.unpack(data, 0)
    mtype, body = msg.body
    if mtype != msg_type.REPLY:
        raise XdrError("not a reply")
    return msg.xid, body, off
