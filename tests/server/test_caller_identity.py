"""Acting as the caller: every operation is checked as the AUTH_SYS identity of the call,
by the kernel (the server switches its thread's file-system credentials) and, where the
server reuses descriptors and listings, by the server itself -- and ACCESS says the same.
Query directories list only what the caller could reach by path.

The server runs as root here (as the tests do) with root not squashed, so root sets up the
tree and each test speaks as a few ordinary users: 1000 owns things, 1001 does not, group
2000 is shared.  Raw RPC carries supplementary groups; nfs-rs and libnfs take uid and gid in
their URLs.
"""
from __future__ import annotations

import os
import pwd
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from nfsd.fs import identity
from protocol import nfs3
from protocol.rpc import Credentials
from tests.conftest import ServerProcess
from tests.nfs3_helpers import (ACCESS, CREATE, GETATTR, LOOKUP, MKDIR, OK, READ, READDIR, READDIRPLUS,
                                READLINK, REMOVE, RENAME, S, SETATTR, WRITE, cred,
                                diropargs, sattr)
from tests.rpc_client import ROOT, RpcClient, fh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the server must run as root to act as its callers")

OWNER = cred(1000, 1000, (1000,))
OTHER = cred(1001, 1001, (1001,))
MEMBER = cred(1001, 1001, (1001, 2000))  # the same user, in the shared group
R, L, M, E, D, X = (nfs3.ACCESS3_READ, nfs3.ACCESS3_LOOKUP, nfs3.ACCESS3_MODIFY,
                    nfs3.ACCESS3_EXTEND, nfs3.ACCESS3_DELETE, nfs3.ACCESS3_EXECUTE)


def own(p: Path, uid: int, gid: int, mode: int) -> Path:
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    return p


@pytest.fixture
def tree(server: ServerProcess) -> ServerProcess:
    """home1000/ (0755, 1000) with secret (0600), notes (0644), ro-own (0444);
    private/ (0700, 1000) with secret.c; shared/ (2775, 1000:2000) with team (0640);
    pub/ (0777) with a.c; scanned at start."""
    e = server.export
    home = own(mkdir(e / "home1000"), 1000, 1000, 0o755)
    own(write(home / "secret", b"mine"), 1000, 1000, 0o600)
    own(write(home / "notes", b"notes"), 1000, 1000, 0o644)
    own(write(home / "ro-own", b"ro"), 1000, 1000, 0o444)
    private = own(mkdir(e / "private"), 1000, 1000, 0o700)
    own(write(private / "secret.c", b"int hidden_symbol;\n"), 1000, 1000, 0o644)
    own(write(private / "only.h", b"int x;\n"), 1000, 1000, 0o644)
    shared = own(mkdir(e / "shared"), 1000, 2000, 0o2775)
    own(write(shared / "team", b"team"), 1000, 2000, 0o640)
    pub = own(mkdir(e / "pub"), 0, 0, 0o777)
    own(write(pub / "a.c", b"int visible_symbol;\n"), 1000, 1000, 0o644)
    own(write(pub / "diary.txt", b"zanzibar is a secret word\n"), 1000, 1000, 0o600)
    server.restart()  # the start-up scan indexes the tree
    return server


def mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


@pytest.fixture
def rpc(tree: ServerProcess) -> Any:
    with RpcClient(tree.port) as client:
        yield client


@pytest.fixture
def root(tree: ServerProcess, rpc: RpcClient) -> bytes:
    return rpc.mount(tree.export_b)


def look(rpc: RpcClient, d: bytes, path: str, c: Credentials = ROOT) -> bytes:
    for name in path.split("/"):
        status, res = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(d, name.encode())), c)
        assert status == OK, (path, name, status)
        d = res.object.data
    return d


def lookup_status(rpc: RpcClient, d: bytes, name: str, c: Credentials) -> int:
    return rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(d, name.encode())), c)[0]


def read(rpc: RpcClient, h: bytes, c: Credentials) -> tuple[int, bytes | None]:
    status, res = rpc.nfs(READ, nfs3.READ3args.cls(fh(h), 0, 4096), c)
    return status, (res.data if status == OK else None)


