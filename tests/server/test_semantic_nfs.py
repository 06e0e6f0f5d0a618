"""The semantic layer through NFSv3: lab views, Gifford's field and value directories,
placeholders and faults, result symlinks, clashes, read-only results, and freshness."""
from __future__ import annotations

import os
import pwd
import time

import pytest

from nfsd.query.names import QuerySyntaxError, parse_query_path
from protocol import nfs3
from tests.nfs3_helpers import (OK, READLINK, S, attrs, create, create_ok, getattr_, list_dir, look, lookup,
                                names, read, remove, rename, write)
from tests.rpc_client import RpcClient, fh
from tests.waiting import eventually




def readlink(rpc: RpcClient, h: bytes) -> bytes:
    status, res = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(h)))
    assert status == OK, status
    return res.data


@pytest.fixture
def tree(server):
    """src/{a.c,b.c,util.h,README}, lib/{a.c,x.py}, notes.txt; scanned at start."""
    e = server.export
    (e / "src").mkdir()
    (e / "lib").mkdir()
    (e / "src" / "a.c").write_text("int main(void) { return helper(); }\n")
    (e / "src" / "b.c").write_text("static int helper(void) { return 0; }\n")
    (e / "src" / "util.h").write_text("#include <stdio.h>\n")
    (e / "src" / "README").write_text("the source\n")
    (e / "lib" / "a.c").write_text("int lib_a;\n")
    (e / "lib" / "x.py").write_text("print('x')\n")
    (e / "notes.txt").write_text("semantic file systems are fun\n")
    server.restart()  # start with the tree in place: the start-up scan indexes it
    return server


@pytest.fixture
def root(tree, rpc_fresh):
    return rpc_fresh.mount(tree.export_b)


@pytest.fixture
def rpc_fresh(tree):
    with RpcClient(tree.port) as client:
        yield client


# --- the lab form ---------------------------------------------------------------------------

def test_lab_view_lists_only_matching_files(tree, rpc_fresh, root):
    rpc = rpc_fresh
    src = look(rpc, root, b"src")
    view = look(rpc, src, b":extension=.c")
    assert names(rpc, view) == {b"a.c", b"b.c"}
    assert look(rpc, view, b"a.c") == look(rpc, src, b"a.c")  # the real file itself
    assert lookup(rpc, view, b"util.h")[0] == S.NFS3ERR_NOENT
    assert b":extension=.c" not in names(rpc, src)  # never listed in the real directory


def test_lab_view_at_export_root(tree, rpc_fresh, root):
    view = look(rpc_fresh, root, b":extension=.txt")
    assert names(rpc_fresh, view) == {b"notes.txt"}


def test_lab_view_write_create_remove_rename_act_on_the_real_directory(tree, rpc_fresh, root):
    rpc = rpc_fresh
    src_path = tree.export / "src"
    view = look(rpc, look(rpc, root, b"src"), b":extension=.c")
    a = look(rpc, view, b"a.c")
    assert write(rpc, a, 0, b"/* edited */")[0] == OK
    assert (src_path / "a.c").read_bytes().startswith(b"/* edited */")
    status, res = read(rpc, a, 0, 12)
    assert status == OK and res.data == b"/* edited */"
    create_ok(rpc, view, b"new.c")
    assert (src_path / "new.c").exists()
    assert b"new.c" in names(rpc, view)
    assert remove(rpc, view, b"b.c")[0] == OK
    assert not (src_path / "b.c").exists()
    assert rename(rpc, view, b"new.c", view, b"renamed.c")[0] == OK
    assert (src_path / "renamed.c").exists() and not (src_path / "new.c").exists()
    assert names(rpc, view) == {b"a.c", b"renamed.c"}
    # a name that would not show in the view is refused, and nothing is created
    assert create(rpc, view, b"other.h")[0] == S.NFS3ERR_INVAL
    assert not (src_path / "other.h").exists()


# --- Gifford's form -------------------------------------------------------------------------

