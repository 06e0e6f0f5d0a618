"""A field directory's values as a compact set in cookie order (nfsd/query/value_set.py):
the same names, values and counts as the dicts it replaces, at a fraction of their size, and
a field directory of the whole field is listed from it without a copy."""
from __future__ import annotations

from pathlib import Path

from nfsd.nfs3.dirlist import Listing, ListingCache, name_cookie
from nfsd.query.names import Query, value_name
from nfsd.query.value_set import ValueCounts, ValueSet
from nfsd.state.store import Store
from tests.unit.test_result_cache import semantic_fs

VALUES = [b"c", b"h", b"txt", b"a/b", b"%odd", b"x" * 300, b".", b"caf\xc3\xa9", b"with space"]


def test_same_mapping_as_the_dict() -> None:
    pairs = [(v, i + 1) for i, v in enumerate(VALUES)]
    vs = ValueSet(iter(pairs))
    expected = {value_name(v): v for v, _ in pairs}
    assert dict(vs.items()) == expected and len(vs) == len(expected)
    assert list(vs.cookies) == sorted(vs.cookies) == [name_cookie(n) for n in vs]
    for name, value in expected.items():
        assert vs.get(name) == value and name in vs
    assert vs.get(b"nothing") is None and b"nothing" not in vs and 3 not in vs
    counts = ValueCounts(vs)
    assert all(counts.get(v) == n for v, n in pairs) and counts.get(b"nothing") is None
    assert ValueSet(reversed(pairs)).digest == vs.digest != ValueSet(pairs[1:]).digest


def test_compact() -> None:
    """~24 bytes a value beside its name, not the ~200 a dict entry (and a count's) took."""
    vs = ValueSet((b"f%07d.txt" % i, 1) for i in range(20_000))
    assert (vs.nbytes - sum(len(n) for n in vs)) / len(vs) < 30


def test_whole_field_directory_is_listed_from_the_set(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for i in range(50):
        (export / f"f{i:03d}.{'c' if i % 5 else 'h'}").write_bytes(b"")
    store = Store(str(tmp_path / "state.lmdb"))
    fs = semantic_fs(store, export)
    try:
        fs.index.scan()
        fs.ready.set()
        d = fs._placeholder(Query(fs.local.root_ino, (), b"name"))
        listing = fs.scandir(d)
        assert isinstance(listing, Listing) and len(listing.names) == 50
        cache = ListingCache()
        assert cache.get(b"d", 0, 0, lambda: listing, exact=1) is listing  # kept as it is, no copy
        entries = dict(listing)
        assert set(entries) == {b"f%03d.%s" % (i, b"c" if i % 5 else b"h") for i in range(50)}
        name = b"f007.c"
        assert entries[name] == fs._entry_fileid(d.query, name)  # the fileid a LOOKUP's node has
        assert fs.lookup(d, name).ino == entries[name]
        ext = fs._placeholder(Query(fs.local.root_ino, (), b"ext"))
        assert dict(fs._fault(ext).names.items()) == {b"c": b"c", b"h": b"h"}
        assert fs._fault(ext).counts.get(b"c") == 40
    finally:
        fs.index.close()
        fs.close()
        store.close()