def access(rpc: RpcClient, h: bytes, c: Credentials, wanted: int = 0x3F) -> int:
    status, res = rpc.nfs(ACCESS, nfs3.ACCESS3args.cls(fh(h), wanted), c)
    assert status == OK
    return res.access


def listing(rpc: RpcClient, d: bytes, c: Credentials, plus: bool = True) -> tuple[int, set[bytes]]:
    """(status, names) of a whole directory read as ``c``, following cookies."""
    names: set[bytes] = set()
    cookie, verf = 0, b"\0" * 8
    while True:
        if plus:
            status, res = rpc.nfs(READDIRPLUS, nfs3.READDIRPLUS3args.cls(fh(d), cookie, verf, 1024, 4096), c)
        else:
            status, res = rpc.nfs(READDIR, nfs3.READDIR3args.cls(fh(d), cookie, verf, 4096), c)
        if status != OK:
            return status, names
        names.update(e.name for e in res.reply.entries)
        if res.reply.eof:
            return OK, names - {b".", b".."}
        cookie, verf = res.reply.entries[-1].cookie, res.cookieverf


def create(rpc: RpcClient, d: bytes, name: str, c: Credentials, mode: int = 0o644) -> int:
    return rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(d, name.encode()), (1, sattr(mode=mode))), c)[0]


# -- the mechanism -----------------------------------------------------------------------------
def _in_thread(fn: Any) -> Any:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_credentials_are_per_thread_and_restored() -> None:
    identity.self_test()  # switches in a scratch thread; this thread is untouched
    user = identity.Identity(1234, 5678, (11, 22))

    def run() -> Any:
        identity.become(user)
        try:
            inside = identity._thread_ids(), identity.current()
        finally:
            identity.restore(user)
        # a thread started after a call inherits that call's fsgid and groups: its first
        # switch must not trust them, even for the server's own gid and no groups
        child = _in_thread(lambda: (identity._thread_ids(), _as(identity.Identity(0, 0, ())),
                                    _as(identity.Identity(99, 99, ()))))
        return inside, identity._thread_ids(), identity.current(), child

    def _as(ident: identity.Identity) -> Any:
        identity.become(ident)
        try:
            return identity._thread_ids()
        finally:
            identity.restore(ident)

    (inside, who), after, current, (inherited, as_root, as_99) = _in_thread(run)
    assert inside == ("1234", "5678", ["11", "22"]) and who == user
    assert after[0] == "0" and current is None  # fsuid back to root; fsgid stays (harmless)
    assert inherited == ("0", "5678", ["11", "22"])
    assert as_root[:2] == ("0", "0")
    assert as_99 == ("99", "99", [])
    assert identity._thread_ids()[:2] == ("0", "0") and identity.current() is None


# -- reading, writing, creating ----------------------------------------------------------------
def test_other_users_private_file(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    secret = look(rpc, root, "home1000/secret", OTHER)  # the directory is searchable
    assert read(rpc, secret, OTHER) == (S.NFS3ERR_ACCES, None)
    assert read(rpc, secret, OWNER) == (OK, b"mine")
    # the owner's read left the file's descriptor open in the server: still refused
    assert read(rpc, secret, OTHER) == (S.NFS3ERR_ACCES, None)
    status, res = rpc.nfs(WRITE, nfs3.WRITE3args.cls(fh(secret), 0, 1, 2, b"X"), OTHER)
    assert status == S.NFS3ERR_ACCES and res.file_wcc.after is not None
    notes = look(rpc, root, "home1000/notes")
    assert read(rpc, notes, OTHER) == (OK, b"notes")
    status, _ = rpc.nfs(WRITE, nfs3.WRITE3args.cls(fh(notes), 0, 1, 2, b"X"), OTHER)
    assert status == S.NFS3ERR_ACCES
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(size=0), None), OTHER)
    assert status == S.NFS3ERR_ACCES
    assert (tree.export / "home1000" / "notes").read_bytes() == b"notes"
    assert (tree.export / "home1000" / "secret").read_bytes() == b"mine"


