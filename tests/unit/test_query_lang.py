"""The query language inside one value component: canonical forms, escapes, errors."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from nfsd.query.names import Query
from nfsd.query.language import QueryError, component_of, escape, expr_of, parse, parse_term, size_key


@given(st.binary(min_size=1, max_size=255).filter(lambda v: b"\0" not in v))
def test_every_value_is_reachable_through_its_escaped_form(value: bytes) -> None:
    assert parse_term(b"name", escape(value)) == value
    assert component_of(value) == escape(value)


@pytest.mark.parametrize("field, written, canonical", [
    (b"ext", b"h|c|h", b"c|h"),
    (b"ext", b"!H|C", b"!c|h"),
    (b"size", b">1M", b"1048577.."),
    (b"size", b"<=4K", b"..4096"),
    (b"size", b"1K..64K", b"1024..65536"),
    (b"size", b"1.5k..", b"1536.."),
    (b"mtime", b"2024-01..2024-06", b"2024-01-01..2024-06-30"),
    (b"mtime", b">=2025-03-01", b"2025-03-01.."),
    (b"mtime", b">2024-02", b"2024-03-01.."),
    (b"mtime", b"<2024-03", b"..2024-02-29"),
    (b"taken", b"2023", b"2023"),  # a plain value, not a range
    (b"year", b"1980..1989", b"1980..1989"),
    (b"pages", b">100", b"101.."),
    (b"name", b"Report*", b"Report*"),
    (b"ext", b"T[X]?", b"t[x]?"),
    (b"subject", b"*in%7Cvoice*", b"*in%7Cvoice*"),
])
def test_canonical_forms(field: bytes, written: bytes, canonical: bytes) -> None:
    value = parse_term(field, written)
    assert component_of(value) == canonical
    assert parse_term(field, canonical) == value  # the canonical form reads back as itself
    assert expr_of(field, value).canonical() == canonical


def test_equal_queries_have_one_key() -> None:
    one = Query(1, tuple(sorted([(b"ext", parse_term(b"ext", b"c|h")), (b"size", parse_term(b"size", b">1K"))])))
    two = Query(1, tuple(sorted([(b"size", parse_term(b"size", b">=1025")), (b"ext", parse_term(b"ext", b"H|C"))])))
    assert one.key() == two.key() and Query.from_key(one.key()) == one
    assert parse_term(b"ext", b"C") == b"c"  # a lone plain value stays the plain term


def test_size_keys_sort_as_numbers() -> None:
    sizes = [0, 1, 9, 10, 99, 100, 1023, 1024, 65536, 1 << 40, 10**19]
    assert sorted(sizes, key=size_key) == sizes
    assert all(b"\0" not in size_key(n).partition(b"\0")[2] for n in sizes)


@pytest.mark.parametrize("field, bad", [
    (b"ext", b""), (b"ext", b"!"), (b"ext", b"c||h"), (b"size", b">"), (b"size", b">1Q"),
    (b"mtime", b"2024-02-30.."), (b"mtime", b">soon"), (b"name", b"x" * 256), (b"name", b"%00"),
    (b"name", b"%G0"), (b"name", b"[]"), (b"width", b"..wide"), (b"name", b".."),
])
def test_malformed(field: bytes, bad: bytes) -> None:
    with pytest.raises(QueryError):
        parse(field, bad)
