"""NFSv3 semantics of the running server (RFC 1813): create modes, guards, stable writes and
verifiers, weak cache consistency data, errno mapping, directory listing and cookies,
special files, ACCESS, and the file-system information procedures."""
from __future__ import annotations

import itertools
import os
import random
import stat
import time

import pytest

from protocol import nfs3
from protocol.nfs3 import createmode3, ftype3, stable_how
from tests.conftest import serving
from tests.nfs3_helpers import (null_ok, ACCESS, FSINFO, FSSTAT, LINK, MKDIR, MKNOD, NO_SATTR, OK, PATHCONF,
                                READLINK, S, SETATTR, ZERO_VERF, attrs, commit, create,
                                create_ok, cred, diropargs, list_dir, lookup, mkdir,
                                mkdir_ok, read, readdir_raw, readdirplus_raw, remove, rename,
                                rmdir, sattr, symlink, write)
from tests.rpc_client import RpcClient, fh

_names = itertools.count()


def listing_raw(rpc, d, cookie, verf, count, plus, maxcount=None):
    """READDIR, or READDIRPLUS with ``count`` as dircount and ``maxcount`` (default: ``count``)."""
    if plus:
        return readdirplus_raw(rpc, d, cookie, verf, count, count if maxcount is None else maxcount)
    return readdir_raw(rpc, d, cookie, verf, count)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the tests that do not restart it; each test works in its own
    directory of the export."""
    base = tmp_path_factory.mktemp("nfs3srv")
    with serving(base) as srv:
        yield srv


@pytest.fixture
def env(shared):
    """(client, directory handle, directory path) of a fresh directory in the shared export."""
    with RpcClient(shared.port) as client:
        root = client.mount(shared.export_b)
        name = f"t{next(_names)}".encode()
        d = mkdir_ok(client, root, name, 0o777)
        yield client, d, shared.export / name.decode()


def _fileid(rpc, h):
    return attrs(rpc, h).fileid


# --- CREATE ---------------------------------------------------------------------------------------

def test_create_unchecked_and_guarded(env):
    rpc, d, path = env
    status, res = create(rpc, d, b"f", createmode3.UNCHECKED, sattr(mode=0o600))
    assert status == OK
    h = res.obj.data
    assert res.obj_attributes.type == ftype3.NF3REG and res.obj_attributes.mode == 0o600
    assert res.dir_wcc.before is not None and res.dir_wcc.after is not None
    (path / "f").write_bytes(b"content")
    # UNCHECKED on an existing file succeeds, same object; size 0 requested truncates
    status, res = create(rpc, d, b"f", createmode3.UNCHECKED, NO_SATTR)
    assert status == OK and res.obj.data == h
    assert (path / "f").read_bytes() == b"content"
    status, res = create(rpc, d, b"f", createmode3.UNCHECKED, sattr(size=0))
    assert status == OK and res.obj.data == h and res.obj_attributes.size == 0
    # GUARDED on an existing file: EXIST, with directory wcc
    status, res = create(rpc, d, b"f", createmode3.GUARDED, NO_SATTR)
    assert status == S.NFS3ERR_EXIST
    assert res.dir_wcc.before is not None and res.dir_wcc.after is not None
    status, res = create(rpc, d, b"g", createmode3.GUARDED, sattr(mode=0o640))
    assert status == OK and res.obj_attributes.mode == 0o640
    assert stat.S_IMODE((path / "g").stat().st_mode) == 0o640


def test_new_objects_reply_attributes_are_their_attributes(env):
    """CREATE and MKDIR answer the attributes the new object has after every attribute sent
    was set (a mode the umask would drop, times, a size; or nothing): the same as a GETATTR
    right after.  (The reply may reuse the stat taken as the object was made.)"""
    rpc, d, path = env
    when = (1_000_000_000, 5)
    at = nfs3.sattr3.cls(None, None, None, None, (nfs3.time_how.SET_TO_CLIENT_TIME, when),
                         (nfs3.time_how.SET_TO_CLIENT_TIME, when))
    cases = [NO_SATTR, sattr(mode=0o640), sattr(mode=0o777), sattr(mode=0o4755), sattr(size=0),
             sattr(size=3), at]
    for i, how in enumerate(cases):
        for make in ("file", "dir"):
            name = f"{make}{i}".encode()
            if make == "file":
                status, res = create(rpc, d, name, createmode3.GUARDED, how)
            else:
                if how.size is not None:
                    continue
                status, res = rpc.nfs(MKDIR, nfs3.MKDIR3args.cls(diropargs(d, name), how))
            assert status == OK, (name, status)
            got, now = res.obj_attributes, attrs(rpc, res.obj.data)
            if make == "dir" and how is not at:  # the watcher lists a new directory: an atime
                # it was given is kept (O_NOATIME), but a fresh one may be the listing's
                got, now = got._replace(atime=None), now._replace(atime=None)
            assert got == now, name
            if how.mode is not None:  # (mkdir(2) keeps no set-user-ID bit)
                assert got.mode == (how.mode if make == "file" else how.mode & 0o777), name
            if how.size is not None:
                assert got.size == how.size, name
            if how is at:
                assert got.mtime == when and got.atime == when, name
    # EXCLUSIVE (the verifier may be kept in the file's times)
    status, res = _exclusive(rpc, d, b"excl", b"verf0009")
    assert status == OK and res.obj_attributes == attrs(rpc, res.obj.data)


def _exclusive(rpc, d, name, verf):
    return create(rpc, d, name, createmode3.EXCLUSIVE, verf)


def test_create_exclusive_retransmission_and_restart(server, rpc):
    root = rpc.mount(server.export_b)
    status, res = _exclusive(rpc, root, b"x", b"verf0001")
    assert status == OK
    h = res.obj.data
    assert res.obj_attributes.type == ftype3.NF3REG
    # the retransmitted create (same verifier): success, same handle
    status, res = _exclusive(rpc, root, b"x", b"verf0001")
    assert status == OK and res.obj.data == h
    # another client's attempt (other verifier): EXIST
    status, res = _exclusive(rpc, root, b"x", b"verf0002")
    assert status == S.NFS3ERR_EXIST
    assert res.dir_wcc.after is not None
    # the usual follow-up SETATTR does not lose the verifier
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), sattr(mode=0o600), None))
    assert status == OK
    # an existing file created otherwise is not mistaken for ours
    (server.export / "plain").write_bytes(b"")
    assert _exclusive(rpc, root, b"plain", b"verf0001")[0] == S.NFS3ERR_EXIST
    server.restart()
    with RpcClient(server.port) as again:
        status, res = _exclusive(again, root, b"x", b"verf0001")
        assert status == OK and res.obj.data == h
        assert _exclusive(again, root, b"x", b"verf0002")[0] == S.NFS3ERR_EXIST


# --- SETATTR guard ----------------------------------------------------------------------------

def test_setattr_ctime_guard(env):
    rpc, d, path = env
    h = create_ok(rpc, d, b"f", 0o644)
    before = attrs(rpc, h)
    status, res = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), sattr(mode=0o600), before.ctime))
    assert status == OK
    assert res.obj_wcc.after.mode == 0o600
    assert tuple(res.obj_wcc.before.ctime) == tuple(before.ctime)
    wrong = nfs3.nfstime3.cls(before.ctime.seconds - 1, before.ctime.nseconds)
    status, res = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), sattr(mode=0o611), wrong))
    assert status == S.NFS3ERR_NOT_SYNC
    assert res.obj_wcc.before is not None and res.obj_wcc.after is not None
    assert res.obj_wcc.after.mode == 0o600
    assert stat.S_IMODE((path / "f").stat().st_mode) == 0o600


def test_setattr_size_and_times(env):
    rpc, d, path = env
    h = create_ok(rpc, d, b"f")
    (path / "f").write_bytes(b"0123456789")
    t = nfs3.nfstime3.cls(1_000_000_000, 123456789)
    new = nfs3.sattr3.cls(None, None, None, 4, (2, t), (2, t))
    status, res = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), new, None))
    assert status == OK
    a = res.obj_wcc.after
    assert a.size == 4 and tuple(a.mtime) == tuple(t) and tuple(a.atime) == tuple(t)
    assert (path / "f").read_bytes() == b"0123"
    assert (path / "f").stat().st_mtime_ns == 1_000_000_000_123_456_789


# --- WRITE / COMMIT -----------------------------------------------------------------------------

def test_write_stability_and_verifier(server, rpc):
    root = rpc.mount(server.export_b)
    h = create_ok(rpc, root, b"w")
    status, res = write(rpc, h, 0, b"hello", stable_how.FILE_SYNC)
    assert status == OK and res.committed == stable_how.FILE_SYNC and res.count == 5
    verf = res.verf
    assert res.file_wcc.before is not None and res.file_wcc.after.size == 5
    status, res = write(rpc, h, 5, b" world", stable_how.UNSTABLE)
    assert status == OK and res.committed == stable_how.UNSTABLE
    assert res.verf == verf
    status, res = write(rpc, h, 11, b"!", stable_how.DATA_SYNC)
    assert status == OK and res.committed >= stable_how.DATA_SYNC and res.verf == verf
    status, res = commit(rpc, h)
    assert status == OK and res.verf == verf
    assert res.file_wcc.after.size == 12
    assert (server.export / "w").read_bytes() == b"hello world!"
    server.restart()
    with RpcClient(server.port) as again:
        status, res = write(again, h, 0, b"H", stable_how.UNSTABLE)
        assert status == OK and res.verf != verf
        new_verf = res.verf
        status, res = commit(again, h)
        assert status == OK and res.verf == new_verf


def test_write_past_4gib_is_sparse(env):
    rpc, d, path = env
    h = create_ok(rpc, d, b"big")
    off = (5 << 30) + 3
    status, res = write(rpc, h, off, b"far away", stable_how.FILE_SYNC)
    assert status == OK and res.count == 8
    assert res.file_wcc.after.size == off + 8
    status, res = read(rpc, h, off - 2, 100)
    assert status == OK and res.data == b"\0\0far away" and res.eof
    st = (path / "big").stat()
    assert st.st_size == off + 8 and st.st_blocks * 512 < (1 << 20)
    status, res = read(rpc, h, 1 << 32, 16)
    assert status == OK and res.data == bytes(16) and not res.eof
    status, res = read(rpc, h, off + 100, 16)
    assert status == OK and res.count == 0 and res.data == b"" and res.eof


def test_read_and_write_of_the_advertised_maximum(env):
    rpc, d, path = env
    h = create_ok(rpc, d, b"r")
    status, info = rpc.nfs(FSINFO, nfs3.FSINFO3args.cls(fh(d)))
    assert status == OK
    data = random.Random("r").randbytes(info.wtmax)  # fixed: sniffed the same every run
    status, res = write(rpc, h, 0, data, stable_how.UNSTABLE)
    assert status == OK and res.count == info.wtmax
    (path / "r").write_bytes(data * 3)
    status, res = read(rpc, h, 0, info.rtmax)
    assert status == OK and res.count == info.rtmax and res.data == data and not res.eof
    # a larger count is cut to rtmax, not refused
    status, res = read(rpc, h, 5, 4 << 20)
    assert status == OK and 0 < res.count <= info.rtmax and res.count == len(res.data) and not res.eof
    assert res.data == (data * 2)[5:5 + res.count]


# --- weak cache consistency on errors ------------------------------------------------------------

def test_error_replies_carry_wcc(env):
    rpc, d, path = env
    status, res = remove(rpc, d, b"missing")
    assert status == S.NFS3ERR_NOENT
    assert res.dir_wcc.before is not None and res.dir_wcc.after is not None
    status, res = lookup(rpc, d, b"missing")
    assert status == S.NFS3ERR_NOENT
    assert res.dir_attributes is not None and res.dir_attributes.type == ftype3.NF3DIR
    sub = mkdir_ok(rpc, d, b"sub")
    create_ok(rpc, sub, b"inner")
    status, res = rmdir(rpc, d, b"sub")
    assert status == S.NFS3ERR_NOTEMPTY
    assert res.dir_wcc.before is not None and res.dir_wcc.after is not None
    status, res = mkdir(rpc, d, b"sub")
    assert status == S.NFS3ERR_EXIST
    assert res.dir_wcc.before is not None and res.dir_wcc.after is not None
    status, res = rename(rpc, d, b"missing", d, b"other")
    assert status == S.NFS3ERR_NOENT
    for w in (res.fromdir_wcc, res.todir_wcc):
        assert w.before is not None and w.after is not None


def test_successful_remove_wcc_shows_the_change(env):
    rpc, d, path = env
    create_ok(rpc, d, b"f")
    status, res = remove(rpc, d, b"f")
    assert status == OK
    before, after = res.dir_wcc.before, res.dir_wcc.after
    assert before is not None and after is not None
    assert (after.mtime.seconds, after.mtime.nseconds) >= (before.mtime.seconds, before.mtime.nseconds)


# --- errno mapping -------------------------------------------------------------------------------

def test_errno_mapping(env):
    rpc, d, path = env
    f = create_ok(rpc, d, b"file")
    mkdir_ok(rpc, d, b"dir")
    sub = mkdir_ok(rpc, d, b"full")
    create_ok(rpc, sub, b"x")
    assert lookup(rpc, d, b"nope")[0] == S.NFS3ERR_NOENT
    assert mkdir(rpc, d, b"file")[0] == S.NFS3ERR_EXIST
    assert create(rpc, d, b"dir", createmode3.GUARDED)[0] == S.NFS3ERR_EXIST
    assert lookup(rpc, f, b"x")[0] == S.NFS3ERR_NOTDIR
    assert create(rpc, f, b"x", createmode3.UNCHECKED)[0] == S.NFS3ERR_NOTDIR
    dirh = lookup(rpc, d, b"dir")[1].object.data
    status, res = read(rpc, dirh, 0, 10)
    assert status == S.NFS3ERR_ISDIR and res.file_attributes is not None
    assert write(rpc, dirh, 0, b"x")[0] == S.NFS3ERR_ISDIR
    status, res = remove(rpc, d, b"dir")
    assert status == S.NFS3ERR_ISDIR and res.dir_wcc.after is not None
    assert (path / "dir").is_dir()
    assert rmdir(rpc, d, b"file")[0] == S.NFS3ERR_NOTDIR
    assert rmdir(rpc, d, b"full")[0] == S.NFS3ERR_NOTEMPTY
    long = b"n" * 256
    assert lookup(rpc, d, long)[0] == S.NFS3ERR_NAMETOOLONG
    assert create(rpc, d, long, createmode3.UNCHECKED)[0] == S.NFS3ERR_NAMETOOLONG
    assert mkdir(rpc, d, long)[0] == S.NFS3ERR_NAMETOOLONG
    assert create(rpc, d, b"n" * 255, createmode3.GUARDED)[0] == OK
    status, res = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(f)))
    assert status == S.NFS3ERR_INVAL and res.symlink_attributes is not None
    assert rmdir(rpc, d, b".")[0] == S.NFS3ERR_INVAL
    assert rmdir(rpc, d, b"..")[0] in (S.NFS3ERR_INVAL, S.NFS3ERR_EXIST, S.NFS3ERR_NOTEMPTY)
    for bad in (ftype3.NF3REG, ftype3.NF3DIR, ftype3.NF3LNK):
        status, res = rpc.nfs(MKNOD, nfs3.MKNOD3args.cls(diropargs(d, b"node"), (bad, None)))
        assert status == S.NFS3ERR_BADTYPE
        assert res.dir_wcc.after is not None
    assert not (path / "node").exists()


# --- special files, links ----------------------------------------------------------------------

def test_mknod_fifo_and_socket(env):
    rpc, d, path = env
    for kind, name, check in ((ftype3.NF3FIFO, b"fifo", stat.S_ISFIFO),
                              (ftype3.NF3SOCK, b"sock", stat.S_ISSOCK)):
        status, res = rpc.nfs(MKNOD, nfs3.MKNOD3args.cls(diropargs(d, name), (kind, sattr(mode=0o640))))
        assert status == OK, name
        assert res.obj_attributes.type == kind and res.obj_attributes.mode == 0o640
        st = os.lstat(path / name.decode())
        assert check(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert attrs(rpc, res.obj.data).type == kind
        # not readable as a file
        assert read(rpc, res.obj.data, 0, 10)[0] != OK
    status, res = rpc.nfs(MKNOD, nfs3.MKNOD3args.cls(diropargs(d, b"fifo"), (ftype3.NF3FIFO, NO_SATTR)))
    assert status == S.NFS3ERR_EXIST


def test_link_counts(env):
    rpc, d, path = env
    h = create_ok(rpc, d, b"a")
    status, res = rpc.nfs(LINK, nfs3.LINK3args.cls(fh(h), diropargs(d, b"b")))
    assert status == OK
    assert res.file_attributes.nlink == 2
    assert res.linkdir_wcc.before is not None and res.linkdir_wcc.after is not None
    assert os.stat(path / "a").st_ino == os.stat(path / "b").st_ino
    status, res = lookup(rpc, d, b"b")
    assert status == OK and res.obj_attributes.nlink == 2
    status, res = rpc.nfs(LINK, nfs3.LINK3args.cls(fh(h), diropargs(d, b"b")))
    assert status == S.NFS3ERR_EXIST and res.file_attributes is not None
    assert remove(rpc, d, b"a")[0] == OK
    assert attrs(rpc, h).nlink == 1  # still alive under the other name
    status, res = rpc.nfs(LINK, nfs3.LINK3args.cls(fh(d), diropargs(d, b"dirlink")))
    assert status in (S.NFS3ERR_ISDIR, S.NFS3ERR_PERM, S.NFS3ERR_INVAL)


def test_symlink_and_readlink(env):
    rpc, d, path = env
    for target in (b"some/where/../else", b"/abs/path", b"x" * 1000):
        name = b"l" + str(len(target)).encode() + target[:1].replace(b"/", b"_")
        status, res = symlink(rpc, d, name, target)
        assert status == OK
        assert res.obj_attributes.type == ftype3.NF3LNK
        assert os.readlink(path / name.decode()) == target.decode()
        status, rl = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(res.obj.data)))
        assert status == OK and rl.data == target and rl.symlink_attributes.type == ftype3.NF3LNK
    assert symlink(rpc, d, name, b"again")[0] == S.NFS3ERR_EXIST


# --- ACCESS -----------------------------------------------------------------------------------

ALL = 0x3F
R, L, M, E, D, X = (nfs3.ACCESS3_READ, nfs3.ACCESS3_LOOKUP, nfs3.ACCESS3_MODIFY,
                    nfs3.ACCESS3_EXTEND, nfs3.ACCESS3_DELETE, nfs3.ACCESS3_EXECUTE)


def _access(rpc, h, c, wanted=ALL):
    status, res = rpc.nfs(ACCESS, nfs3.ACCESS3args.cls(fh(h), wanted), c)
    assert status == OK
    assert res.obj_attributes is not None
    return res.access


def test_access_from_mode_bits(env):
    rpc, d, path = env
    f = create_ok(rpc, d, b"file")
    os.chown(path / "file", 1000, 2000)
    os.chmod(path / "file", 0o640)
    sub = mkdir_ok(rpc, d, b"dir")
    os.chown(path / "dir", 1000, 2000)
    os.chmod(path / "dir", 0o750)
    xf = create_ok(rpc, d, b"prog")
    os.chown(path / "prog", 1000, 2000)
    os.chmod(path / "prog", 0o751)
    root = cred(0, 0)
    owner = cred(1000, 1000)
    member = cred(1001, 50, (7, 2000))
    primary = cred(1002, 2000)
    other = cred(1003, 1003, (7, 8))
    # regular file 0640
    assert _access(rpc, f, root) == R | M | E
    assert _access(rpc, f, owner) == R | M | E
    assert _access(rpc, f, member) == R
    assert _access(rpc, f, primary) == R
    assert _access(rpc, f, other) == 0
    assert _access(rpc, f, owner, R) == R       # only what was asked for
    assert _access(rpc, f, owner, X) == 0
    # executable 0751
    assert _access(rpc, xf, root) == R | M | E | X
    assert _access(rpc, xf, owner) == R | M | E | X
    assert _access(rpc, xf, member) == R | X
    assert _access(rpc, xf, other) == X
    # directory 0750
    assert _access(rpc, sub, root) == R | L | M | E | D
    assert _access(rpc, sub, owner) == R | L | M | E | D
    assert _access(rpc, sub, member) == R | L
    assert _access(rpc, sub, other) == 0
    # the owner class decides for the owner even when the group class grants more
    os.chmod(path / "file", 0o074)
    assert _access(rpc, f, cred(1000, 2000)) == 0
    assert _access(rpc, f, member) == R | M | E | X
    assert _access(rpc, f, other) == R
    os.chmod(path / "file", 0o640)
    # AUTH_NONE is nobody
    status, res = rpc.nfs(ACCESS, nfs3.ACCESS3args.cls(fh(f), ALL), None)
    assert status == OK and res.access == 0


# --- FSINFO / FSSTAT / PATHCONF ----------------------------------------------------------------

def test_fsinfo_fsstat_pathconf(env):
    rpc, d, path = env
    status, res = rpc.nfs(FSINFO, nfs3.FSINFO3args.cls(fh(d)))
    assert status == OK
    assert res.rtmax == res.wtmax == 1 << 20
    assert 0 < res.rtpref <= res.rtmax and 0 < res.wtpref <= res.wtmax and res.dtpref > 0
    want = nfs3.FSF3_LINK | nfs3.FSF3_SYMLINK | nfs3.FSF3_HOMOGENEOUS | nfs3.FSF3_CANSETTIME
    assert res.properties & want == want
    assert res.maxfilesize >= 1 << 40
    assert res.obj_attributes is not None
    status, res = rpc.nfs(FSSTAT, nfs3.FSSTAT3args.cls(fh(d)))
    assert status == OK
    assert res.tbytes > 0 and res.tbytes >= res.fbytes >= res.abytes
    assert res.tfiles > 0 and res.tfiles >= res.ffiles >= res.afiles
    vfs = os.statvfs(path)
    assert res.tbytes == vfs.f_blocks * vfs.f_frsize
    status, res = rpc.nfs(PATHCONF, nfs3.PATHCONF3args.cls(fh(d)))
    assert status == OK
    assert res.name_max == 255 and res.no_trunc and res.linkmax >= 1
    assert res.case_preserving and not res.case_insensitive


# --- READDIR / READDIRPLUS ------------------------------------------------------------------------

def test_readdirplus_100k_entries(env):
    rpc, d, path = env
    big = path / "big"
    big.mkdir()
    n = 100_000
    t0 = time.monotonic()
    dfd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            os.close(os.open(f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
    finally:
        os.close(dfd)
    t1 = time.monotonic()
    h = lookup(rpc, d, b"big")[1].object.data
    entries = []
    cookie, verf = 0, ZERO_VERF
    pages = 0
    while True:
        (status, res), size = readdirplus_raw(rpc, h, cookie, verf, 1 << 20, 1 << 20)
        assert status == OK
        assert size <= 1 << 20
        pages += 1
        entries.extend(res.reply.entries)
        if res.reply.eof:
            break
        assert res.reply.entries
        cookie, verf = res.reply.entries[-1].cookie, res.cookieverf
    t2 = time.monotonic()
    print(f"\n100k listing: created in {t1 - t0:.1f}s, READDIRPLUS {pages} pages in {t2 - t1:.1f}s")
    names = [e.name for e in entries]
    assert len(names) == len(set(names)), "duplicate names"
    assert names.count(b".") == 1 and names.count(b"..") == 1
    assert set(names) == {b".", b".."} | {f"f{i:06d}".encode() for i in range(n)}
    cookies = [e.cookie for e in entries]
    assert len(set(cookies)) == len(cookies)
    # spot-check attributes and handles
    for e in entries[2:5] + entries[-3:]:
        assert e.name_attributes is not None and e.name_handle is not None
        assert e.name_attributes.fileid == e.fileid == os.lstat(big / e.name.decode()).st_ino
        status, res = lookup(rpc, h, e.name)
        assert status == OK and res.object.data == e.name_handle.data


def test_readdirplus_lookup_and_getattr_agree(env):
    """A READDIRPLUS entry's attributes and handle are those LOOKUP and GETATTR give for the
    same object, also for a listing served again after the directory and the objects changed
    through the server (a WRITE, a SETATTR, a LINK and a REMOVE).  The Linux client compares
    them: any difference (a time, a size, the link count) would mark the inode changed and
    cost the next stat a GETATTR, which the VM's remove phase would show."""
    rpc, d, path = env

    def agree():
        entries = [e for e in list_dir(rpc, d, plus=True) if e.name not in (b".", b"..")]
        assert len(entries) == 5
        for e in entries:
            status, res = lookup(rpc, d, e.name)
            assert status == OK, e.name
            assert e.name_handle.data == res.object.data
            assert e.name_attributes == res.obj_attributes == attrs(rpc, res.object.data), e.name

    handles = [create_ok(rpc, d, f"f{i}".encode()) for i in range(4)]
    mkdir_ok(rpc, d, b"sub")
    agree()
    status, _ = write(rpc, handles[0], 0, b"x" * 5000)
    assert status == OK
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(handles[1]), sattr(mode=0o600), None))
    assert status == OK
    status, _ = rpc.nfs(LINK, nfs3.LINK3args.cls(fh(handles[2]), diropargs(d, b"f2-link")))
    assert status == OK
    status, _ = remove(rpc, d, b"f3")
    assert status == OK
    status, _ = remove(rpc, d, b"f2-link")  # f2's link count back to 1
    assert status == OK
    mkdir_ok(rpc, d, b"f3")  # 5 entries again: f0 f1 f2 sub and the directory f3
    agree()
    agree()  # the listing again, unchanged