def test_field_directory_lists_values(tree, rpc_fresh, root):
    ext = look(rpc_fresh, root, b"ext:")
    assert {b"c", b"h", b"py", b"txt"} <= names(rpc_fresh, ext)


def test_value_directory_holds_relative_symlinks(tree, rpc_fresh, root):
    rpc = rpc_fresh
    c = look(rpc, look(rpc, root, b"ext:"), b"c")
    entries = {e.name: e for e in list_dir(rpc, c)}
    links = set(entries) - {b".", b".."}
    assert len(links) == 3  # src/a.c and lib/a.c clash, src/b.c does not
    assert b"b.c" in links
    clashing = sorted(n for n in links if n != b"b.c")
    assert all(n.startswith(b"a~") and n.endswith(b".c") for n in clashing)
    targets = {readlink(rpc, look(rpc, c, n)) for n in links}
    assert targets == {b"../../src/a.c", b"../../src/b.c", b"../../lib/a.c"}
    assert entries[b"b.c"].name_attributes.type == nfs3.ftype3.NF3LNK
    # stable names: the same on a second listing
    assert names(rpc, c) == links


def test_nesting_is_order_free_and_narrows(tree, rpc_fresh, root):
    rpc = rpc_fresh
    owner = pwd.getpwuid(os.getuid()).pw_name.encode()
    one = look(rpc, look(rpc, look(rpc, look(rpc, root, b"ext:"), b"c"), b"owner:"), owner)
    two = look(rpc, look(rpc, look(rpc, look(rpc, root, b"owner:"), owner), b"ext:"), b"c")
    assert one == two
    assert len(names(rpc, one)) == 3
    # a field used twice on one path is refused
    assert lookup(rpc, one, b"ext:")[0] == S.NFS3ERR_NOENT
    # ".." climbs depth levels: 4 from a two-term value directory back to the root
    d = one
    for _ in range(4):
        d = look(rpc, d, b"..")
    assert d == root


def test_scope_is_the_subtree(tree, rpc_fresh, root):
    rpc = rpc_fresh
    src_c = look(rpc, look(rpc, look(rpc, root, b"src"), b"ext:"), b"c")
    assert names(rpc, src_c) == {b"a.c", b"b.c"}
    assert {readlink(rpc, look(rpc, src_c, n)) for n in names(rpc, src_c)} == {b"../../a.c", b"../../b.c"}


def test_value_directories_are_read_only(tree, rpc_fresh, root):
    rpc = rpc_fresh
    c = look(rpc, look(rpc, root, b"ext:"), b"c")
    assert remove(rpc, c, b"b.c")[0] == S.NFS3ERR_ROFS
    assert (tree.export / "src" / "b.c").exists()
    assert create(rpc, c, b"z.c")[0] == S.NFS3ERR_ROFS
    assert rename(rpc, c, b"b.c", c, b"q.c")[0] == S.NFS3ERR_ROFS


def test_illegal_query_names_are_noent(tree, rpc_fresh, root):
    rpc = rpc_fresh
    for bad in (b"nosuchfield:", b"Owner:", b":extension=", b"ext::"):
        assert lookup(rpc, root, bad)[0] == S.NFS3ERR_NOENT, bad
    assert lookup(rpc, look(rpc, root, b"ext:"), b"nonexistentvalue")[0] == S.NFS3ERR_NOENT


def test_values_with_slash_are_escaped(tree, rpc_fresh, root):
    rpc = rpc_fresh
    types = names(rpc, look(rpc, root, b"type:"))
    assert any(b"%2F" in t for t in types), types
    plain = next(t for t in types if t.startswith(b"text%2F"))
    assert names(rpc, look(rpc, look(rpc, root, b"type:"), plain))


# --- placeholders, faults, freshness -----------------------------------------------------------

def test_placeholder_handle_survives_restart(tree, root):
    with RpcClient(tree.port) as rpc:
        c = look(rpc, look(rpc, root, b"ext:"), b"c")
        before = names(rpc, c)
    tree.restart()
    with RpcClient(tree.port) as rpc:
        assert names(rpc, c) == before
        assert attrs(rpc, c).type == nfs3.ftype3.NF3DIR


