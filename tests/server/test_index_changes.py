"""The index follows every change, through the server and behind its back (inotify), and
answers only what is true now: words of files written on the host, renames that change
which transducers apply, hard links under every name, FIFOs out of content queries, and
records of deleted files pruned by the server itself."""
from __future__ import annotations

import os
import time
from typing import Callable

import pytest

from tests.conftest import ServerProcess
from tests.nfs3_helpers import OK, S, look, lookup, names
from tests.rpc_client import RpcClient
from tests.waiting import eventually


def listed(rpc: RpcClient, d: bytes, *path: bytes) -> set[bytes]:
    """The entries of d/path..., or the empty set when it does not exist."""
    for name in path:
        status, res = lookup(rpc, d, name)
        if status == S.NFS3ERR_NOENT:
            return set()
        assert status == OK, (name, status)
        d = res.object.data
    return names(rpc, d)


@pytest.fixture
def rpc(server: ServerProcess):
    with RpcClient(server.port) as client:
        yield client


@pytest.fixture
def root(server: ServerProcess, rpc: RpcClient) -> bytes:
    return rpc.mount(server.export_b)


# --- written behind the server's back ------------------------------------------------------

def test_text_follows_files_written_on_the_host(server, rpc, root):
    """Issue 11: on an empty export, after ``.`` and ``text:`` were listed once, files
    written on the host must show their words (and types) in ``text:`` and ``type:``."""
    e = server.export
    assert names(rpc, root) == set()
    assert listed(rpc, root, b"text:") == set()
    (e / "host.txt").write_text("written on host\n")
    (e / "main.c").write_text("int main(void) { return 0; }\n")
    (e / "src").mkdir()
    (e / "src" / "inner.txt").write_text("deeper words\n")

    def words() -> object:
        got = listed(rpc, root, b"text:")
        want = {b"written", b"on", b"host", b"int", b"main", b"void", b"return", b"deeper", b"words"}
        return want <= got or got
    eventually(words)
    eventually(lambda: listed(rpc, root, b"text:", b"host") == {b"host.txt"} or listed(rpc, root, b"text:", b"host"))
    eventually(lambda: {b"text%2Fplain", b"text%2Fx-c"} <= listed(rpc, root, b"type:") or listed(rpc, root, b"type:"))


# --- renames that change which transducers apply ---------------------------------------------

SLOW_C = b"int slowfn(void) { return 1; }\n"
C2_C = b"int c2fn(void) { return 2; }\n"


def _wait_indexed(rpc: RpcClient, root: bytes, word: bytes) -> None:
    eventually(lambda: bool(listed(rpc, root, b"text:", word)) or listed(rpc, root, b"text:"))


def _assert_fields_follow_the_names(rpc: RpcClient, root: bytes) -> None:
    eventually(lambda: listed(rpc, root, b"exports:", b"slowfn") == {b"slow.c"}
               or listed(rpc, root, b"exports:", b"slowfn"))
    assert b"slow.c" in listed(rpc, root, b"ext:", b"c")
    assert b"c2fn" not in listed(rpc, root, b"exports:")
    assert listed(rpc, root, b"text:", b"c2fn") == {b"c2.txt"}  # its words stay: a text file still


def test_rename_through_the_server_re_extracts_when_other_transducers_apply(server, rpc, root):
    from tests.nfs3_helpers import create_ok, mkdir_ok, rename, write
    lib = mkdir_ok(rpc, root, b"lib")
    for name, data in ((b"slow.c.tmp", SLOW_C), (b"c2.c", C2_C)):
        assert write(rpc, create_ok(rpc, lib, name), 0, data)[0] == OK
    _wait_indexed(rpc, root, b"slowfn")
    _wait_indexed(rpc, root, b"c2fn")
    assert listed(rpc, root, b"exports:", b"c2fn") == {b"c2.c"}
    time.sleep(1.1)  # as in the issue: the rename comes later than the write
    assert rename(rpc, lib, b"slow.c.tmp", lib, b"slow.c")[0] == OK
    assert rename(rpc, lib, b"c2.c", lib, b"c2.txt")[0] == OK
    _assert_fields_follow_the_names(rpc, root)