def test_hard_links_have_distinct_cookies(env):
    rpc, d, path = env
    create_ok(rpc, d, b"one")
    os.link(path / "one", path / "two")
    os.link(path / "one", path / "three")
    for plus in (False, True):
        entries = {e.name: e for e in list_dir(rpc, d, plus=plus)}
        assert entries[b"one"].fileid == entries[b"two"].fileid == entries[b"three"].fileid
        cks = {entries[n].cookie for n in (b"one", b"two", b"three")}
        assert len(cks) == 3
        assert entries[b"one"].fileid not in cks or len(cks) == 3
        assert entries[b"."].fileid == os.stat(path).st_ino
        assert entries[b".."].fileid == os.stat(path.parent).st_ino


def test_cookies_stable_while_directory_changes(env):
    rpc, d, path = env
    stable = {f"s{i:04d}".encode() for i in range(600)}
    doomed = [f"z{i:04d}".encode() for i in range(300)]
    for name in stable | set(doomed):
        (path / name.decode()).touch()
    for plus in (False, True):
        seen: list[bytes] = []
        cookie, verf = 0, ZERO_VERF
        page = 0
        while True:
            (status, res), _ = listing_raw(rpc, d, cookie, verf, 1024, plus, maxcount=2048)
            assert status == OK
            seen.extend(e.name for e in res.reply.entries)
            if res.reply.eof:
                break
            cookie, verf = res.reply.entries[-1].cookie, res.cookieverf
            # churn between pages: through the server and behind its back
            page += 1
            for j in range(5):
                new = f"n{plus:d}-{page}-{j}".encode()
                if j % 2:
                    (path / new.decode()).touch()
                else:
                    create_ok(rpc, d, new)
                if doomed:
                    gone = doomed.pop()
                    if j % 2:
                        (path / gone.decode()).unlink()
                    else:
                        assert remove(rpc, d, gone)[0] == OK
        assert page > 20
        assert len(seen) == len(set(seen)), "an entry was repeated"
        assert stable <= set(seen), f"skipped: {sorted(stable - set(seen))[:5]}"
        # nothing returned that never existed
        assert all(n in stable or n[:1] in b"nz" or n in (b".", b"..") for n in seen)
        doomed = [f"z{i:04d}".encode() for i in range(300) if (path / f"z{i:04d}").exists()]