def test_change_through_the_server_shows_in_the_next_listing(tree, rpc_fresh, root):
    rpc = rpc_fresh
    c = look(rpc, look(rpc, root, b"ext:"), b"c")
    before_attrs = attrs(rpc, c)
    before = names(rpc, c)
    create_ok(rpc, look(rpc, root, b"lib"), b"fresh.c")
    after = names(rpc, c)
    assert after == before | {b"fresh.c"}
    after_attrs = attrs(rpc, c)
    assert (after_attrs.mtime, after_attrs.size) != (before_attrs.mtime, before_attrs.size)


def test_change_behind_the_servers_back_shows(tree, rpc_fresh, root):
    """Noted through inotify, without a restart or a rescan.  (How soon is a speed figure,
    not asserted here: it was "within 2 s", which a loaded machine does not promise.)"""
    rpc = rpc_fresh
    c = look(rpc, look(rpc, root, b"ext:"), b"c")
    names(rpc, c)
    (tree.export / "lib" / "outside.c").write_text("int x;\n")
    (tree.export / "src" / "b.c").unlink()

    def shown() -> object:
        now = names(rpc, c)
        return (b"outside.c" in now and b"b.c" not in now) or now  # the listing, when not
    eventually(shown)


def test_renamed_file_keeps_its_content_fields(tree, rpc_fresh, root):
    rpc = rpc_fresh
    words = look(rpc, look(rpc, root, b"text:"), b"semantic")
    assert names(rpc, words) == {b"notes.txt"}
    assert rename(rpc, root, b"notes.txt", look(rpc, root, b"lib"), b"moved.txt")[0] == OK
    assert names(rpc, words) == {b"moved.txt"}
    assert readlink(rpc, look(rpc, words, b"moved.txt")) == b"../../lib/moved.txt"


def test_results_as_files(tree):
    """With --results files, value directories hold the real files (real handles)."""
    tree.args = ("--results", "files")
    tree.restart()
    with RpcClient(tree.port) as rpc:
        root = rpc.mount(tree.export_b)
        c = look(rpc, look(rpc, root, b"ext:"), b"c")
        entries = names(rpc, c)
        assert b"b.c" in entries and len(entries) == 3
        b = look(rpc, c, b"b.c")
        assert b == look(rpc, look(rpc, root, b"src"), b"b.c")
        assert attrs(rpc, b).type == nfs3.ftype3.NF3REG
        status, res = read(rpc, b, 0, 100)
        assert status == OK and res.data.startswith(b"static int helper")


def test_value_directory_lists_across_many_pages(tree):
    """Resuming from a cookie inside a value directory (the verifier is set by the fault
    that the first page takes, so the second page must not get BAD_COOKIE)."""
    many = tree.export / "many"
    many.mkdir()
    for i in range(300):
        (many / f"m{i:03d}.c").write_text("int v;\n")
    tree.restart()
    with RpcClient(tree.port) as rpc:
        root = rpc.mount(tree.export_b)
        c = look(rpc, look(rpc, look(rpc, root, b"many"), b"ext:"), b"c")
        listed = list_dir(rpc, c, maxcount=2048)
        got = [e.name for e in listed if e.name not in (b".", b"..")]
        assert len(got) == len(set(got)) == 300


