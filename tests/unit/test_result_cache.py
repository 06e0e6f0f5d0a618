"""Query results cached by their size in bytes, not by their number: a few huge result sets
must not pin a gigabyte (1.06 GB RSS after listing three 200,000-result directories, when
the cache held 1024 result sets whatever their size)."""
from __future__ import annotations

from pathlib import Path

from nfsd.index import Index
from nfsd.fs.localfs import LocalFS
from nfsd.query.names import Query
from nfsd.fs.semantic import SemanticFS, VNode
from nfsd.state.store import Store


def semantic_fs(store: Store, export: Path) -> SemanticFS:
    """The query directories over ``export`` with its state in ``store``, not yet indexed."""
    eid = store.export_id(str(export))
    return SemanticFS(LocalFS(str(export), eid, store), Index(store.env, str(export), eid))


def test_results_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for ext in ("a", "b", "c"):
        for i in range(300):
            (export / f"f{i}.{ext}").write_bytes(b"")
    store = Store(str(tmp_path / "state.lmdb"))
    fs = semantic_fs(store, export)
    try:
        fs.index.scan()
        fs.ready.set()
        first = fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"a"),)))
        one = fs._fault(first).names.nbytes
        fs.forget_results()
        fs.result_cache_bytes = int(1.5 * one)  # room for one of these result sets, not two
        for value in (b"a", b"b", b"c"):
            v = fs._placeholder(Query(fs.local.root_ino, ((b"ext", value),)))
            assert len(fs._fault(v).names) == 300
            assert fs._cache_bytes <= fs.result_cache_bytes and len(fs._cache) == 1
        # the one kept is the latest, and is reused as it is
        v = fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"c"),)))
        assert fs._fault(v) is fs._cache[v.query.qid()]
        # a result set larger than the whole budget is still kept alone (it is being paged)
        fs.result_cache_bytes = 1000
        v = fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"a"),)))
        fs._fault(v)
        assert list(fs._cache) == [v.query.qid()]
    finally:
        fs.index.close()
        fs.close()
        store.close()


def test_stat_field_results_outlive_content_commits(tmp_path: Path) -> None:
    """While the content tier is extracted after a first stat pass, every batch commits and
    moves the index version; results of queries over stat fields alone stay valid (they ran
    again on every listing: 166-410 ms each at 200k files), content ones do not, and a
    change of a stat field still shows."""
    export = tmp_path / "export"
    export.mkdir()
    for i in range(50):
        (export / f"f{i}.c").write_text(f"int v{i};\n")
    store = Store(str(tmp_path / "state.lmdb"))
    fs = semantic_fs(store, export)
    try:
        fs.index.scan(stat_only=True)
        fs.stat_ready.set()
        by_ext = fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"c"),)))
        first = fs._fault(by_ext)
        before = fs.index.version
        fs.index.scan()  # the content tier: commits that change content fields only
        fs.ready.set()
        assert fs.index.version != before
        assert fs._fault(by_ext) is first and fs.stat(by_ext).st_size == 50
        content = fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"c"), (b"text", b"v7"))))
        assert len(fs._fault(content).names) == 1
        fs.local.create_file(fs.root, b"new.c", 0o644, False)
        fs.index.note_entry(fs.local.root_ino, b"new.c")
        assert len(fs._fault(by_ext).names) == 51  # a stat change moves the stat version
    finally:
        fs.index.close()
        fs.close()
        store.close()


def test_looking_up_a_value_does_not_list_the_whole_field(tmp_path: Path) -> None:
    """``name:/report*`` or ``name:/f1.a`` at a million files must not count a million
    names (what listing ``name:`` does): a LOOKUP in a field directory not yet listed is
    answered by the value directory's own query (measured at 200k files: +140 MB of heap
    for a LOOKUP through ``name:``)."""
    import pytest
    from nfsd.nfs3.errors import NfsError
    export = tmp_path / "export"
    export.mkdir()
    for i in range(50):
        (export / f"f{i}.a").write_bytes(b"")
    store = Store(str(tmp_path / "state.lmdb"))
    fs = semantic_fs(store, export)
    try:
        fs.index.scan()
        fs.ready.set()
        name_dir = _virtual(fs.lookup(fs.root, b"name:"))
        glob = fs.lookup(name_dir, b"f1*")
        one = _virtual(fs.lookup(name_dir, b"f7.a"))
        assert name_dir.query.qid() not in fs._cache  # the field directory never ran
        assert one.query.qid() not in fs._cache  # nor the value's: one posting look-up
        under = _virtual(fs.lookup(fs.lookup(fs.lookup(fs.root, b"ext:"), b"a"), b"name:"))  # a term: its query runs
        assert _virtual(fs.lookup(under, b"f7.a")).query.terms == ((b"ext", b"a"), (b"name", b"f7.a"))
        with pytest.raises(NfsError):
            fs.lookup(under, b"f99.a")
        assert under.query.qid() not in fs._cache
        assert sorted(n for n, _ in fs.scandir(glob)) == [b"f1.a"] + [b"f1%d.a" % i for i in range(10)]
        assert [n for n, _ in fs.scandir(one)] == [b"f7.a"]
        with pytest.raises(NfsError):
            fs.lookup(name_dir, b"f99.a")
        # once listed, the field directory answers lookups from its values, as before
        assert len(list(fs.scandir(name_dir))) == 50
        assert _virtual(fs.lookup(name_dir, b"f7.a")).query == one.query
    finally:
        fs.index.close()
        fs.close()
        store.close()