def test_owner_may_write_their_read_only_file(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    """knfsd's owner override: ``cp`` of a 0444 file, git's object files."""
    ro = look(rpc, root, "home1000/ro-own")
    status, _ = rpc.nfs(WRITE, nfs3.WRITE3args.cls(fh(ro), 0, 2, 2, b"RW"), OWNER)
    assert status == OK
    assert (tree.export / "home1000" / "ro-own").read_bytes() == b"RW"
    status, _ = rpc.nfs(WRITE, nfs3.WRITE3args.cls(fh(ro), 0, 2, 2, b"no"), OTHER)
    assert status == S.NFS3ERR_ACCES


def test_create_needs_write_permission_on_the_directory(tree: ServerProcess, rpc: RpcClient,
                                                        root: bytes) -> None:
    home = look(rpc, root, "home1000")
    assert create(rpc, home, "intruder", OTHER) == S.NFS3ERR_ACCES
    status, _ = rpc.nfs(MKDIR, nfs3.MKDIR3args.cls(diropargs(home, b"d"), sattr(mode=0o755)), OTHER)
    assert status == S.NFS3ERR_ACCES
    status, _ = rpc.nfs(REMOVE, nfs3.REMOVE3args.cls(diropargs(home, b"notes")), OTHER)
    assert status == S.NFS3ERR_ACCES
    status, _ = rpc.nfs(RENAME, nfs3.RENAME3args.cls(diropargs(home, b"notes"), diropargs(root, b"pub/x")), OTHER)
    assert status in (S.NFS3ERR_ACCES, S.NFS3ERR_INVAL)
    assert not (tree.export / "home1000" / "intruder").exists()
    assert create(rpc, home, "mine", OWNER) == OK
    st = (tree.export / "home1000" / "mine").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    # sticky-less 0777 directory: anyone creates, and owns what they create
    pub = look(rpc, root, "pub")
    assert create(rpc, pub, "by-1001", OTHER) == OK
    st = (tree.export / "pub" / "by-1001").stat()
    assert (st.st_uid, st.st_gid) == (1001, 1001)
    # EXCLUSIVE (run in a worker thread, its verifier written to LMDB) acts as the caller too
    excl = nfs3.CREATE3args.cls(diropargs(pub, b"excl"), (2, b"verifier"))
    assert rpc.nfs(CREATE, excl, OTHER)[0] == OK
    assert rpc.nfs(CREATE, excl, OTHER)[0] == OK  # a retransmission
    st = (tree.export / "pub" / "excl").stat()
    assert (st.st_uid, st.st_gid) == (1001, 1001)
    excl_home = nfs3.CREATE3args.cls(diropargs(home, b"excl"), (2, b"verifier"))
    assert rpc.nfs(CREATE, excl_home, OTHER)[0] == S.NFS3ERR_ACCES


def test_chmod_and_chown_need_ownership(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    notes = look(rpc, root, "home1000/notes")
    status, res = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(mode=0o666), None), OTHER)
    assert status == S.NFS3ERR_PERM and res.obj_wcc.after is not None
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(uid=1001), None), OTHER)
    assert status == S.NFS3ERR_PERM
    assert stat.S_IMODE((tree.export / "home1000" / "notes").stat().st_mode) == 0o644
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(mode=0o640), None), OWNER)
    assert status == OK
    # giving a file away is root's privilege; a no-op chown is anyone's own business
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(uid=1001), None), OWNER)
    assert status == S.NFS3ERR_PERM
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(uid=1000, gid=1000), None), OWNER)
    assert status == OK
    # chgrp to a group the owner is in (a supplementary one)
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(gid=2000), None), OWNER)
    assert status == S.NFS3ERR_PERM
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(gid=2000), None), cred(1000, 1000, (2000,)))
    assert status == OK
    st = (tree.export / "home1000" / "notes").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o640)
    # root (not squashed here) may
    status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(notes), sattr(uid=1001), None), ROOT)
    assert status == OK and (tree.export / "home1000" / "notes").stat().st_uid == 1001


