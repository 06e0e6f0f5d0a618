"""The export boundary and handle validation, through the running server: names are single
components, symbolic links are never followed by the server, handles of deleted objects are
stale and malformed handles are refused; the server keeps answering throughout."""
from __future__ import annotations

import os
import random
import struct

import pytest

from protocol import nfs3
from protocol.nfs3 import createmode3, ftype3
from protocol.rpc import accept_stat
from tests.conftest import serving
from tests.nfs3_helpers import (ACCESS, FSINFO, GETATTR, LINK, NFS, NO_SATTR, OK, READ, READLINK,
                                S, SETATTR, ZERO_VERF, attrs, create, create_ok, diropargs,
                                getattr_, lookup, mkdir, mkdir_ok, null_ok, pack, read,
                                readdir_raw, readdirplus_raw, remove, rename, symlink, u32, write)
from tests.rpc_client import RpcClient, fh


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    base = tmp_path_factory.mktemp("secsrv")
    (base / "outside").mkdir()
    (base / "outside" / "secret").write_bytes(b"top secret\n")
    with serving(base) as srv:
        yield srv


@pytest.fixture
def conn(shared):
    with RpcClient(shared.port) as client:
        yield client, client.mount(shared.export_b)


def _snapshot(top) -> set[str]:
    return {os.path.relpath(os.path.join(dp, n), top)
            for dp, dns, fns in os.walk(top) for n in dns + fns}


BAD_NAMES = [b"a/b", b"/abs", b"sub/", b"..//x", b"nul\0byte", b"\0", b"a/../../outside", b""]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_illegal_names_refused_and_nothing_created(shared, conn, name):
    rpc, root = conn
    os.makedirs(shared.export / "sub" / "b", exist_ok=True)
    (shared.export / "src").touch()
    sub = lookup(rpc, root, b"sub")[1].object.data
    before = _snapshot(shared.export) | _snapshot(shared.export.parent / "outside")
    status, res = lookup(rpc, root, name)
    assert status != OK, name
    assert res.dir_attributes is not None
    assert create(rpc, root, name, createmode3.UNCHECKED)[0] != OK
    assert create(rpc, sub, name, createmode3.GUARDED)[0] != OK
    assert create(rpc, root, name, createmode3.EXCLUSIVE, b"12345678")[0] != OK
    assert mkdir(rpc, root, name)[0] != OK
    assert symlink(rpc, root, name, b"target")[0] != OK
    status = rpc.nfs(nfs3.NFS3.procedures[11].number,
                     nfs3.MKNOD3args.cls(diropargs(root, name), (ftype3.NF3FIFO, NO_SATTR)))[0]
    assert status != OK
    src = lookup(rpc, root, b"src")[1].object.data
    assert rpc.nfs(LINK, nfs3.LINK3args.cls(fh(src), diropargs(root, name)))[0] != OK
    status, res = rename(rpc, root, b"src", root, name)
    assert status != OK
    assert res.fromdir_wcc.after is not None
    assert (shared.export / "src").exists()
    assert rename(rpc, root, name, root, b"dst")[0] != OK
    assert remove(rpc, root, name)[0] != OK
    after = _snapshot(shared.export) | _snapshot(shared.export.parent / "outside")
    assert after == before
    null_ok(rpc)


def test_lookup_dotdot_at_root_is_root(shared, conn):
    rpc, root = conn
    status, res = lookup(rpc, root, b"..")
    assert status == OK and res.object.data == root
    assert res.obj_attributes.fileid == shared.export.stat().st_ino
    status, res = lookup(rpc, root, b".")
    assert status == OK and res.object.data == root
    d = mkdir_ok(rpc, root, b"level1")
    status, res = lookup(rpc, d, b"..")
    assert status == OK and res.object.data == root
    # ".." in READDIRPLUS of the root is the root too
    (status, res), _ = readdirplus_raw(rpc, root, 0, ZERO_VERF, 8192, 8192)
    assert status == OK
    dotdot = [e for e in res.reply.entries if e.name == b".."]
    assert len(dotdot) == 1 and dotdot[0].name_handle.data == root
    assert dotdot[0].fileid == shared.export.stat().st_ino


