"""The messages between the server and a transducer worker, over a stream socket.

A request is ``kind, key, payload``; a reply ``status, payload``.  Each is a fixed header
(kinds and lengths) followed by the bytes; lengths are bounded on both sides, so a worker
gone mad cannot make the server allocate more than ``MAX_REPLY``.
"""
from __future__ import annotations

import socket
import struct
from typing import NamedTuple

REQUEST = struct.Struct(">BHI")   # kind, key length, payload length
REPLY = struct.Struct(">BI")      # status, payload length

DESCRIBE, RUN_COMMAND, RUN_ENTRY_POINT = 1, 2, 3
OK, FAILED = 0, 1

MAX_INPUT = 16 << 20              # bytes of a file a user transducer receives
MAX_OUTPUT = 1 << 20              # bytes it may print for one file (the contract's bound)
MAX_REPLY = MAX_OUTPUT + (64 << 10)


class WireError(Exception):
    """The peer broke the protocol or went away."""


class Request(NamedTuple):
    kind: int
    key: bytes
    payload: bytes


class Reply(NamedTuple):
    status: int
    payload: bytes


def encode_request(kind: int, key: bytes, payload: bytes | memoryview) -> list[bytes | memoryview]:
    return [REQUEST.pack(kind, len(key), len(payload)), key, payload]


def encode_reply(status: int, payload: bytes) -> bytes:
    return REPLY.pack(status, len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise WireError("connection closed")
        got += k
    return bytes(buf)


def read_request(sock: socket.socket, max_payload: int = MAX_INPUT) -> Request | None:
    """The next request, or None at a clean end of stream."""
    try:
        head = recv_exact(sock, REQUEST.size)
    except WireError:
        return None
    kind, key_len, payload_len = REQUEST.unpack(head)
    if payload_len > max_payload:
        raise WireError(f"request of {payload_len} bytes")
    key = recv_exact(sock, key_len)
    return Request(kind, key, recv_exact(sock, payload_len))


def read_reply(sock: socket.socket) -> Reply:
    status, length = REPLY.unpack(recv_exact(sock, REPLY.size))
    if status not in (OK, FAILED) or length > MAX_REPLY:
        raise WireError(f"bad reply header (status {status}, {length} bytes)")
    return Reply(status, recv_exact(sock, length))