def test_access_agrees_with_enforcement(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    secret = look(rpc, root, "home1000/secret")
    home = look(rpc, root, "home1000")
    assert access(rpc, secret, OTHER) == 0
    assert access(rpc, secret, OWNER) == R | M | E
    assert access(rpc, home, OTHER) == R | L
    assert access(rpc, home, OWNER) == R | L | M | E | D
    team = look(rpc, root, "shared/team")
    assert access(rpc, team, OTHER) == 0
    assert access(rpc, team, MEMBER) == R
    # and what ACCESS says is what happens
    assert read(rpc, team, OTHER)[0] == S.NFS3ERR_ACCES
    assert read(rpc, team, MEMBER) == (OK, b"team")


def test_supplementary_groups_grant_access(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    shared = look(rpc, root, "shared")
    assert create(rpc, shared, "nope", OTHER) == S.NFS3ERR_ACCES
    assert create(rpc, shared, "file", MEMBER) == OK
    status, _ = rpc.nfs(MKDIR, nfs3.MKDIR3args.cls(diropargs(shared, b"sub"), sattr(mode=0o775)), MEMBER)
    assert status == OK
    # the set-group-ID directory: new objects take its group; subdirectories keep the bit
    f = (tree.export / "shared" / "file").stat()
    assert (f.st_uid, f.st_gid) == (1001, 2000)
    d = (tree.export / "shared" / "sub").stat()
    assert (d.st_uid, d.st_gid) == (1001, 2000) and d.st_mode & stat.S_ISGID
    assert stat.S_IMODE(d.st_mode) & 0o777 == 0o775


def test_touch_by_a_writer_who_is_not_the_owner(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    """``touch`` sends both times as "server time": write permission suffices (utimensat
    with NULL), as for a local process; explicit times stay the owner's."""
    own(write(tree.export / "shared" / "log", b""), 1000, 2000, 0o660)
    os.utime(tree.export / "shared" / "log", ns=(1_000_000_000, 1_000_000_000))
    log = look(rpc, root, "shared/log")
    now = nfs3.sattr3.cls(None, None, None, None, (1, None), (1, None))
    assert rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(log), now, None), OTHER)[0] == S.NFS3ERR_ACCES
    assert rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(log), now, None), MEMBER)[0] == OK
    assert (tree.export / "shared" / "log").stat().st_mtime_ns > 1_000_000_000
    explicit = nfs3.sattr3.cls(None, None, None, None, (2, nfs3.nfstime3.cls(5, 0)), (2, nfs3.nfstime3.cls(5, 0)))
    assert rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(log), explicit, None), MEMBER)[0] == S.NFS3ERR_PERM
    assert rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(log), explicit, None), OWNER)[0] == OK
    assert (tree.export / "shared" / "log").stat().st_mtime_ns == 5_000_000_000


def _times(rpc: RpcClient, h: bytes, atime: int, mtime: int, c: Credentials) -> int:
    """SETATTR of the times only, each a time_how (0 leave, 1 server time, 2 a client time)."""
    client = nfs3.nfstime3.cls(7, 0)
    sa = nfs3.sattr3.cls(None, None, None, None, (atime, client if atime == 2 else None),
                         (mtime, client if mtime == 2 else None))
    return rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(h), sa, None), c)[0]