def test_attributes_reflect_a_change_before_any_listing(tree, rpc_fresh, root):
    """What the Linux client does (close-to-open): a GETATTR of the query directory, or the
    attributes a LOOKUP returns, decide whether its cached listing is still good; they must
    show a change the server acknowledged, though no listing ran since (issue 11)."""
    rpc = rpc_fresh
    ext = look(rpc, root, b"ext:")
    c = look(rpc, ext, b"c")
    listed = names(rpc, c)
    before = attrs(rpc, c)
    assert before.size == len(listed)
    create_ok(rpc, look(rpc, root, b"lib"), b"fresh.c")
    after = attrs(rpc, c)  # GETATTR first, as the kernel does when it opens the directory
    assert (after.mtime, after.size) != (before.mtime, before.size)
    assert after.size == before.size + 1
    # LOOKUP's post-op attributes of the object and of the directory, too
    assert remove(rpc, look(rpc, root, b"lib"), b"fresh.c")[0] == OK
    status, res = lookup(rpc, ext, b"c")
    assert status == OK
    assert res.obj_attributes.size == before.size and res.obj_attributes.mtime != after.mtime
    create_ok(rpc, look(rpc, root, b"lib"), b"fresh2.c")
    status, res = lookup(rpc, c, b"fresh2.c")
    assert status == OK and res.dir_attributes.size == before.size + 1
    assert names(rpc, c) == names(rpc, c) and b"fresh2.c" in names(rpc, c)


def test_long_values_get_short_stable_names(tree):
    """A value whose escaped form exceeds 255 bytes (a file name full of "%") is listed under
    a shortened name -- escaped prefix, "%~", hash -- that LOOKUP resolves (issue 11: such
    values were missing from NFS listings)."""
    d = tree.export / "long"
    d.mkdir()
    files = [b"%" * 100 + tail for tail in (b"-a.txt", b"-b.txt")]
    for f in files:
        with open(os.path.join(bytes(d), f), "wb") as out:
            out.write(b"long\n")
    tree.restart()
    with RpcClient(tree.port) as rpc:
        root = rpc.mount(tree.export_b)
        field = look(rpc, look(rpc, root, b"long"), b"name:")
        listed = names(rpc, field)
        assert len(listed) == 2, listed
        for n in listed:
            assert len(n) <= 255 and n.startswith(b"%25" * 66 + b"%~"), n
            hit = look(rpc, field, n)
            (target,) = names(rpc, hit)
            assert target in files
            assert readlink(rpc, look(rpc, hit, target)) == b"../../" + target
        assert lookup(rpc, field, b"%25" * 100 + b"-a.txt")[0] != OK  # the escaped form is too long
    tree.restart()
    with RpcClient(tree.port) as rpc:
        root = rpc.mount(tree.export_b)
        assert names(rpc, look(rpc, look(rpc, root, b"long"), b"name:")) == listed  # stable
    with pytest.raises(QuerySyntaxError, match="shortened name"):  # the command line's paths
        parse_query_path(b"long/name:/" + sorted(listed)[0])


def test_attributes_after_a_restart_are_current(tree, root):
    """A query directory listed before a restart: its first GETATTR after it shows what
    changed meanwhile (not the state stored before, nor size 0)."""
    with RpcClient(tree.port) as rpc:
        c = look(rpc, look(rpc, root, b"ext:"), b"c")
        listed = names(rpc, c)
        before = attrs(rpc, c)
    tree.stop()
    (tree.export / "lib" / "while_down.c").write_text("int down;\n")
    tree.start()
    with RpcClient(tree.port) as rpc:
        deadline = time.monotonic() + 30
        while getattr_(rpc, c)[0] == S.NFS3ERR_JUKEBOX and time.monotonic() < deadline:
            time.sleep(0.1)  # the start-up scan
        after = attrs(rpc, c)
        assert after.size == len(listed) + 1 and after.mtime != before.mtime
        assert names(rpc, c) == listed | {b"while_down.c"}


def test_attributes_reflect_a_write_before_any_listing(tree, rpc_fresh, root):
    """The same for what a WRITE changes: a content query's GETATTR applies it first."""
    rpc = rpc_fresh
    hits = look(rpc, look(rpc, root, b"text:"), b"semantic")
    assert names(rpc, hits) == {b"notes.txt"}
    f = create_ok(rpc, look(rpc, root, b"lib"), b"later.txt")
    assert names(rpc, hits) == {b"notes.txt"}  # created empty: no words yet
    before = attrs(rpc, hits)
    assert write(rpc, f, 0, b"semantic words\n")[0] == OK
    after = attrs(rpc, hits)
    assert after.size == before.size + 1 and after.mtime != before.mtime