def test_rename_behind_the_servers_back_re_extracts_when_other_transducers_apply(server, rpc, root):
    lib = server.export / "lib"
    lib.mkdir()
    (lib / "slow.c.tmp").write_bytes(SLOW_C)
    (lib / "c2.c").write_bytes(C2_C)
    _wait_indexed(rpc, root, b"slowfn")
    _wait_indexed(rpc, root, b"c2fn")
    eventually(lambda: listed(rpc, root, b"exports:", b"c2fn") == {b"c2.c"})
    time.sleep(1.1)
    os.rename(lib / "slow.c.tmp", lib / "slow.c")
    os.rename(lib / "c2.c", lib / "c2.txt")
    _assert_fields_follow_the_names(rpc, root)


def test_a_move_keeps_the_content_tier_when_the_same_transducers_apply(tmp_path):
    """The other side of the rule: a move to a name the same transducers treat alike is not
    re-extracted (the content tier is the expensive one)."""
    import lmdb
    from tests.unit.test_index import Counter
    from nfsd.index import Index
    from nfsd.index.transducers.builtin import default_transducers
    root = tmp_path / "export"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.c").write_bytes(C2_C)
    env = lmdb.open(str(tmp_path / "state"), max_dbs=128, map_size=1 << 28)
    counter = Counter()
    idx = Index(env, str(root), 1, transducers=default_transducers() + [counter])
    try:
        idx.scan(progress=False)
        os.rename(root / "a" / "x.c", root / "y.c")
        os.rename(root / "y.c", root / "y.C")  # same extension, case aside
        idx.note_entry(idx.ino_of(b"a"), b"x.c")
        idx.note_entry(idx.root_ino, b"y.C")
        idx.flush()
        assert counter.runs == {b"x.c": 1}
        assert [r.path for r in idx.query(idx.root_ino, [(b"exports", b"c2fn")])] == [b"y.C"]
        os.rename(root / "y.C", root / "y.txt")
        idx.note_entry(idx.root_ino, b"y.C")
        idx.note_entry(idx.root_ino, b"y.txt")
        idx.flush()
        assert counter.runs == {b"x.c": 1, b"y.txt": 1}
        assert idx.query(idx.root_ino, [(b"exports", b"c2fn")]) == []
    finally:
        idx.close()
        env.close()


def test_check_and_index_notice_a_content_tier_of_another_name(tmp_path):
    """A record an earlier version left behind: c2.c renamed to c2.txt with its C exports
    kept (that version stamped every content tier with the transducers' version alone).
    ``pysfsd check`` reports it, ``pysfsd index`` re-extracts it."""
    from nfsd.index.transducers.builtin import default_transducers
    from nfsd.index.extract import Extractor
    from nfsd.index.tables import INO, FileRecord, Tables
    from tests.conftest import serving
    from tests.server.test_check import found, query, run_check, state_env
    with serving(tmp_path) as srv:
        (srv.export / "c2.c").write_bytes(C2_C)
        for i in range(5):
            (srv.export / f"other{i}.c").write_bytes(SLOW_C)
        with RpcClient(srv.port) as rpc:
            eventually(lambda: listed(rpc, rpc.mount(srv.export_b), b"exports:", b"c2fn") == {b"c2.c"})
    ex = srv.export
    os.rename(ex / "c2.c", ex / "c2.txt")
    st = os.lstat(ex / "c2.txt")
    env = state_env(srv)
    try:
        files, children = env.open_db(b"idx1:files"), env.open_db(b"idx1:children")
        tables = Tables(env, 1)
        root = INO.pack(os.lstat(ex).st_ino)
        with env.begin(write=True) as txn:  # what the old rename handling wrote
            rec = FileRecord.decode(txn.get(INO.pack(st.st_ino), db=files))
            assert rec.name == b"c2.c"
            legacy = Extractor(default_transducers()).xver
            txn.put(INO.pack(st.st_ino), rec._replace(name=b"c2.txt", ctime_ns=st.st_ctime_ns, xver=legacy).encode(),
                    db=files)
            txn.put(root + b"c2.txt", txn.get(root + b"c2.c", db=children), db=children)
            txn.delete(root + b"c2.c", db=children)
            tables.build_places(txn)  # as migrating that version's index would (its schema had none)
    finally:
        env.close()
    assert query(srv, "exports:/c2fn") == ["c2.txt"]
    rc, lines = run_check(srv)
    assert (rc, found(lines)) == (1, {("index", "unextracted", st.st_ino)}), lines
    from nfsd.cli.index import main as index_main
    assert index_main(["index", "--export", str(ex), "--state-dir", str(srv.state_dir)]) == 0
    assert query(srv, "exports:/c2fn") == []
    assert run_check(srv) == (0, ["pysfsd check: consistent"])