def test_one_timestamp_to_server_time_needs_write_permission_not_ownership(
        tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    """``touch -a`` / ``touch -m`` send one time as "server time" and leave the other: as in
    knfsd and Ganesha, write permission suffices (the kernel's utimensat would want
    ownership), a caller without it gets ACCES (not PERM), and the other timestamp is left
    exactly as it is (not rewritten from a read)."""
    path = own(write(tree.export / "shared" / "log", b""), 1000, 2000, 0o660)
    old = 1_000_000_123
    os.utime(path, ns=(old, old))
    log = look(rpc, root, "shared/log")
    assert _times(rpc, log, 1, 0, OTHER) == S.NFS3ERR_ACCES
    assert _times(rpc, log, 0, 1, OTHER) == S.NFS3ERR_ACCES
    assert (path.stat().st_atime_ns, path.stat().st_mtime_ns) == (old, old)
    assert _times(rpc, log, 1, 0, MEMBER) == OK  # touch -a
    assert path.stat().st_atime_ns > old and path.stat().st_mtime_ns == old
    os.utime(path, ns=(old, old))
    assert _times(rpc, log, 0, 1, MEMBER) == OK  # touch -m
    assert path.stat().st_atime_ns == old and path.stat().st_mtime_ns > old
    # a client's time, even for one timestamp, stays the owner's
    assert _times(rpc, log, 2, 0, MEMBER) == S.NFS3ERR_PERM
    assert _times(rpc, log, 1, 2, MEMBER) == S.NFS3ERR_PERM
    assert _times(rpc, log, 2, 0, OTHER) == S.NFS3ERR_PERM
    os.utime(path, ns=(old, old))
    assert _times(rpc, log, 2, 0, OWNER) == OK
    assert (path.stat().st_atime_ns, path.stat().st_mtime_ns) == (7_000_000_000, old)
    assert _times(rpc, log, 1, 0, OWNER) == OK
    assert path.stat().st_mtime_ns == old


def test_create_unchecked_of_an_existing_file_applies_only_the_size(
        tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    """Two clients racing ``open(O_CREAT|O_TRUNC)``: the loser's CREATE UNCHECKED finds the
    file.  As knfsd (do_nfsd_create), only the size is applied to it: a writer who does not
    own it truncates it (no PERM for the mode it also sent), the owner's mode is kept; a
    caller without write permission gets ACCES and the data stays."""
    pub = look(rpc, root, "pub")
    shared = own(write(tree.export / "pub" / "shared.log", b"data"), 1000, 1000, 0o666)
    how = (nfs3.createmode3.UNCHECKED, sattr(mode=0o644, size=0))
    status, res = rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(pub, b"shared.log"), how), OTHER)
    assert status == OK
    st = shared.stat()
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_uid) == (0, 0o666, 1000)
    assert res.obj_attributes.size == 0 and res.obj_attributes.mode == 0o666
    mine = own(write(tree.export / "pub" / "mine", b"data"), 1000, 1000, 0o640)
    how = (nfs3.createmode3.UNCHECKED, sattr(mode=0o600))
    assert rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(pub, b"mine"), how), OWNER)[0] == OK
    assert stat.S_IMODE(mine.stat().st_mode) == 0o640 and mine.read_bytes() == b"data"
    ro = own(write(tree.export / "pub" / "ro", b"data"), 1000, 1000, 0o644)
    how = (nfs3.createmode3.UNCHECKED, sattr(mode=0o644, size=0))
    assert rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(pub, b"ro"), how), OTHER)[0] == S.NFS3ERR_ACCES
    assert ro.read_bytes() == b"data"
    # the shared descriptor a writer opened is not reused for someone who may not write
    assert rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(pub, b"ro"), how), OWNER)[0] == OK
    write(ro, b"data")
    assert rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(pub, b"ro"), how), OTHER)[0] == S.NFS3ERR_ACCES
    assert ro.read_bytes() == b"data"