# --- the query language: OR, NOT, ranges, patterns, case, counts ------------------------------

def _utc(text: str) -> int:
    """Seconds since the epoch of a UTC time (no dependence on the local zone)."""
    import calendar as _calendar
    return _calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M"))


@pytest.fixture
def lang(tree):
    """The tree plus q/ holding files of exact sizes and UTC dates, and odd names."""
    q = tree.export / "q"
    q.mkdir()
    for name, size, when in [("zero.bin", 0, "2023-12-31T23:59"), ("k1.bin", 1024, "2024-01-01T00:00"),
                             ("k1plus.bin", 1025, "2024-02-29T12:00"), ("k4.bin", 4096, "2024-06-30T23:59"),
                             ("k64.bin", 65536, "2024-07-01T00:00"), ("m2.bin", 2 << 20, "2025-03-01T08:00"),
                             ("Report-A.TXT", 10, "2025-02-28T23:59"), ("a|b.txt", 3, "2025-03-02T00:00")]:
        with open(q / name, "wb") as f:
            f.truncate(size)
        os.utime(q / name, (_utc(when), _utc(when)))
    tree.restart()
    return tree


def in_q(rpc: RpcClient, root: bytes, field: bytes, expr: bytes) -> set[bytes]:
    d = look(rpc, look(rpc, look(rpc, root, b"q"), field + b":"), expr)
    return names(rpc, d)


def test_or_not_and_case_share_canonical_handles(tree, rpc_fresh, root):
    rpc = rpc_fresh
    src_ext = look(rpc, look(rpc, root, b"src"), b"ext:")
    either = look(rpc, src_ext, b"c|h")
    assert names(rpc, either) == {b"a.c", b"b.c", b"util.h"}
    # order, duplicates and case do not matter: one query, one handle
    assert look(rpc, src_ext, b"h|c") == either == look(rpc, src_ext, b"H|c|h")
    assert look(rpc, src_ext, b"C") == look(rpc, src_ext, b"c")
    # NOT: every file of the scope without the value, files with no ext included
    assert names(rpc, look(rpc, src_ext, b"!c")) == {b"util.h", b"README"}
    assert names(rpc, look(rpc, src_ext, b"!c|h")) == {b"README"}
    # text is stored lower-cased: matched case-insensitively
    assert names(rpc, look(rpc, look(rpc, root, b"text:"), b"SEMANTIC")) == {b"notes.txt"}
    # a field directory under an expression lists the values that co-occur with it
    assert lookup(rpc, either, b"ext:")[0] == S.NFS3ERR_NOENT  # a field used twice
    assert names(rpc, look(rpc, look(rpc, src_ext, b"!c"), b"name:")) == {b"util.h", b"README"}
    # ".." from an expression directory climbs back to the scope
    assert look(rpc, look(rpc, either, b".."), b"..") == look(rpc, root, b"src")


def test_ranges_on_exact_sizes_and_utc_dates(lang, rpc_fresh, root):
    rpc = rpc_fresh
    assert in_q(rpc, root, b"size", b">1K") == {b"k1plus.bin", b"k4.bin", b"k64.bin", b"m2.bin"}
    assert in_q(rpc, root, b"size", b"<=4K") == {b"zero.bin", b"k1.bin", b"k1plus.bin", b"k4.bin",
                                                  b"Report-A.TXT", b"a|b.txt"}
    assert in_q(rpc, root, b"size", b"1K..64K") == {b"k1.bin", b"k1plus.bin", b"k4.bin", b"k64.bin"}
    assert in_q(rpc, root, b"size", b">=2M") == {b"m2.bin"}
    assert in_q(rpc, root, b"size", b"<1|>1M") == {b"zero.bin", b"m2.bin"}
    # dates in UTC, a bound covering the whole period written
    assert in_q(rpc, root, b"mtime", b"2024-01..2024-06") == {b"k1.bin", b"k1plus.bin", b"k4.bin"}
    assert in_q(rpc, root, b"mtime", b">=2025-03-01") == {b"m2.bin", b"a|b.txt"}
    assert in_q(rpc, root, b"mtime", b"<2024") == {b"zero.bin"}
    assert in_q(rpc, root, b"mtime", b">2024-06") == {b"k64.bin", b"m2.bin", b"Report-A.TXT", b"a|b.txt"}
    assert in_q(rpc, root, b"mtime", b"2024-02-29") == {b"k1plus.bin"}
    # equal ranges written differently are one query
    q_size = look(rpc, look(rpc, root, b"q"), b"size:")
    assert look(rpc, q_size, b">1K") == look(rpc, q_size, b">=1025") == look(rpc, q_size, b"1025..")
    # the bucket names still work, and NOT applies to ranges
    assert in_q(rpc, root, b"size", b"empty") == {b"zero.bin"}
    assert in_q(rpc, root, b"size", b"!>=1K") == {b"zero.bin", b"Report-A.TXT", b"a|b.txt"}


