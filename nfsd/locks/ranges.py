"""POSIX byte-range lock algebra for one owner on one file, as pure functions.

An owner's locks on a file are a sorted list of disjoint ``Span(start, end, exclusive)``
(``end`` exclusive).  Setting a lock replaces whatever the owner held in that range (POSIX:
a shared lock inside an exclusive one splits it; a lock never conflicts with its own
owner) and merges with adjacent spans of the same kind; unlocking cuts the range out.
Offsets are NLM4's unsigned 64-bit numbers, but files have signed 64-bit offsets: as in
NFS-Ganesha, a range starting past 2**63-1 is NLM4_FBIG (``TooBig``), and one whose end
passes 2**63-1 (even past 2**64) reaches "to the end of the file", as ``l_len == 0`` does
(``END`` here).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

END = 1 << 64
MAX_OFFSET = (1 << 63) - 1


class TooBig(ValueError):
    """A range no file can have (NLM4_FBIG)."""


class Span(NamedTuple):
    start: int
    end: int
    exclusive: bool


def span(offset: int, length: int) -> tuple[int, int]:
    """The [start, end) of an NLM (l_offset, l_len); TooBig past what files can have."""
    if offset > MAX_OFFSET:
        raise TooBig(f"range {offset}+{length}")
    return offset, END if length == 0 or offset + length > MAX_OFFSET else offset + length


def nlm_length(start: int, end: int) -> int:
    """Back to an NLM l_len: 0 for a span reaching END."""
    return 0 if end >= END else end - start


def overlaps(a: Span, start: int, end: int) -> bool:
    return a.start < end and start < a.end


def cut(spans: Iterable[Span], start: int, end: int) -> list[Span]:
    """``spans`` without the bytes of [start, end): the pieces outside it stay."""
    out: list[Span] = []
    for s in spans:
        if not overlaps(s, start, end):
            out.append(s)
            continue
        if s.start < start:
            out.append(Span(s.start, start, s.exclusive))
        if end < s.end:
            out.append(Span(end, s.end, s.exclusive))
    return out


def apply_lock(spans: list[Span], start: int, end: int, exclusive: bool) -> list[Span]:
    """The owner's spans after locking [start, end): the new kind replaces the old there,
    and touching spans of the same kind merge (so unlocking later splits as POSIX says)."""
    out = cut(spans, start, end)
    out.append(Span(start, end, exclusive))
    out.sort()
    merged: list[Span] = []
    for s in out:
        if merged and merged[-1].end >= s.start and merged[-1].exclusive == s.exclusive:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, s.end), last.exclusive)
        else:
            merged.append(s)
    return merged


def conflicts(held: Span, start: int, end: int, exclusive: bool) -> bool:
    """Does another owner's ``held`` span keep a lock of [start, end) from being granted?"""
    return (exclusive or held.exclusive) and overlaps(held, start, end)


def covers(spans: Iterable[Span], start: int, end: int, exclusive: bool) -> bool:
    """Does the owner already hold [start, end) with this kind (a repeated request)?"""
    pos = start
    for s in spans:
        if s.end <= pos:
            continue
        if s.start > pos or s.exclusive != exclusive:
            return False
        pos = s.end
        if pos >= end:
            return True
    return pos >= end