def test_directories_without_permission(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    private = look(rpc, root, "private")  # root looks it up; the handle is no key
    assert listing(rpc, private, OWNER) == (OK, {b"secret.c", b"only.h"})
    # the owner's listing is cached in the server: not for others
    assert listing(rpc, private, OTHER)[0] == S.NFS3ERR_ACCES
    assert listing(rpc, private, OTHER, plus=False)[0] == S.NFS3ERR_ACCES
    assert lookup_status(rpc, private, "secret.c", OTHER) == S.NFS3ERR_ACCES
    assert lookup_status(rpc, private, "secret.c", OWNER) == OK
    assert create(rpc, private, "x", OTHER) == S.NFS3ERR_ACCES


def test_handles_do_not_depend_on_who_looked_first(tree: ServerProcess) -> None:
    """A handle carries the inode generation, which takes opening the file to read: a
    caller who may not read it gets the same handle as one who may, also after a restart."""
    with RpcClient(tree.port) as rpc:
        root = rpc.mount(tree.export_b)
        by_other = look(rpc, root, "home1000/secret", OTHER)
    tree.restart()
    with RpcClient(tree.port) as rpc:
        root = rpc.mount(tree.export_b)
        assert look(rpc, root, "home1000/secret", ROOT) == by_other
        status, _ = rpc.nfs(ACCESS, nfs3.ACCESS3args.cls(fh(by_other), R), OTHER)
        assert status == OK


def test_identity_in_the_url_nfs_rs(tree: ServerProcess) -> None:
    nfs_rs = pytest.importorskip("nfs_rs")
    connect = lambda uid, gid: nfs_rs.Client.connect(  # noqa: E731
        tree.url(uid=uid, gid=gid), connect_timeout=10, operation_timeout=30)
    with connect(1001, 1001) as other:
        with pytest.raises(nfs_rs.NfsError, match="access denied"):
            with other.open("home1000/secret", "rb") as f:
                f.read()
        with pytest.raises(nfs_rs.NfsError, match="access denied"):
            with other.open("home1000/new", "wb") as f:
                f.write(b"x")
        with pytest.raises(nfs_rs.NfsError, match="permission denied"):
            other.chmod("home1000/notes", 0o666)
        with pytest.raises(nfs_rs.NfsError, match="access denied"):
            other.listdir("private")
        assert not other.access("home1000/secret", os.R_OK)
        with other.open("home1000/notes", "rb") as f:
            assert f.read() == b"notes"
    with connect(1000, 1000) as owner:
        assert owner.access("home1000/secret", os.R_OK | os.W_OK)
        with owner.open("home1000/secret", "rb") as f:
            assert f.read() == b"mine"
        with owner.open("home1000/new", "wb") as f:
            f.write(b"x")
        owner.chmod("home1000/notes", 0o664)
    st = (tree.export / "home1000" / "new").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert stat.S_IMODE((tree.export / "home1000" / "notes").stat().st_mode) == 0o664


def test_identity_in_the_url_libnfs(tree: ServerProcess) -> None:
    def cat(path: str, uid: int, gid: int) -> subprocess.CompletedProcess:
        return subprocess.run(["nfs-cat", tree.url(path, uid=str(uid), gid=str(gid))],
                              capture_output=True, timeout=60)
    denied = cat("home1000/secret", 1001, 1001)
    assert denied.returncode != 0 and b"mine" not in denied.stdout
    assert cat("home1000/secret", 1000, 1000).stdout == b"mine"
    ls = subprocess.run(["nfs-ls", tree.url("private", uid="1001", gid="1001")], capture_output=True, timeout=60)
    assert b"secret.c" not in ls.stdout
    ls = subprocess.run(["nfs-ls", tree.url("private", uid="1000", gid="1000")], capture_output=True, timeout=60)
    assert b"secret.c" in ls.stdout


# -- query directories ------------------------------------------------------------------------
def test_query_directories_list_only_what_the_caller_can_reach(tree: ServerProcess, rpc: RpcClient,
                                                               root: bytes) -> None:
    for who in (ROOT, OWNER):  # root (not squashed) and the owner see the private file
        c_dir = look(rpc, root, "ext:/c", who)
        assert listing(rpc, c_dir, who) == (OK, {b"a.c", b"secret.c"})
    c_dir = look(rpc, root, "ext:/c", OTHER)
    assert listing(rpc, c_dir, OTHER) == (OK, {b"a.c"})
    assert listing(rpc, c_dir, OTHER, plus=False) == (OK, {b"a.c"})
    assert lookup_status(rpc, c_dir, "secret.c", OTHER) == S.NFS3ERR_NOENT
    assert lookup_status(rpc, c_dir, "a.c", OTHER) == OK
    # the link handle found by the owner does not tell 1001 where it points
    link = look(rpc, c_dir, "secret.c", OWNER)
    status, _ = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(link)), OTHER)
    assert status == S.NFS3ERR_ACCES
    status, res = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(link)), OWNER)
    assert status == OK and res.data == b"../../private/secret.c"
    # field directories list the values of reachable files only
    ext = look(rpc, root, "ext:", OTHER)
    assert listing(rpc, ext, OTHER)[1] >= {b"c", b"txt"} and b"h" not in listing(rpc, ext, OTHER)[1]
    assert b"h" in listing(rpc, ext, OWNER)[1]
    assert lookup_status(rpc, ext, "h", OTHER) == S.NFS3ERR_NOENT
    # a query directory scoped inside the private directory cannot be read at all
    assert lookup_status(rpc, look(rpc, root, "private"), "ext:", OTHER) == S.NFS3ERR_ACCES
    # and back: the owner's view was not spoiled by the other's
    assert listing(rpc, c_dir, OWNER) == (OK, {b"a.c", b"secret.c"})