def test_patterns_and_escaped_operators(lang, rpc_fresh, root):
    rpc = rpc_fresh
    assert in_q(rpc, root, b"name", b"k*") == {b"k1.bin", b"k1plus.bin", b"k4.bin", b"k64.bin"}
    assert in_q(rpc, root, b"name", b"k?.bin") == {b"k1.bin", b"k4.bin"}
    assert in_q(rpc, root, b"name", b"k[0-3]*") == {b"k1.bin", b"k1plus.bin"}
    assert in_q(rpc, root, b"name", b"*port*") == {b"Report-A.TXT"}
    assert in_q(rpc, root, b"ext", b"t*") == {b"Report-A.TXT", b"a|b.txt"}  # ext is lower-cased
    # a literal "|" is written %7C: the field directory lists it that way, and it finds the file
    q_name = look(rpc, look(rpc, root, b"q"), b"name:")
    assert b"a%7Cb.txt" in names(rpc, q_name)
    assert in_q(rpc, root, b"name", b"a%7Cb.txt") == {b"a|b.txt"}
    assert in_q(rpc, root, b"name", b"a|b.txt") == set()  # "a" or "b.txt": neither exists


def test_malformed_expressions_are_noent(lang, rpc_fresh, root):
    rpc = rpc_fresh
    q = look(rpc, root, b"q")
    for field, bad in [(b"size:", b">lots"), (b"ext:", b"c|"), (b"ext:", b"!"), (b"mtime:", b"2024-13..2025"),
                       (b"name:", b"[abc"), (b"pages:", b">1.5"), (b"name:", b"bad%zz")]:
        assert lookup(rpc, look(rpc, q, field), bad)[0] == S.NFS3ERR_NOENT, (field, bad)


def test_value_directory_sizes_count_results_at_the_first_listing(lang, rpc_fresh, root):
    """``ls -l FIELD:`` is a faceted summary: each value directory's size is its number of
    results before any of them was listed."""
    rpc = rpc_fresh
    ext = look(rpc, root, b"ext:")
    sizes = {e.name: e.name_attributes.size for e in list_dir(rpc, ext)
             if e.name not in (b".", b"..")}
    assert sizes[b"c"] == 3 and sizes[b"h"] == 1 and sizes[b"bin"] == 6 and sizes[b"txt"] == 3
    # the same as a LOOKUP then GETATTR of one, and as its listing
    c = look(rpc, ext, b"c")
    assert attrs(rpc, c).size == 3 == len(names(rpc, c))
    # under a term too: the co-occurring values with their counts
    q_ext = look(rpc, look(rpc, look(rpc, root, b"q"), b"size:"), b">1K")
    sub = look(rpc, q_ext, b"ext:")
    assert {e.name: e.name_attributes.size for e in list_dir(rpc, sub)
            if e.name not in (b".", b"..")} == {b"bin": 4}