# --- records of files deleted behind the server's back ---------------------------------------

def test_check_is_clean_after_deletions_behind_a_running_servers_back(server, rpc, root):
    """Files and a directory the server has handles for, deleted on the host: the server
    drops their records itself, so ``pysfsd check`` beside it finds nothing wrong."""
    from tests.nfs3_helpers import create_ok, mkdir_ok, write
    from tests.server.test_check import run_check
    d = mkdir_ok(rpc, root, b"dir")
    for parent, name in ((root, b"a.txt"), (d, b"b.txt"), (d, b"c.txt"), (root, b"kept.txt")):
        assert write(rpc, create_ok(rpc, parent, name), 0, b"some words\n")[0] == OK
    (server.export / "moved.txt").write_text("moved\n")
    look(rpc, root, b"moved.txt")
    rc, lines = run_check(server)
    assert (rc, lines) == (0, ["pysfsd check: consistent"]), lines
    ex = server.export
    (ex / "a.txt").unlink()
    (ex / "dir" / "b.txt").unlink()
    (ex / "dir" / "c.txt").unlink()
    (ex / "dir").rmdir()
    os.rename(ex / "moved.txt", ex / "renamed.txt")
    eventually(lambda: listed(rpc, root, b"ext:", b"txt") == {b"kept.txt", b"renamed.txt"}
               or listed(rpc, root, b"ext:", b"txt"))
    rc, lines = run_check(server)
    assert (rc, lines) == (0, ["pysfsd check: consistent"]), lines
    assert lookup(rpc, root, b"renamed.txt")[0] == OK


# --- FIFOs, sockets and devices -------------------------------------------------------------

def test_fifos_sockets_and_devices_are_not_extension_or_content_results(server, rpc, root):
    """``cat ext:/txt/*`` must not block on a FIFO: what cannot be read has no extension
    field (and no content fields); its name, owner, dates and kind stay queryable."""
    import socket
    import stat
    odd = server.export / "odd"
    odd.mkdir()
    (odd / "real.txt").write_text("plain words\n")
    os.mkfifo(odd / "pipe.txt")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(odd / "sock.txt"))
    os.mknod(odd / "null.txt", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    specials = {b"pipe.txt", b"sock.txt", b"null.txt"}
    try:
        eventually(lambda: specials | {b"real.txt"} <= listed(rpc, root, b"name:") or listed(rpc, root, b"name:"))
        assert listed(rpc, root, b"ext:", b"txt") == {b"real.txt"}
        assert listed(rpc, root, b"odd", b"ext:", b"txt") == {b"real.txt"}
        assert listed(rpc, root, b"type:", b"inode%2Ffifo") == {b"pipe.txt"}
        assert listed(rpc, root, b"type:", b"inode%2Fsocket") == {b"sock.txt"}
        assert listed(rpc, root, b"type:", b"inode%2Fchardevice") == {b"null.txt"}
        assert specials <= listed(rpc, root, b"odd", b"size:", b"empty")
        assert listed(rpc, root, b"name:", b"pipe.txt") == {b"pipe.txt"}
    finally:
        sock.close()


# --- hard links ------------------------------------------------------------------------------

def _readlink(rpc: RpcClient, h: bytes) -> bytes:
    from protocol import nfs3
    from tests.nfs3_helpers import READLINK
    from tests.rpc_client import fh
    status, res = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(h)))
    assert status == OK, status
    return res.data