def test_a_query_directorys_size_counts_only_what_the_caller_sees(tree: ServerProcess, rpc: RpcClient,
                                                                   root: bytes) -> None:
    """A query directory's size is its number of entries (``ls -l FIELD:`` shows counts):
    to a caller who may not see them all, it must not tell how many hidden files match."""
    def size(h: bytes, c: Credentials) -> int:
        status, res = rpc.nfs(GETATTR, nfs3.GETATTR3args.cls(fh(h)), c)
        assert status == OK
        return res.obj_attributes.size
    c_dir, ext = look(rpc, root, "ext:/c"), look(rpc, root, "ext:")
    assert listing(rpc, c_dir, ROOT)[1] == {b"a.c", b"secret.c"}
    everyone = listing(rpc, ext, ROOT)[1]
    assert (size(c_dir, ROOT), size(c_dir, OWNER), size(ext, ROOT)) == (2, 2, len(everyone))
    assert size(c_dir, OTHER) == 1  # a.c; not private/secret.c
    assert size(ext, OTHER) == len(listing(rpc, ext, OTHER)[1]) < len(everyone)  # no "h"
    assert size(c_dir, ROOT) == 2  # the other's view changed nothing for root
    # Value directories listed in a field directory (READDIRPLUS gives their sizes): the
    # field directory's counts only to a caller whose view of it hid nothing.
    def sizes(d: bytes, c: Credentials) -> dict[bytes, int]:
        status, res = rpc.nfs(READDIRPLUS, nfs3.READDIRPLUS3args.cls(fh(d), 0, b"\0" * 8, 1024, 65536), c)
        assert status == OK and res.reply.eof
        return {e.name: e.name_attributes.size for e in res.reply.entries if e.name not in (b".", b"..")}
    pub = look(rpc, root, "pub")
    assert sizes(look(rpc, pub, "ext:", OTHER), OTHER) == {b"c": 1, b"txt": 1}  # pub/ hides nothing
    try:  # (the owner value is the user's name where this host has one)
        owner = pwd.getpwuid(1000).pw_name.encode()
    except KeyError:
        owner = b"1000"
    assert sizes(look(rpc, root, "owner:", OTHER), OTHER)[owner] == 0  # private/ hides some
    assert sizes(look(rpc, root, "owner:", ROOT), ROOT)[owner] > 2


