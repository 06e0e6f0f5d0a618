"""ONC RPC record marking over stream transports (RFC 5531 section 11), sans-I/O.

``RecordReader`` is fed whatever bytes arrived and yields complete records; it never holds
more than ``max_record`` bytes of one record, so a peer cannot make it allocate without bound.
"""
from __future__ import annotations

import struct

LAST_FRAGMENT = 0x80000000
_MARK = struct.Struct(">I")


class RecordTooLarge(ValueError):
    """A record (sum of its fragments) would exceed the configured bound."""


class RecordReader:
    __slots__ = ("max_record", "_buf", "_fragments", "_size")

    def __init__(self, max_record: int) -> None:
        self.max_record = max_record
        self._buf = bytearray()        # bytes not yet consumed
        self._fragments: list[bytes] = []  # completed non-final fragments of the current record
        self._size = 0                 # bytes in _fragments

    @property
    def buffered(self) -> int:
        """Bytes held for incomplete records (for memory accounting)."""
        return len(self._buf) + self._size

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the records they completed, in order."""
        buf = self._buf
        buf += data
        records: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            mark, = _MARK.unpack_from(buf, pos)
            length = mark & 0x7FFFFFFF
            if self._size + length > self.max_record:
                raise RecordTooLarge(f"record of at least {self._size + length} bytes exceeds {self.max_record}")
            if n - pos - 4 < length:
                break
            with memoryview(buf) as view:  # one copy out of the buffer, not two
                frag = bytes(view[pos + 4:pos + 4 + length])
            pos += 4 + length
            if mark & LAST_FRAGMENT:
                if self._fragments:
                    self._fragments.append(frag)
                    frag = b"".join(self._fragments)
                    self._fragments.clear()
                    self._size = 0
                records.append(frag)
            elif length:  # empty non-final fragments carry nothing: never store them
                self._fragments.append(frag)
                self._size += length
        if pos:
            del buf[:pos]
        return records


def frame(payload: bytes | bytearray, max_fragment: int = 0x7FFFFFFF) -> bytes:
    """Frame a record, split into fragments of at most ``max_fragment`` bytes."""
    if len(payload) <= max_fragment:
        return _MARK.pack(LAST_FRAGMENT | len(payload)) + bytes(payload)
    out = bytearray()
    view = memoryview(payload)
    for start in range(0, len(payload), max_fragment):
        chunk = view[start:start + max_fragment]
        last = start + max_fragment >= len(payload)
        out += _MARK.pack((LAST_FRAGMENT if last else 0) | len(chunk))
        out += chunk
    return bytes(out)


def set_mark(buf: bytearray) -> bytearray:
    """Fill in the 4 reserved leading bytes of ``buf`` as a single last-fragment mark."""
    _MARK.pack_into(buf, 0, LAST_FRAGMENT | (len(buf) - 4))
    return buf
