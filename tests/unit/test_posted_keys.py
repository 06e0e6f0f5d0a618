"""``posted_keys``: what a removal deletes from the postings is every key the attrs record
holds, as the record's own decoding reads them; ``Writer.placed_among``: which of them are
placed, as ``is_placed`` says, whatever its memo saw before."""
from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from nfsd.index import tables as tables_mod
from nfsd.index.tables import _NO_EXT_KEY, Tables, Writer, decode_attrs, encode_attrs, is_placed, posted_keys

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
    keys = posted_keys(raw)
    s, c = decode_attrs(raw)
    assert sorted(keys) == sorted(s | c) and len(keys) == len(s) + len(c)


def test_nothing_recorded() -> None:
    assert posted_keys(None) == [] and posted_keys(b"") == []


def test_placed_among_follows_is_placed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case twice (the second time from the memo), then again after the memo was
    cleared for being full: the same answer as ``is_placed`` key by key."""
    monkeypatch.setattr(tables_mod, "MAX_SEEN_KEYS", 8)
    env = lmdb.open(str(tmp_path), max_dbs=16, map_size=1 << 24)
    try:
        w = Writer(Tables(env, 1))
        for stat_keys, content_keys in CASES * 3:
            keys = stat_keys | content_keys
            assert w.placed_among(set(keys)) == {k for k in keys if is_placed(k)}
    finally:
        env.close()