def test_content_queries_need_read_permission(tree: ServerProcess, rpc: RpcClient, root: bytes) -> None:
    """pub/diary.txt is reachable but 0600: its name is anyone's (ls shows it), its words
    are not."""
    assert b"diary.txt" in listing(rpc, look(rpc, root, "pub/ext:/txt", OTHER), OTHER)[1]
    words = look(rpc, root, "text:", OTHER)
    assert b"zanzibar" not in listing(rpc, words, OTHER)[1]
    assert b"zanzibar" in listing(rpc, words, OWNER)[1]
    assert lookup_status(rpc, words, "zanzibar", OTHER) == S.NFS3ERR_NOENT
    hit = look(rpc, root, "text:/zanzibar", OWNER)
    assert listing(rpc, hit, OWNER) == (OK, {b"diary.txt"})
    assert listing(rpc, hit, OTHER) == (OK, set())
    symbols = look(rpc, root, "exports:", OTHER)
    assert listing(rpc, symbols, OTHER)[1] == {b"visible_symbol"}
    assert listing(rpc, symbols, ROOT)[1] == {b"visible_symbol", b"hidden_symbol", b"x"}


def test_query_directories_through_nfs_rs(tree: ServerProcess) -> None:
    nfs_rs = pytest.importorskip("nfs_rs")
    with nfs_rs.Client.connect(tree.url(uid=1001, gid=1001), connect_timeout=10, operation_timeout=30) as c:
        assert sorted(n for n in c.listdir("ext:/c") if n not in (".", "..")) == ["a.c"]
    with nfs_rs.Client.connect(tree.url(uid=1000, gid=1000), connect_timeout=10, operation_timeout=30) as c:
        assert sorted(n for n in c.listdir("ext:/c") if n not in (".", "..")) == ["a.c", "secret.c"]


def test_clashes_are_renamed_among_what_the_caller_sees(tree: ServerProcess) -> None:
    """Another user's private secret.txt matches ``text:/diary`` too: the owner of the one
    they can read sees it as secret.txt, not as a clash name (which would tell that another
    matching secret.txt exists; issue 11)."""
    e = tree.export
    other_home = own(mkdir(e / "home1001"), 1001, 1001, 0o755)
    own(write(other_home / "secret.txt", b"dear diary, private\n"), 1001, 1001, 0o600)
    own(write(e / "home1000" / "secret.txt", b"dear diary, mine\n"), 1000, 1000, 0o644)
    tree.restart()
    with RpcClient(tree.port) as rpc:
        root = rpc.mount(tree.export_b)
        for plus in (True, False):
            everyone = listing(rpc, look(rpc, root, "text:/diary"), ROOT, plus)[1]
            assert len(everyone) == 2 and all(n.startswith(b"secret~") for n in everyone), everyone
            hits = look(rpc, root, "text:/diary", OWNER)
            assert listing(rpc, hits, OWNER, plus) == (OK, {b"secret.txt"})
            assert listing(rpc, hits, OTHER, plus) == (OK, everyone)  # 1001 may read both
        link = look(rpc, hits, "secret.txt", OWNER)
        status, res = rpc.nfs(READLINK, nfs3.READLINK3args.cls(fh(link)), OWNER)
        assert status == OK and res.data == b"../../home1000/secret.txt"
        for name in everyone:  # the names root is shown are not the owner's to look up
            assert lookup_status(rpc, hits, name.decode(), OWNER) == S.NFS3ERR_NOENT
        assert lookup_status(rpc, hits, "secret.txt", ROOT) == S.NFS3ERR_NOENT


def test_namespace_changes_in_a_directory_the_caller_may_not_read(tree: ServerProcess, rpc: RpcClient,
                                                                   root: bytes) -> None:
    """A drop box (0733: write and search, no read): creating, renaming and removing there
    succeed for others, though the directory's fsync before the reply needs to open it for
    reading (the server does that as itself)."""
    box = own(mkdir(tree.export / "dropbox"), 1000, 1000, 0o733)
    d = look(rpc, root, "dropbox")
    assert create(rpc, d, "from-1001", OTHER) == OK
    status, _ = rpc.nfs(RENAME, nfs3.RENAME3args.cls(diropargs(d, b"from-1001"), diropargs(d, b"renamed")), OTHER)
    assert status == OK
    assert (box / "renamed").stat().st_uid == 1001
    status, _ = rpc.nfs(REMOVE, nfs3.REMOVE3args.cls(diropargs(d, b"renamed")), OTHER)
    assert status == OK
    assert not (box / "renamed").exists()