def test_after_a_restart_attributes_come_without_running_the_query(tmp_path: Path) -> None:
    """A query directory that ran before a restart gives its attributes (entries, mtime)
    from what was recorded when the index is at the same version: listing ``ext:`` after a
    restart at 1M files ran ``ext:/txt`` (989k results) again for its size (4.5 s).  Once
    the index changed, the query runs again."""
    export = tmp_path / "export"
    export.mkdir()
    for i in range(30):
        (export / f"f{i}.a").write_bytes(b"")
    store = Store(str(tmp_path / "state.lmdb"))

    def start() -> SemanticFS:
        fs = semantic_fs(store, export)
        fs.index.scan()
        fs.ready.set()
        return fs

    fs = start()
    a = _virtual(fs.lookup(fs.lookup(fs.root, b"ext:"), b"a"))
    assert len(list(fs.scandir(a))) == 30
    before = fs.stat(a)
    assert before.st_size == 30
    fs.index.close()
    fs = start()  # a restart: nothing cached, nothing changed
    a = _virtual(fs.lookup(fs.lookup(fs.root, b"ext:"), b"a"))
    assert fs.stat(a) == before
    assert a.query.qid() not in fs._cache  # answered from the record
    (export / "new.a").write_bytes(b"")
    fs.index.close()
    fs = start()  # a restart after a change: the query runs again
    a = _virtual(fs.lookup(fs.lookup(fs.root, b"ext:"), b"a"))
    after = fs.stat(a)
    assert after.st_size == 31 and after.st_mtime_ns > before.st_mtime_ns
    assert a.query.qid() in fs._cache
    fs.index.close()
    fs.close()
    store.close()


def _virtual(node: object) -> VNode:
    """``node``, which must be a query directory (what the lookups above return)."""
    assert isinstance(node, VNode), node
    return node


def test_callers_views_are_bounded_in_bytes(tmp_path: Path) -> None:
    """Each caller's view of a value directory may be a result set of its own (a million
    results: tens of MB); views are kept by their own entries' size, the newest always, and
    a view that is the shared results themselves costs nothing."""
    from nfsd.fs.semantic import Results
    from nfsd.index.search import FileRef
    from nfsd.query.result_set import ResultSet
    export = tmp_path / "export"
    export.mkdir()
    store = Store(str(tmp_path / "state.lmdb"))
    fs = semantic_fs(store, export)
    try:
        shared = ResultSet.of_refs([FileRef(i, b"d/f%d.c" % i) for i in range(1000)])
        results = Results(1, shared, shared.digest, 0, b"", {})
        views = [ResultSet.of_refs([FileRef(i, b"d/f%d.c" % i) for i in range(k, 1000, 2)]) for k in range(4)]
        fs.view_cache_bytes = int(2.5 * views[0].nbytes)  # room for two views of their own
        for who, view in enumerate(views):
            fs._keep_view((b"q", who), results, 0.0, view)
            assert fs._views_bytes <= fs.view_cache_bytes
        assert list(fs._views) == [(b"q", 2), (b"q", 3)]
        for who in range(10, 20):  # callers who see everything share the results: kept for free
            fs._keep_view((b"q", who), results, 0.0, shared)
        assert len(fs._views) == 12 and fs._views_bytes == views[2].nbytes + views[3].nbytes
        fs.view_cache_bytes = 10  # a view larger than the budget stays alone, being paged
        fs._keep_view((b"q", 99), results, 0.0, views[0])
        assert list(fs._views) == [(b"q", 99)] and fs._views_bytes == views[0].nbytes
    finally:
        fs.index.close()
        fs.close()
        store.close()