@pytest.fixture
def escapes(shared, conn):
    """Symbolic links in the export that point out of it; their handles."""
    rpc, root = conn
    outside = shared.export.parent / "outside"
    links = {b"to-etc": b"/etc", b"to-up": b"../../..", b"to-outside": os.fsencode(outside),
             b"to-secret": os.fsencode(outside / "secret"), b"to-passwd": b"/etc/passwd"}
    handles = {}
    for name, target in links.items():
        p = shared.export / name.decode()
        if not p.is_symlink():
            os.symlink(target, p)
        status, res = lookup(rpc, root, name)
        assert status == OK and res.obj_attributes.type == ftype3.NF3LNK
        handles[name] = res.object.data
    return handles


def test_symlink_handle_is_not_a_directory(shared, conn, escapes):
    rpc, root = conn
    before = _snapshot(shared.export.parent / "outside")
    for name in (b"to-etc", b"to-up", b"to-outside"):
        h = escapes[name]
        for child in (b"passwd", b"secret", b"tmp", b".", b".."):
            status, res = lookup(rpc, h, child)
            assert status == S.NFS3ERR_NOTDIR, (name, child, status)
        assert create(rpc, h, b"planted", createmode3.UNCHECKED)[0] == S.NFS3ERR_NOTDIR
        assert create(rpc, h, b"planted", createmode3.EXCLUSIVE, b"abcdefgh")[0] == S.NFS3ERR_NOTDIR
        assert mkdir(rpc, h, b"planted")[0] == S.NFS3ERR_NOTDIR
        assert symlink(rpc, h, b"planted", b"x")[0] == S.NFS3ERR_NOTDIR
        assert remove(rpc, h, b"secret")[0] == S.NFS3ERR_NOTDIR
        assert rename(rpc, root, b"to-passwd", h, b"planted")[0] == S.NFS3ERR_NOTDIR
        for plus in (False, True):
            fn = (lambda: readdirplus_raw(rpc, h, 0, ZERO_VERF, 4096, 4096)) if plus else \
                (lambda: readdir_raw(rpc, h, 0, ZERO_VERF, 4096))
            (status, res), _ = fn()
            assert status == S.NFS3ERR_NOTDIR
    assert _snapshot(shared.export.parent / "outside") == before
    assert (shared.export.parent / "outside" / "secret").read_bytes() == b"top secret\n"
    assert not os.path.lexists("/etc/planted")


def test_symlink_targets_are_never_read_or_written(shared, conn, escapes):
    rpc, root = conn
    passwd = open("/etc/passwd", "rb").read()
    for name in (b"to-passwd", b"to-secret", b"to-etc"):
        h = escapes[name]
        status, res = read(rpc, h, 0, 4096)
        assert status != OK, name
        assert write(rpc, h, 0, b"owned")[0] != OK
        status, res = getattr_(rpc, h)
        assert status == OK and res.obj_attributes.type == ftype3.NF3LNK
        status, res = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(h)))
        assert status == OK and res.data == os.readlink(shared.export / name.decode()).encode()
        # SETATTR on the link must not chmod/truncate/chown the target
        sa = nfs3.sattr3.cls(0o777, None, None, 0, (0, None), (0, None))
        rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), sa, None))
        sa = nfs3.sattr3.cls(None, 4321, 4321, None, (0, None), (0, None))
        rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), sa, None))
        rpc.nfs(nfs3.NFS3.procedures[21].number, nfs3.COMMIT3args.cls(fh(h), 0, 0))
        # LINK of the symlink creates another symlink, not a link to the target
        status, _ = rpc.nfs(LINK, nfs3.LINK3args.cls(fh(h), diropargs(root, b"hl-" + name)))
        if status == OK:
            assert os.path.islink(shared.export / ("hl-" + name.decode()))
    assert open("/etc/passwd", "rb").read() == passwd
    secret = shared.export.parent / "outside" / "secret"
    assert secret.read_bytes() == b"top secret\n"
    st = secret.stat()
    assert st.st_uid != 4321 and oct(st.st_mode & 0o777) != oct(0o777)
    assert os.stat("/etc/passwd").st_uid == 0
    assert os.stat("/etc").st_mode & 0o777 != 0o777