def test_cookie_verifier(env):
    rpc, d, path = env
    for i in range(50):
        (path / f"e{i}").touch()
    (status, res), _ = readdir_raw(rpc, d, 0, ZERO_VERF, 512)
    assert status == OK and not res.reply.eof
    verf = res.cookieverf
    assert verf != ZERO_VERF
    last = res.reply.entries[-1].cookie
    (status, res2), _ = readdir_raw(rpc, d, last, verf, 512)
    assert status == OK and res2.cookieverf == verf
    wrong = bytes(b ^ 0xFF for b in verf)
    (status, res3), _ = readdir_raw(rpc, d, last, wrong, 512)
    assert status == S.NFS3ERR_BAD_COOKIE
    assert res3.dir_attributes is not None
    (status, res4), _ = readdirplus_raw(rpc, d, last, wrong, 512, 4096)
    assert status == S.NFS3ERR_BAD_COOKIE
    # cookie 0 starts over whatever the verifier
    (status, _), _ = readdir_raw(rpc, d, 0, wrong, 512)
    assert status == OK


@pytest.mark.parametrize("plus", [False, True])
def test_listing_reply_never_exceeds_count(env, plus):
    rpc, d, path = env
    for i in range(200):
        (path / ("name-" + "x" * (i % 37) + str(i))).touch()
    for count in (400, 512, 777, 1024, 2000, 4096, 8192, 65536):
        cookie, verf, seen = 0, ZERO_VERF, []
        while True:
            (status, res), size = listing_raw(rpc, d, cookie, verf, count, plus)
            assert status == OK, count
            assert size <= count, (count, size)
            seen.extend(e.name for e in res.reply.entries)
            if res.reply.eof:
                break
            cookie, verf = res.reply.entries[-1].cookie, res.cookieverf
        assert len(seen) == len(set(seen)) == 202


