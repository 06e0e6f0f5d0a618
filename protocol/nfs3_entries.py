"""READDIRPLUS entries of many objects alike, encoded one struct pack each.

A large listing of similar objects (a query directory's result links: one mode, owner and
times, a size and fileid of their own, handles that differ only by an 8-byte number) spends
most of its time building an ``entryplus3``, a ``fattr3`` and an ``nfs_fh3`` per entry and
walking them in the generic encoder (3.3 us of Python per entry).  ``EntryplusRun`` takes the
bytes the generic encoder (``entryplus3_list.encode_item``) makes for one sample entry, keeps
the parts every entry shares, and packs each entry's own fields between them with a single
precompiled ``struct`` per name length.  Its items are exactly ``encode_item``'s (the test
compares them), to be handed back through ``entryplus3_list.encoded``.
"""
from __future__ import annotations

import struct
from typing import Any

from .nfs3 import entryplus3, entryplus3_list, nfs_fh3

# An entryplus3 list item with an empty name: TRUE, fileid, name length, cookie, then the
# post_op_attr (TRUE, fattr3: type .. gid, size, used .. fsid, fileid, times), then the
# post_op_fh3 (TRUE, length, data, padding).
_ATTRS_AT = 4 + 8 + 4 + 8
_SIZE_AT = _ATTRS_AT + 4 + 20
_FILEID_AT = _SIZE_AT + 8 + 24
_FH_AT = _FILEID_AT + 8 + 24 + 8


class EntryplusRun:
    """Items of objects sharing ``attrs`` (a ``fattr3``) but for their size and fileid,
    whose handles are ``fh_head`` + an 8-byte big-endian number + ``fh_tail``."""

    __slots__ = ("_before_size", "_before_fileid", "_before_number", "_after", "_structs")

    def __init__(self, attrs: Any, fh_head: bytes, fh_tail: bytes) -> None:
        sample = entryplus3_list.encode_item(entryplus3.cls(
            0, b"", 0, attrs._replace(size=0, fileid=0), nfs_fh3.cls(fh_head + bytes(8) + fh_tail)))
        number_at = _FH_AT + len(fh_head)
        self._before_size = sample[_ATTRS_AT:_SIZE_AT]
        self._before_fileid = sample[_SIZE_AT + 8:_FILEID_AT]
        self._before_number = sample[_FILEID_AT + 8:number_at]
        self._after = sample[number_at + 8:]
        self._structs: dict[int, struct.Struct] = {}

    def _struct(self, n: int) -> struct.Struct:
        s = self._structs[n] = struct.Struct(
            f">IQI{(n + 3) & ~3}sQ{len(self._before_size)}sQ{len(self._before_fileid)}sQ"
            f"{len(self._before_number)}sQ{len(self._after)}s")
        return s

    def item(self, fileid: int, name: bytes, cookie: int, size: int, number: int) -> bytes:
        """One list item (its leading TRUE included), as ``encode_item`` would make it."""
        n = len(name)
        s = self._structs.get(n) or self._struct(n)
        return s.pack(1, fileid, n, name, cookie, self._before_size, size, self._before_fileid, fileid,
                      self._before_number, number, self._after)