def _hard_link_case(server, rpc, root, make_link: Callable[[], None], drop_link: Callable[[], None]) -> None:
    from tests.server.test_check import run_check
    eventually(lambda: listed(rpc, root, b"lib", b"ext:", b"c") == {b"list.c"})
    make_link()
    eventually(lambda: listed(rpc, root, b"odd", b"ext:", b"c") == {b"hardlink.c"}
               or listed(rpc, root, b"odd", b"ext:", b"c"))
    assert b"hardlink.c" in listed(rpc, root, b"odd", b"name:")
    assert b"list.c" not in listed(rpc, root, b"odd", b"name:")
    assert listed(rpc, root, b"ext:", b"c") == {b"list.c", b"hardlink.c"}
    assert listed(rpc, root, b"exports:", b"listfn") == {b"list.c", b"hardlink.c"}
    link = look(rpc, root, b"odd", b"exports:", b"listfn", b"hardlink.c")
    assert _readlink(rpc, link) == b"../../hardlink.c"  # inside its scope, whichever name is first
    rc, lines = run_check(server)
    assert (rc, lines) == (0, ["pysfsd check: consistent"]), lines
    drop_link()
    eventually(lambda: listed(rpc, root, b"ext:", b"c") == {b"list.c"} or listed(rpc, root, b"ext:", b"c"))
    assert listed(rpc, root, b"odd", b"ext:", b"c") == set()
    assert listed(rpc, root, b"exports:", b"listfn") == {b"list.c"}
    rc, lines = run_check(server)
    assert (rc, lines) == (0, ["pysfsd check: consistent"]), lines


@pytest.fixture
def linked_tree(server):
    (server.export / "lib").mkdir()
    (server.export / "odd").mkdir()
    (server.export / "lib" / "list.c").write_text("int listfn(void) { return 0; }\n")
    return server


def test_hard_link_through_the_server_is_indexed_under_both_names(linked_tree, rpc, root):
    from protocol import nfs3
    from tests.nfs3_helpers import LINK, remove
    from tests.rpc_client import fh
    lib, odd = look(rpc, root, b"lib"), look(rpc, root, b"odd")

    def make() -> None:
        args = nfs3.LINK3args.cls(fh(look(rpc, lib, b"list.c")), nfs3.diropargs3.cls(fh(odd), b"hardlink.c"))
        assert rpc.nfs(LINK, args)[0] == OK
    _hard_link_case(linked_tree, rpc, root, make, lambda: remove(rpc, odd, b"hardlink.c"))


def test_hard_link_behind_the_servers_back_is_indexed_under_both_names(linked_tree, rpc, root):
    e = linked_tree.export
    _hard_link_case(linked_tree, rpc, root, lambda: os.link(e / "lib" / "list.c", e / "odd" / "hardlink.c"),
                    lambda: os.unlink(e / "odd" / "hardlink.c"))


def test_first_name_of_a_hard_link_removed_behind_the_servers_back(linked_tree, rpc, root):
    e = linked_tree.export
    from tests.server.test_check import run_check
    eventually(lambda: listed(rpc, root, b"ext:", b"c") == {b"list.c"})
    os.link(e / "lib" / "list.c", e / "odd" / "hardlink.c")
    eventually(lambda: listed(rpc, root, b"ext:", b"c") == {b"list.c", b"hardlink.c"})
    os.unlink(e / "lib" / "list.c")
    eventually(lambda: listed(rpc, root, b"ext:", b"c") == {b"hardlink.c"} or listed(rpc, root, b"ext:", b"c"))
    assert listed(rpc, root, b"exports:", b"listfn") == {b"hardlink.c"}
    assert b"list.c" not in listed(rpc, root, b"name:")
    rc, lines = run_check(linked_tree)
    assert (rc, lines) == (0, ["pysfsd check: consistent"]), lines


def test_check_finds_and_repairs_a_recorded_name_gone_behind_a_stopped_server(tmp_path):
    from tests.conftest import serving
    from tests.server.test_check import assert_repairs, query
    e = tmp_path / "export"
    (e / "odd").mkdir(parents=True)
    (e / "list.c").write_text("int listfn(void) { return 0; }\n")
    os.link(e / "list.c", e / "odd" / "hardlink.c")
    with serving(tmp_path) as srv, RpcClient(srv.port) as rpc:  # the scan meets list.c first
        root = rpc.mount(srv.export_b)
        eventually(lambda: listed(rpc, root, b"exports:", b"listfn") == {b"list.c", b"hardlink.c"})
    os.unlink(e / "odd" / "hardlink.c")
    ino, odd = os.lstat(e / "list.c").st_ino, os.lstat(e / "odd").st_ino
    assert_repairs(srv, {("index", "link", f"export 1 link 'hardlink.c' in {odd}"), ("index", "place", ino),
                         ("index", "child", f"export 1 entry 'hardlink.c' of {odd}"), ("index", "stale", ino)})
    assert query(srv, "exports:/listfn") == ["list.c"]
    assert query(srv, "name:/hardlink.c") == []