@pytest.mark.parametrize("plus", [False, True])
def test_count_too_small_is_toosmall(env, plus):
    rpc, d, path = env
    (path / "a-rather-long-file-name-to-make-the-entry-big").touch()
    for cookie in (0, 2):
        for count in (16, 100, 140):
            (status, res), size = listing_raw(rpc, d, cookie, ZERO_VERF, count, plus)
            assert status == S.NFS3ERR_TOOSMALL, (cookie, count, status, size)
            assert res.dir_attributes is not None
    # the smallest count that holds one entry gets exactly one
    for count in range(140, 400, 4):
        (status, res), size = listing_raw(rpc, d, 0, ZERO_VERF, count, plus)
        if status == OK:
            assert size <= count and len(res.reply.entries) == 1 and not res.reply.eof
            break
        assert status == S.NFS3ERR_TOOSMALL
    else:
        raise AssertionError("no count up to 400 holds one entry")
    # a count that holds any one entry here (the long name's is 44 bytes more than "."'s)
    count += 44
    cookie, verf, seen = 0, ZERO_VERF, []
    while True:
        (status, res), size = listing_raw(rpc, d, cookie, verf, count, plus)
        assert status == OK and size <= count and res.reply.entries
        seen.extend(e.name for e in res.reply.entries)
        if res.reply.eof:
            break
        cookie, verf = res.reply.entries[-1].cookie, res.cookieverf
    assert seen[:2] == [b".", b".."] and len(seen) == 3