def test_names_through_symlinked_directory_fail(shared, conn, escapes):
    """A client cannot traverse a symlink by sending it as a path component."""
    rpc, root = conn
    before = _snapshot(shared.export.parent / "outside")
    for name in (b"to-etc/passwd", b"to-outside/secret", b"to-up/etc"):
        assert lookup(rpc, root, name)[0] != OK
        assert create(rpc, root, name + b"-new", createmode3.UNCHECKED)[0] != OK
    # MOUNT of a path through the symlink does not give a handle of the target either
    from protocol import mount3
    for path in (shared.export_b + b"/to-outside", shared.export_b + b"/to-etc",
                 shared.export_b + b"/../outside", shared.export_b + b"/to-up"):
        status, ok = rpc.call(mount3.MOUNT3, 1, path)
        if status == 0:
            a = attrs(rpc, ok.fhandle)
            assert a.fileid != os.stat(shared.export.parent / "outside").st_ino
            assert a.fileid != os.stat("/etc").st_ino
            assert a.fileid != os.stat("/").st_ino
    assert _snapshot(shared.export.parent / "outside") == before


def test_deleted_file_handle_is_stale(shared, conn):
    rpc, root = conn
    d = mkdir_ok(rpc, root, b"stale")
    h = create_ok(rpc, d, b"via-server")
    assert remove(rpc, d, b"via-server")[0] == OK
    assert getattr_(rpc, h)[0] == S.NFS3ERR_STALE
    assert read(rpc, h, 0, 10)[0] == S.NFS3ERR_STALE
    status, res = write(rpc, h, 0, b"x")
    assert status == S.NFS3ERR_STALE
    # behind the server's back
    h2 = create_ok(rpc, d, b"behind")
    os.unlink(shared.export / "stale" / "behind")
    assert getattr_(rpc, h2)[0] == S.NFS3ERR_STALE
    assert lookup(rpc, h2, b"x")[0] == S.NFS3ERR_STALE
    # a removed directory
    sub = mkdir_ok(rpc, d, b"gone")
    os.rmdir(shared.export / "stale" / "gone")
    assert getattr_(rpc, sub)[0] == S.NFS3ERR_STALE
    assert create(rpc, sub, b"f", createmode3.UNCHECKED)[0] == S.NFS3ERR_STALE
    (status, _), _ = readdir_raw(rpc, sub, 0, ZERO_VERF, 4096)
    assert status == S.NFS3ERR_STALE
    # the same name created again is a different object: the old handle stays stale
    h3 = create_ok(rpc, d, b"via-server")
    assert h3 != h or getattr_(rpc, h)[0] == OK
    assert getattr_(rpc, h3)[0] == OK
    null_ok(rpc)


def _handle_variants(root: bytes) -> dict[str, bytes]:
    version, kind, export_id = struct.unpack_from(">BBH", root)
    return {
        "empty": b"",
        "one-byte": b"\x01",
        "short": root[:8],
        "15-bytes": root[:15],
        "17-bytes": root + b"\0",
        "32-bytes": root * 2,
        "64-bytes": root * 4,
        "wrong-version-0": bytes([0]) + root[1:],
        "wrong-version-2": bytes([2]) + root[1:],
        "wrong-version-ff": bytes([255]) + root[1:],
        "wrong-kind": bytes([version, 7]) + root[2:],
        "random": random.Random("random").randbytes(16),  # fixed: the same statuses every run
        "zeros": bytes(16),
        "ones": b"\xff" * 16,
    }


@pytest.mark.parametrize("variant", list(_handle_variants(b"\x01\x00\x00\x01" + bytes(12))))
def test_malformed_handles_are_badhandle(shared, conn, variant):
    rpc, root = conn
    bad = _handle_variants(root)[variant]
    ok_statuses = {S.NFS3ERR_BADHANDLE}
    if variant in ("random", "zeros", "ones") and bad[:1] == b"\x01":
        ok_statuses.add(S.NFS3ERR_STALE)
    assert getattr_(rpc, bad)[0] in ok_statuses
    assert lookup(rpc, bad, b"x")[0] in ok_statuses
    assert read(rpc, bad, 0, 10)[0] in ok_statuses
    assert write(rpc, bad, 0, b"x")[0] in ok_statuses
    assert create(rpc, bad, b"x", createmode3.UNCHECKED)[0] in ok_statuses
    assert rpc.nfs(ACCESS, nfs3.ACCESS3args.cls(fh(bad), 0x3F))[0] in ok_statuses
    assert rpc.nfs(FSINFO, nfs3.FSINFO3args.cls(fh(bad)))[0] in ok_statuses
    assert rename(rpc, root, b"nothing", bad, b"x")[0] in ok_statuses
    (status, _), _ = readdirplus_raw(rpc, bad, 0, ZERO_VERF, 4096, 4096)
    assert status in ok_statuses
    null_ok(rpc)