def test_stat_fields_answer_while_the_content_tier_is_extracted(tmp_path):
    """A first index takes the stat tier alone first: name, ext, owner, group, size and
    mtime queries answer as soon as it is done, while query directories over content fields
    are not answered until theirs is ready (here a transducer that takes 3 s per file): held
    over TCP, JUKEBOX over UDP."""
    import subprocess
    import sys
    from tests.conftest import REPO
    from tests.nfs3_helpers import readdirplus_raw, udp_listing_status
    export = tmp_path / "export"
    export.mkdir()
    for i in range(4):
        (export / f"n{i}.txt").write_text("slow words\n")
    (export / "a.c").write_text("int a;\n")
    cmd = [sys.executable, "-m", "nfsd", "--export", f'"{export}" *(rw,no_root_squash,insecure)',
           "--bind", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path / "state"),
           "--transducer", "*.txt=sleep 3"]
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                text=True)
    try:
        port = int(proc.stdout.readline().split()[3].rsplit(":", 1)[1])
        with RpcClient(port) as rpc:
            root = rpc.mount(os.fsencode(str(export)))
            ext, text = look(rpc, root, b"ext:"), look(rpc, root, b"text:")
            deadline = time.monotonic() + 60
            while True:
                (status, _), _ = readdirplus_raw(rpc, ext, 0, b"\0" * 8, 4096, 4096)
                if status == OK:
                    break
                assert status == S.NFS3ERR_JUKEBOX and time.monotonic() < deadline, status
                time.sleep(0.1)
            assert names(rpc, look(rpc, ext, b"c")) == {b"a.c"}
            # the content tier takes seconds more (over TCP the call would be held until then)
            assert udp_listing_status(port, text) == S.NFS3ERR_JUKEBOX
            assert proc.stdout.readline().startswith("pysfsd: index ready")
            assert names(rpc, look(rpc, text, b"slow")) == {f"n{i}.txt".encode() for i in range(4)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # A plain ``pysfsd:`` line (news a person waits for), not a log record saying WARNING.
    line = next(line for line in (tmp_path / "stderr").read_text().splitlines() if " ready (" in line)
    assert line.startswith(f"pysfsd: {export}: name, ext, owner, group, size and mtime ready (5 files"), line


def test_each_content_field_answers_once_its_own_pass_is_done(tmp_path):
    """After the stat pass of a first index, content fields follow pass by pass
    (Index.content_passes): ``exports`` (read from the few C and Python files) answers with
    every result while ``text`` (every file read) still answers JUKEBOX (over UDP: over TCP
    the call is held), and ``text`` answers once its own pass is done.  The text files are large enough (1 MiB each) that their
    pass takes seconds."""
    import subprocess
    import sys
    from tests.conftest import REPO
    from tests.nfs3_helpers import content_pass_tree, udp_listing_status, wait_listable
    export = tmp_path / "export"
    content_pass_tree(export)
    cmd = [sys.executable, "-m", "nfsd", "--export", f'"{export}" *(rw,no_root_squash,insecure)',
           "--bind", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path / "state")]
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                text=True)

    try:
        port = int(proc.stdout.readline().split()[3].rsplit(":", 1)[1])
        with RpcClient(port) as rpc:
            root = rpc.mount(os.fsencode(str(export)))
            ext, exports, text = (look(rpc, root, f) for f in (b"ext:", b"exports:", b"text:"))
            wait_listable(rpc, ext)  # the stat pass is done
            assert udp_listing_status(port, text) == S.NFS3ERR_JUKEBOX
            wait_listable(rpc, exports)
            assert names(rpc, look(rpc, exports, b"exported_fn")) == {b"a.c"}
            assert udp_listing_status(port, text) == S.NFS3ERR_JUKEBOX  # its own pass takes seconds more
            assert proc.stdout.readline().startswith("pysfsd: index ready")
            assert names(rpc, look(rpc, text, b"needle")) == {f"n{i:02d}.txt".encode() for i in range(40)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    log = (tmp_path / "stderr").read_text()
    assert " exports, from, " in log and ": text, type ready (" in log, log
