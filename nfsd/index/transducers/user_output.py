"""What a user transducer said about one file, checked before anything reaches the index.

The contract (README.rst, "User transducers"): ``field=value`` lines of UTF-8, at most
``MAX_USER_PAIRS`` of them and ``MAX_OUTPUT`` bytes in all; a field matches
``[a-z][a-z0-9_]{0,31}``; a value is 1 to 255 bytes of valid UTF-8 without NUL, and names a
"/" (or "%") only encoded, as ``%2F`` (``%25``), the form a value takes in a directory name.
Empty lines (and a ``\\r`` before a newline) are ignored.  One violation rejects the whole
output for that file: half of what a broken transducer said is not better than nothing.
"""
from __future__ import annotations

import struct

from ...query.names import decode_value
from ...sandbox.wire import MAX_OUTPUT
from ..fields import MAX_VALUE, valid_field

MAX_USER_PAIRS = 1000
_PAIR = struct.Struct(">II")


class OutputRejected(ValueError):
    pass


def parse_lines(output: bytes) -> list[tuple[bytes, bytes]]:
    """A command's standard output -> checked (field, value) pairs."""
    if len(output) > MAX_OUTPUT:
        raise OutputRejected(f"more than {MAX_OUTPUT} bytes of output")
    pairs = []
    for number, line in enumerate(output.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        field, eq, value = line.partition(b"=")
        if not eq:
            raise OutputRejected(f"line {number}: not field=value: {_show(line)}")
        pairs.append((field, value))
    return check_pairs(pairs)


def parse_packed(data: bytes) -> list[tuple[bytes, bytes]]:
    """An entry-point transducer's pairs, as a worker packs them -> checked pairs."""
    if len(data) > MAX_OUTPUT:
        raise OutputRejected(f"more than {MAX_OUTPUT} bytes of output")
    pairs, at = [], 0
    view = memoryview(data)
    while at < len(data):
        if at + _PAIR.size > len(data):
            raise OutputRejected("truncated output")
        flen, vlen = _PAIR.unpack_from(data, at)
        at += _PAIR.size
        if at + flen + vlen > len(data):
            raise OutputRejected("truncated output")
        pairs.append((bytes(view[at:at + flen]), bytes(view[at + flen:at + flen + vlen])))
        at += flen + vlen
    return check_pairs(pairs)


def check_pairs(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The pairs with their values decoded (``%2F`` -> ``/``), or OutputRejected."""
    if len(pairs) > MAX_USER_PAIRS:
        raise OutputRejected(f"more than {MAX_USER_PAIRS} field=value pairs")
    out = []
    for field, raw in pairs:
        if not valid_field(field):
            raise OutputRejected(f"bad field name {_show(field)}")
        if not raw:
            raise OutputRejected(f"empty value for {field.decode()}")
        if len(raw) > MAX_VALUE:
            raise OutputRejected(f"value of {field.decode()} longer than {MAX_VALUE} bytes")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise OutputRejected(f"value of {field.decode()} is not UTF-8: {_show(raw)}") from None
        if b"\0" in raw or b"/" in raw:
            raise OutputRejected(f"value of {field.decode()} holds a NUL or an unencoded '/': {_show(raw)}")
        value = decode_value(raw)
        if value is None or b"\0" in value:
            raise OutputRejected(f"value of {field.decode()} has a bad %-escape: {_show(raw)}")
        out.append((field, value))
    return out


def _show(data: bytes, limit: int = 60) -> str:
    text = repr(data[:limit])[2:-1]
    return text + ("..." if len(data) > limit else "")