def test_handle_of_an_unknown_inode_is_stale_or_badhandle(shared, conn):
    rpc, root = conn
    forged = root[:4] + struct.pack(">QI", 0x7FFF_FFFF_0000_1234, 0)
    assert getattr_(rpc, forged)[0] in (S.NFS3ERR_STALE, S.NFS3ERR_BADHANDLE)
    other_export = root[:2] + struct.pack(">H", 999) + root[4:]
    assert getattr_(rpc, other_export)[0] in (S.NFS3ERR_STALE, S.NFS3ERR_BADHANDLE)
    # the inode of something outside the export (found by a search of the export only)
    outside_ino = os.stat(shared.export.parent / "outside" / "secret").st_ino
    forged = root[:4] + struct.pack(">QI", outside_ino, 0)
    status, _ = getattr_(rpc, forged)
    assert status in (S.NFS3ERR_STALE, S.NFS3ERR_BADHANDLE)
    assert read(rpc, forged, 0, 100)[0] in (S.NFS3ERR_STALE, S.NFS3ERR_BADHANDLE)
    # the inode of the export's parent directory
    parent_ino = os.stat(shared.export.parent).st_ino
    forged = root[:4] + struct.pack(">QI", parent_ino, 0)
    assert getattr_(rpc, forged)[0] in (S.NFS3ERR_STALE, S.NFS3ERR_BADHANDLE)
    assert lookup(rpc, forged, b"outside")[0] in (S.NFS3ERR_STALE, S.NFS3ERR_BADHANDLE)


def test_handle_longer_than_64_is_garbage_args(shared, conn):
    rpc, root = conn
    for n in (65, 100, 1024):
        args = u32(n) + random.Random(n).randbytes(n) + bytes(-n % 4)
        for proc in (GETATTR, READ):
            extra = b"" if proc == GETATTR else u32(0, 0, 10)
            _, body, rest = rpc.raw_call(NFS, 3, proc, args + extra)
            assert body[0] == 0 and body[1].reply_data == (accept_stat.GARBAGE_ARGS, None)
    # a 64-byte handle is well-formed XDR: BADHANDLE, not GARBAGE_ARGS
    _, body, rest = rpc.raw_call(NFS, 3, GETATTR, pack(nfs3.GETATTR3args, nfs3.GETATTR3args.cls(fh(bytes(64)))))
    assert body[1].reply_data == (accept_stat.SUCCESS, None)
    assert nfs3.GETATTR3res.unpack(rest, 0)[0][0] == S.NFS3ERR_BADHANDLE
    null_ok(rpc)


def test_server_still_answers_after_abuse(shared, conn):
    rpc, root = conn
    null_ok(rpc)
    a = attrs(rpc, root)
    assert a.type == ftype3.NF3DIR
    with RpcClient(shared.port) as fresh:
        null_ok(fresh)
        assert fresh.mount(shared.export_b) == root


def test_deleted_handles_stay_stale_across_restart(server, rpc):
    root = rpc.mount(server.export_b)
    d = mkdir_ok(rpc, root, b"d")
    keep = create_ok(rpc, d, b"keep")
    gone1 = create_ok(rpc, d, b"gone1")
    gone2 = create_ok(rpc, d, b"gone2")
    gone_dir = mkdir_ok(rpc, root, b"gone-dir")
    assert remove(rpc, d, b"gone1")[0] == OK
    server.stop()
    os.unlink(server.export / "d" / "gone2")
    os.rmdir(server.export / "gone-dir")
    server.start(server.port)
    with RpcClient(server.port) as again:
        for h in (gone1, gone2, gone_dir):
            assert getattr_(again, h)[0] == S.NFS3ERR_STALE
        assert create(again, gone_dir, b"x", createmode3.UNCHECKED)[0] == S.NFS3ERR_STALE
        assert getattr_(again, keep)[0] == OK
        assert lookup(again, d, b"keep")[1].object.data == keep
        null_ok(again)