def test_dot_and_dotdot_once(env):
    rpc, d, path = env
    sub = mkdir_ok(rpc, d, b"sub")
    for i in range(30):
        (path / "sub" / f"f{i}").touch()
    for plus in (False, True):
        for maxcount in (600, 4096):
            names = [e.name for e in list_dir(rpc, sub, plus=plus, maxcount=maxcount)]
            assert names.count(b".") == 1 and names.count(b"..") == 1
            assert len(names) == 32
    entries = {e.name: e for e in list_dir(rpc, sub, plus=True)}
    assert entries[b"."].name_handle.data == sub
    assert entries[b".."].name_handle.data == d
    assert entries[b".."].name_attributes.fileid == os.stat(path).st_ino


def test_readdir_of_a_file_is_notdir(env):
    rpc, d, path = env
    f = create_ok(rpc, d, b"f")
    (status, res), _ = readdir_raw(rpc, f, 0, ZERO_VERF, 4096)
    assert status == S.NFS3ERR_NOTDIR
    (status, res), _ = readdirplus_raw(rpc, f, 0, ZERO_VERF, 4096, 4096)
    assert status == S.NFS3ERR_NOTDIR


def test_unchecked_create_of_a_fifo_or_symlink_is_exist_and_never_opens_it(env):
    """knfsd's rule: an existing object that is not a regular file gets EXIST.  Opening a
    FIFO for writing would block a server thread for good."""
    client, d, path = env
    os.mkfifo(path / "pipe")
    os.symlink("/etc/passwd", path / "link")
    for name in (b"pipe", b"link"):
        status, _ = create(client, d, name)
        assert status == S.NFS3ERR_EXIST, (name, status)
    null_ok(client)
    assert stat.S_ISFIFO(os.lstat(path / "pipe").st_mode)
