"""Large value directories listed page by page: results kept compact in cookie order
(nfsd/query/result_set.py), every entry exactly once across pages, also while results change,
and clash names decided among the results themselves."""
from __future__ import annotations

from pathlib import Path

from nfsd.nfs3.dirlist import name_cookie
from nfsd.index.search import FileRef
from nfsd.query.result_set import ResultSet
from nfsd.fs.semantic import result_names
from protocol import nfs3
from tests.nfs3_helpers import OK, READLINK, ZERO_VERF, attrs, create_ok, look, readdirplus_raw, remove
from tests.rpc_client import RpcClient, fh



def readlink(rpc: RpcClient, h: bytes) -> bytes:
    status, res = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(h)))
    assert status == OK, status
    return res.data


def page(rpc: RpcClient, d: bytes, cookie: int, verf: bytes, maxcount: int = 1024) -> tuple[list, bytes, bool]:
    (status, res), size = readdirplus_raw(rpc, d, cookie, verf, maxcount, maxcount)
    assert status == OK, status
    assert size <= maxcount, (size, maxcount)  # the reply fits, handles of every length reckoned with
    return res.reply.entries, res.cookieverf, res.reply.eof


def test_result_set_names_clashes_like_the_fault_rule() -> None:
    refs = [FileRef(i, b"d%d/f%d.c" % (i % 7, i)) for i in range(200)]
    refs += [FileRef(1000, b"a/dup.c"), FileRef(1001, b"b/dup.c"), FileRef(1002, b"ext:")]
    rs = ResultSet.of_refs(refs)
    assert dict(rs.items()) == result_names(refs)
    assert list(rs.cookies) == sorted(rs.cookies)  # cookie order: a listing as it is
    assert [name_cookie(n) for n in rs] == list(rs.cookies)
    assert b"dup.c" not in rs and len([n for n in rs if n.startswith(b"dup~")]) == 2
    assert rs.get(b"f5.c") == FileRef(5, b"d5/f5.c") and rs.get(b"nothing.c") is None
    # one file tagged or untagged: the same as naming the changed set afresh
    added = rs.replaced(b"new.c", FileRef(2000, b"x/new.c")).replaced(b"f7.c", None)
    again = ResultSet.of_names([*((k, r) for k, r in rs.items() if k != b"f7.c"), (b"new.c", FileRef(2000, b"x/new.c"))])
    assert list(added.items()) == list(again.items()) and added.digest == again.digest != rs.digest
    assert list(added.cookies) == sorted(added.cookies)


def test_value_directory_pages_each_entry_exactly_once(server) -> None:
    many = server.export / "many"
    many.mkdir()
    for i in range(400):
        (many / f"m{i:03d}.c").write_text("int v;\n")
    for sub in ("a", "b"):
        (many / sub).mkdir()
        (many / sub / "dup.c").write_text("int d;\n")
    server.restart()
    with RpcClient(server.port) as rpc:
        root = rpc.mount(server.export_b)
        c = look(rpc, look(rpc, look(rpc, root, b"many"), b"ext:"), b"c")
        cookie, verf, seen, pages = 0, ZERO_VERF, [], 0
        while True:
            entries, verf, eof = page(rpc, c, cookie, verf)
            pages += 1
            for e in entries:
                assert e.name_attributes is not None and e.name_handle is not None
            seen += [e for e in entries if e.name not in (b".", b"..")]
            if eof:
                break
            cookie = entries[-1].cookie
        names = [e.name for e in seen]
        assert pages > 10 and len(names) == len(set(names)) == 402
        assert {n for n in names if n.startswith(b"dup~")} and b"dup.c" not in names
        assert [e.cookie for e in seen] == sorted(e.cookie for e in seen)
        for e in seen[::37]:  # the attributes made by position are those of the link itself
            h = look(rpc, c, e.name)
            assert h == e.name_handle.data
            target = readlink(rpc, h)
            assert target.startswith(b"../../") and target.endswith(e.name if b"~" not in e.name else b"dup.c")
            assert e.name_attributes == attrs(rpc, h) and e.name_attributes.size == len(target)


def test_entries_present_throughout_appear_once_while_results_change(server) -> None:
    many = server.export / "many"
    many.mkdir()
    for i in range(300):
        (many / f"m{i:03d}.c").write_text("")
    server.restart()
    with RpcClient(server.port) as rpc:
        root = rpc.mount(server.export_b)
        real = look(rpc, root, b"many")
        c = look(rpc, look(rpc, real, b"ext:"), b"c")
        cookie, seen, changes = 0, [], 0
        removed: set[bytes] = set()
        while True:
            # the verifier moves with the results; a client that resumes with the zero one
            # keeps its cookies, which mean the same place in the changed results
            entries, _, eof = page(rpc, c, cookie, ZERO_VERF)
            seen += [e.name for e in entries if e.name not in (b".", b"..")]
            if eof:
                break
            cookie = entries[-1].cookie
            # remove a result not listed yet and add one, between pages
            later = sorted((name_cookie(b"m%03d.c" % i), b"m%03d.c" % i) for i in range(300))
            gone = next((n for ck, n in later if ck > cookie and n not in removed), None)
            if gone is not None and changes < 5:
                assert remove(rpc, real, gone)[0] == OK
                removed.add(gone)
                create_ok(rpc, real, b"new%d.c" % changes)
                changes += 1
        assert changes == 5
        assert len(seen) == len(set(seen))
        throughout = {b"m%03d.c" % i for i in range(300)} - removed
        assert throughout <= set(seen) and not removed & set(seen)


def test_result_set_is_compact(tmp_path: Path) -> None:
    """Tens of bytes per result beside its path, not the ~700 a dict of FileRefs with
    remembered attributes took: a million results fit in well under 100 MB."""
    refs = [FileRef(i, b"dir%04d/file%07d.txt" % (i // 1000, i)) for i in range(20_000)]
    rs = ResultSet.of_refs(refs)
    per_result = (rs.nbytes - sum(len(r.path) for r in refs)) / len(refs)
    assert per_result < 40


def test_listing_cache_is_bounded_in_bytes() -> None:
    """Cached listings are bounded by their estimated size together (a real directory's
    entries take ~130 bytes each, long names more), the newest always kept (it is being
    paged); a query directory's listing counts as its result set."""
    from nfsd.nfs3.dirlist import ListingCache
    cache = ListingCache(max_bytes=3000)
    for d in (b"a", b"b", b"c"):
        cache.get(d, 0, 0, lambda: [(b"%s%d" % (d, i), i) for i in range(6)], exact=1)
    assert cache.peek(b"c") is not None and cache.peek(b"b") is not None and cache.peek(b"a") is None
    assert cache.nbytes <= 3000
    long_names = cache.get(b"long", 0, 0, lambda: [(b"n" * 200 + b"%d" % i, i) for i in range(6)], exact=1)
    assert cache.peek(b"long") is long_names and cache.peek(b"b") is None and cache.peek(b"c") is None
    big = cache.get(b"big", 0, 0, lambda: [(b"n%d" % i, i) for i in range(50)], exact=1)
    assert cache.peek(b"big") is big and cache.peek(b"long") is None and cache.nbytes == big.nbytes > 3000
    results = ResultSet.of_refs([FileRef(i, b"d/f%d.c" % i) for i in range(40)])
    listed = cache.get(b"q", 0, 0, lambda: results.listing(int), exact=2)
    assert listed.nbytes == results.nbytes and cache.peek(b"q") is listed and cache.peek(b"big") is None
