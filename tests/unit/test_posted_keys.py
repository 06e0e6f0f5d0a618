"""``posted_keys``: what a removal deletes from the postings is every key the attrs record
holds, and its placed ones, as the record's own decoding reads them."""
from __future__ import annotations

import pytest

from nfsd.index.tables import _NO_EXT_KEY, decode_attrs, encode_attrs, is_placed, posted_keys

CASES = [
    (frozenset(), frozenset()),
    (frozenset({b"name\0a", b"size\0empty", _NO_EXT_KEY, b"owner\0root", b"group\0root",
                b"mtime\x002026", b"#size\0a0"}), frozenset({b"type\0application/x-empty"})),
    (frozenset({b"name\0a.txt", b"ext\0txt", b"owner\x001000"}),
     frozenset({b"text\0hello", b"text\0", b"title\0a b"})),  # an empty value too
    (frozenset(), frozenset({b"text\0word"})),                 # a content tier alone
    (frozenset({b"#none\0extra", b"name\0#none"}), frozenset()),  # not the no-ext key
]


@pytest.mark.parametrize("stat_keys,content_keys", CASES)
def test_every_key_and_the_placed_ones(stat_keys: frozenset[bytes], content_keys: frozenset[bytes]) -> None:
    raw = encode_attrs(stat_keys, content_keys)
    keys, placed = posted_keys(raw)
    s, c = decode_attrs(raw)
    assert sorted(keys) == sorted(s | c) and len(keys) == len(s) + len(c)
    assert sorted(placed) == sorted(k for k in s | c if is_placed(k))


def test_nothing_recorded() -> None:
    assert posted_keys(None) == ([], []) and posted_keys(b"") == ([], [])
