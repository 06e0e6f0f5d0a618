"""Exports: the exports(5) syntax, client rules, read-only exports, squashing, and the
MOUNT procedures that reflect them -- the syntax unit-tested, the rest against a running
server with raw RPC (a credential per call) and with nfs-rs and libnfs, clients nobody
here wrote.

The server runs as root here (as the tests do), so it acts as each caller.  The test client
connects from 127.0.0.1; rules naming 10.1.2.3 are only specifications: nothing ever
contacts that address.
"""
from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from nfsd.exports.guard import ExportPolicy
from nfsd.fs.handles import pack_real
from nfsd.nfs3.errors import NfsError
from nfsd.exports.rules import (BARE_DEFAULTS, ExportsError, Options, load_exports,
                          parse_export_arg, parse_exports)
from protocol import nfs3
from protocol.mount3 import MOUNT3, mountstat3
from protocol.nfs3 import nfsstat3
from protocol.rpc import AUTH_NONE, Credentials
from tests.conftest import REPO, ServerProcess
from tests.nfs3_helpers import (ACCESS, COMMIT, CREATE, GETATTR, LINK, LOOKUP, MKDIR, MKNOD, OK,
                                READ, READDIR, REMOVE, RENAME, RMDIR, SETATTR, SYMLINK, WRITE, S,
                                NO_SATTR, cred, diropargs, sattr)
from tests.rpc_client import ROOT, RpcClient, fh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the server must run as root to act as its callers")


# -- the syntax ----------------------------------------------------------------------------------
def test_lines_comments_continuations_quotes() -> None:
    text = '''
# a comment line
/srv/a   10.0.0.0/8(rw,no_root_squash) 127.0.0.1(ro)  *(ro,all_squash,anonuid=1000,anongid=100)  # trailing
"/srv/with space"  192.168.1.0/255.255.255.0(rw,insecure) \\
                   2001:db8::/32(rw)
/srv/oct\\040al (rw)
/srv/bare
'''
    a, spaced, octal, bare = parse_exports(text, "x")
    assert a.path == "/srv/a"
    assert [c.pattern for c in a.clients] == ["10.0.0.0/8", "127.0.0.1", "*"]
    assert a.clients[0].options == Options(writable=True, root_squash=False)
    assert a.clients[1].options == Options()  # exports(5) defaults: ro, root_squash, secure
    assert a.clients[2].options == Options(all_squash=True, anonuid=1000, anongid=100)
    assert spaced.path == "/srv/with space"
    assert [c.pattern for c in spaced.clients] == ["192.168.1.0/255.255.255.0", "2001:db8::/32"]
    assert spaced.clients[0].options == Options(writable=True, secure=False)
    assert octal.path == "/srv/oct al" and octal.clients[0].pattern == "*"
    assert octal.clients[0].options.writable
    assert bare.path == "/srv/bare" and bare.clients[0].pattern == "*"
    assert bare.clients[0].options == Options()


def test_space_before_parenthesis_makes_two_specifications() -> None:
    """knfsd's classic trap, kept: ``host (rw)`` is host with defaults plus (rw) for all."""
    e, = parse_exports("/srv 10.1.2.3 (rw)")
    assert [(c.pattern, c.options.writable) for c in e.clients] == [("10.1.2.3", False), ("*", True)]


def test_matching_first_rule_wins() -> None:
    e, = parse_exports("/srv 127.0.0.0/8(ro) 127.0.0.1(rw) 10.0.0.0/255.0.0.0(rw) ::1(rw) 2001:db8::/32(rw)")

    def pattern(host: str) -> str | None:
        rule = e.rule_for(host)
        return rule.pattern if rule is not None else None
    assert pattern("127.0.0.1") == "127.0.0.0/8"
    assert pattern("::ffff:127.0.0.1") == "127.0.0.0/8"  # IPv4-mapped
    assert pattern("10.200.0.1") == "10.0.0.0/255.0.0.0"
    assert pattern("::1") == "::1"
    assert pattern("2001:db8::5") == "2001:db8::/32"
    assert e.rule_for("192.168.0.1") is None
    assert e.rule_for("not an address") is None


def test_host_names_resolve_at_start() -> None:
    e, = parse_exports("/srv localhost(rw)")
    assert e.rule_for("127.0.0.1") is not None
    with pytest.raises(ExportsError, match="cannot resolve host 'no-such-host.invalid'"):
        parse_exports("/srv no-such-host.invalid(rw)")


def test_sync_is_the_default_and_async_is_understood() -> None:
    e, = parse_exports("/srv 10.0.0.1(rw) 10.0.0.2(rw,async) 10.0.0.3(async,sync) 10.0.0.4(sync,async)")
    assert [c.options.sync for c in e.clients] == [True, False, True, False]  # the last one said wins
    assert BARE_DEFAULTS.sync and parse_export_arg("/srv").clients[0].options.sync


@pytest.mark.parametrize("line, message", [
    ("/srv *(rw,asynch)", "unknown or unsupported export option 'asynch'"),
    ("/srv *(rw,fsid=0)", "unknown or unsupported export option 'fsid=0'"),
    ("/srv *(anonuid=x)", "anonuid wants a number"),
    ("/srv *(anongid=-1)", "anongid wants a number"),
    ("/srv @group(rw)", "netgroups"),
    ("/srv *.example.com(rw)", "wildcards"),
    ("/srv 10.0.0.0/33(rw)", "bad network"),
    ("srv *(rw)", "must be absolute"),
    ('"/srv *(rw)', "unterminated quote"),
    ("/srv -rw host", "line-wide default options"),
    ("/srv host(rw", "malformed client"),
])
def test_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(ExportsError, match=message) as info:
        parse_exports("# first\n" + line, "exports.txt")
    assert str(info.value).startswith("exports.txt:2: ")


def test_export_arguments_and_merging(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    bare = parse_export_arg(str(d))
    assert bare.clients[0].pattern == "*" and bare.clients[0].options == BARE_DEFAULTS
    assert BARE_DEFAULTS == Options(writable=True, root_squash=True, secure=False)
    line = parse_export_arg(f"{d} 10.1.2.3(rw)")
    assert line.path == str(d) and line.clients[0].pattern == "10.1.2.3"
    f = tmp_path / "exports"
    f.write_text(f"{d} 10.1.2.3(rw)\n{d}/ 10.1.2.4(ro)\n")
    merged, = load_exports([str(d)], str(f))
    assert [c.pattern for c in merged.clients] == ["10.1.2.3", "10.1.2.4", "*"]
    with pytest.raises(ExportsError, match="nothing to export"):
        load_exports([], None)
    with pytest.raises(ExportsError, match="cannot read"):
        load_exports([], str(tmp_path / "missing"))


def test_squashing_follows_knfsd() -> None:
    e, = parse_exports("/srv 10.0.0.1(rw) 10.0.0.2(rw,no_root_squash) 10.0.0.3(rw,all_squash,anonuid=7,anongid=8) "
                       "10.0.0.4(rw,anonuid=5,anongid=6)")
    root_sq, no_sq, all_sq, anon = (c for c in e.clients)
    ident = lambda spec, c: spec.effective(c)[1]  # noqa: E731
    assert ident(root_sq, cred(0, 0, (0, 4, 27))) == (65534, 65534, (4, 27, 65534))
    assert ident(root_sq, cred(1000, 0, (1000,))) == (1000, 65534, (1000,))  # gid 0 squashed alone
    assert ident(root_sq, cred(1000, 1000, (5,))) == (1000, 1000, (5,))
    assert ident(no_sq, cred(0, 0, (0,))) == (0, 0, (0,))
    assert ident(all_sq, cred(1000, 1000, (5, 6))) == (7, 8, ())
    assert ident(anon, cred(0, 0)) == (5, 6, ())
    nobody = Credentials(AUTH_NONE)
    assert ident(no_sq, nobody) == (65534, 65534, ())  # AUTH_NONE is anonymous, whatever the rule
    assert ident(anon, nobody) == (5, 6, ())
    c = cred(1000, 1000, (5,))
    assert root_sq.effective(c)[0] is c  # unchanged credentials are the same object


def test_policy_secure_port() -> None:
    e, = parse_exports("/srv 127.0.0.1(rw,secure) *(rw,insecure)")
    policy = ExportPolicy({1: e})
    assert policy.allowed(1, ("127.0.0.1", 700)) is e.clients[0]
    assert policy.allowed(1, ("127.0.0.1", 40000)) is None  # the first match decides
    assert policy.allowed(1, ("10.9.9.9", 40000)) is e.clients[1]
    assert policy.groups(1) == [b"127.0.0.1", b"*"]


def test_policy_rule_remembered_per_export_and_client() -> None:
    """``ExportPolicy.rule`` remembers a rule by the handle's first four bytes and the
    client: another client, another export, a refused client and a handle that is not
    ours are each still decided as on their first call."""
    e1, = parse_exports("/a 127.0.0.1(rw,insecure)")
    e2, = parse_exports("/b *(ro,insecure)")
    policy = ExportPolicy({1: e1, 2: e2})
    fh1, fh2 = pack_real(1, 10, 0), pack_real(2, 10, 0)
    ok, refused = ("127.0.0.1", 40000), ("10.0.0.2", 40000)
    for _ in range(2):  # the second round is answered from what the first remembered
        assert policy.rule(fh1, ok) is e1.clients[0]
        assert policy.rule(pack_real(1, 99, 7), ok) is e1.clients[0]  # same export, other object
        assert policy.rule(fh2, ok) is e2.clients[0]
        assert policy.rule(fh2, refused) is e2.clients[0]
        with pytest.raises(NfsError) as info:
            policy.rule(fh1, refused)
        assert info.value.status == nfsstat3.NFS3ERR_ACCES
        for bad in (b"\x02" + fh1[1:], fh1[:3]):  # another handle version; too short
            with pytest.raises(NfsError) as info:
                policy.rule(bad, ok)
            assert info.value.status == nfsstat3.NFS3ERR_BADHANDLE


# -- against the server --------------------------------------------------------------------------
def _restart_with(server: ServerProcess, text: str) -> None:
    f = server.state_dir.parent / "exports"
    f.write_text(text)
    server.args = ("--exports", str(f))
    server.restart()


def _mnt(rpc: RpcClient, path: bytes, c: Credentials = ROOT) -> tuple[int, bytes | None]:
    status, ok = rpc.call(MOUNT3, 1, path, c)
    return status, (ok.fhandle if status == mountstat3.MNT3_OK else None)


def _privileged_client(port: int) -> RpcClient:
    for _ in range(50):
        try:
            return RpcClient(port, source_port=random.randint(600, 1020))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError("no free privileged port")


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, int, bytes | None]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, data)
    return out


def test_mount_of_a_missing_path_below_a_query_directory(server: ServerProcess) -> None:
    """NOENT, as for a missing real path; a result that is a file is NOTDIR."""
    (server.export / "note.txt").write_text("zanzibar\n")
    server.restart()
    with RpcClient(server.port) as rpc:
        assert _mnt(rpc, server.export_b + b"/nosuchdir")[0] == mountstat3.MNT3ERR_NOENT
        assert _mnt(rpc, server.export_b + b"/text:/nosuchword")[0] == mountstat3.MNT3ERR_NOENT
        assert _mnt(rpc, server.export_b + b"/text:/zanzibar")[0] == mountstat3.MNT3_OK
        assert _mnt(rpc, server.export_b + b"/text:/zanzibar/nosuchfile")[0] == mountstat3.MNT3ERR_NOENT
        assert _mnt(rpc, server.export_b + b"/text:/zanzibar/note.txt")[0] == mountstat3.MNT3ERR_NOTDIR


def test_read_only_export_refuses_every_modification(server: ServerProcess) -> None:
    ex = server.export
    (ex / "f").write_bytes(b"data")
    (ex / "d").mkdir()
    (ex / "d" / "inner").write_bytes(b"x")
    _restart_with(server, f'"{ex}" 127.0.0.1(ro,no_root_squash,insecure)\n')
    before = _snapshot(ex)
    with RpcClient(server.port) as rpc:
        root = rpc.mount(server.export_b)
        status, res = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"f")))
        assert status == OK
        f = res.object.data
        status, res = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"d")))
        d = res.object.data
        calls = {
            SETATTR: nfs3.SETATTR3args.cls(fh(f), sattr(mode=0o600), None),
            WRITE: nfs3.WRITE3args.cls(fh(f), 0, 3, 2, b"new"),
            CREATE: nfs3.CREATE3args.cls(diropargs(root, b"new"), (0, NO_SATTR)),
            MKDIR: nfs3.MKDIR3args.cls(diropargs(root, b"newdir"), sattr(mode=0o755)),
            SYMLINK: nfs3.SYMLINK3args.cls(diropargs(root, b"sl"), nfs3.symlinkdata3.cls(NO_SATTR, b"f")),
            MKNOD: nfs3.MKNOD3args.cls(diropargs(root, b"fifo"), (nfs3.ftype3.NF3FIFO, sattr(mode=0o600))),
            REMOVE: nfs3.REMOVE3args.cls(diropargs(root, b"f")),
            RMDIR: nfs3.RMDIR3args.cls(diropargs(d, b"inner")),
            RENAME: nfs3.RENAME3args.cls(diropargs(root, b"f"), diropargs(d, b"moved")),
            LINK: nfs3.LINK3args.cls(fh(f), diropargs(root, b"hard")),
        }
        for proc, args in calls.items():
            status, res = rpc.nfs(proc, args)
            assert status == S.NFS3ERR_ROFS, (proc, status)
            # full wcc data on the refusal: pre- and post-operation attributes of the objects
            for value in res:
                if hasattr(value, "before"):
                    assert value.before is not None and value.after is not None, (proc, res)
                else:
                    assert value is not None, (proc, res)
        assert _snapshot(ex) == before
        # reading is fine, COMMIT too, and ACCESS grants no modification
        status, res = rpc.nfs(READ, nfs3.READ3args.cls(fh(f), 0, 100))
        assert status == OK and res.data == b"data"
        status, _ = rpc.nfs(COMMIT, nfs3.COMMIT3args.cls(fh(f), 0, 0))
        assert status == OK
        status, res = rpc.nfs(ACCESS, nfs3.ACCESS3args.cls(fh(root), 0x3F))
        assert status == OK and res.access == nfs3.ACCESS3_READ | nfs3.ACCESS3_LOOKUP
    # nfs-rs meets the same refusal
    nfs_rs = pytest.importorskip("nfs_rs")
    with nfs_rs.Client.connect(server.url(), connect_timeout=10, operation_timeout=30) as c:
        with c.open("f", "rb") as f:
            assert f.read() == b"data"
        with pytest.raises(nfs_rs.NfsError, match="read-only"):
            c.mkdir("nope")
        with pytest.raises(nfs_rs.NfsError, match="read-only"):
            c.chmod("f", 0o600)
    assert _snapshot(ex) == before


def test_client_not_allowed(server: ServerProcess, tmp_path: Path) -> None:
    ex = server.export
    (ex / "f").write_bytes(b"data")
    other = tmp_path / "other"
    other.mkdir()
    (other / "g").write_bytes(b"other")
    with RpcClient(server.port) as rpc:
        old_root = rpc.mount(server.export_b)  # handles survive the restart
    _restart_with(server, f'"{ex}" 10.1.2.3(rw,no_root_squash,insecure)\n'
                          f'"{other}" 127.0.0.1(rw,no_root_squash,insecure)\n')
    with RpcClient(server.port) as rpc:
        assert _mnt(rpc, server.export_b) == (mountstat3.MNT3ERR_ACCES, None)
        assert _mnt(rpc, server.export_b + b"/sub")[0] == mountstat3.MNT3ERR_ACCES
        status, other_root = _mnt(rpc, os.fsencode(str(other)))
        assert status == mountstat3.MNT3_OK and other_root is not None
        # the handle alone is no capability: every procedure on it is refused, no attributes
        for proc, args in [
            (GETATTR, nfs3.GETATTR3args.cls(fh(old_root))),
            (LOOKUP, nfs3.LOOKUP3args.cls(diropargs(old_root, b"f"))),
            (ACCESS, nfs3.ACCESS3args.cls(fh(old_root), 0x3F)),
            (READDIR, nfs3.READDIR3args.cls(fh(old_root), 0, b"\0" * 8, 4096)),
            (CREATE, nfs3.CREATE3args.cls(diropargs(old_root, b"x"), (0, NO_SATTR))),
            (RENAME, nfs3.RENAME3args.cls(diropargs(other_root, b"g"), diropargs(old_root, b"g"))),
        ]:
            status, res = rpc.nfs(proc, args)
            assert status == S.NFS3ERR_ACCES, (proc, status)
            assert res is None or all(getattr(v, "after", v) is None for v in res), res
        assert not (ex / "x").exists() and (other / "g").exists()
        # the allowed export works
        status, res = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(other_root, b"g")))
        assert status == OK
        # EXPORT shows the client specifications; DUMP only the mount that succeeded
        exports = rpc.call(MOUNT3, 5, None)
        groups = {bytes(e.ex_dir): [bytes(g.gr_name) for g in e.ex_groups] for e in exports}
        assert groups == {server.export_b: [b"10.1.2.3"], os.fsencode(str(other)): [b"127.0.0.1"]}
        dump = rpc.call(MOUNT3, 2, None)
        assert [(bytes(m.ml_hostname), bytes(m.ml_directory)) for m in dump] == [
            (b"127.0.0.1", os.fsencode(str(other)))]
        rpc.call(MOUNT3, 3, os.fsencode(str(other)))  # UMNT
        assert rpc.call(MOUNT3, 2, None) == []
    # libnfs is refused the mount too
    out = subprocess.run(["nfs-ls", server.url()], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0, out


def test_secure_requires_a_privileged_source_port(server: ServerProcess) -> None:
    (server.export / "f").write_bytes(b"data")
    with RpcClient(server.port) as rpc:
        old_root = rpc.mount(server.export_b)
    _restart_with(server, f'"{server.export}" 127.0.0.1(rw,secure,no_root_squash)\n')
    with RpcClient(server.port) as rpc:  # an ephemeral port, >= 1024
        assert rpc.sock.getsockname()[1] >= 1024
        assert _mnt(rpc, server.export_b)[0] == mountstat3.MNT3ERR_ACCES
        status, _ = rpc.nfs(GETATTR, nfs3.GETATTR3args.cls(fh(old_root)))
        assert status == S.NFS3ERR_ACCES
    with _privileged_client(server.port) as rpc:
        assert rpc.sock.getsockname()[1] < 1024
        status, root = _mnt(rpc, server.export_b)
        assert status == mountstat3.MNT3_OK and root == old_root
        status, _ = rpc.nfs(GETATTR, nfs3.GETATTR3args.cls(fh(root)))
        assert status == OK
    # libnfs run by root binds a privileged port itself: it is let in
    out = subprocess.run(["nfs-cat", server.url("f")], capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == b"data", out


def _private_file(ex: Path) -> Path:
    home = ex / "home1000"
    home.mkdir()
    os.chown(home, 1000, 1000)
    secret = home / "secret"
    secret.write_bytes(b"mine")
    os.chown(secret, 1000, 1000)
    secret.chmod(0o600)
    pub = ex / "pub"
    pub.mkdir()
    pub.chmod(0o777)
    return secret


def test_bare_export_squashes_root(server: ServerProcess) -> None:
    """A bare --export DIR is *(rw,root_squash,insecure): root acts as nobody."""
    _private_file(server.export)
    server.export_options = None
    server.restart()
    with RpcClient(server.port) as rpc:
        exports = rpc.call(MOUNT3, 5, None)
        assert [bytes(g.gr_name) for g in exports[0].ex_groups] == [b"*"]
        root = rpc.mount(server.export_b)
        pub = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"pub")))[1].object.data
        status, res = rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(pub, b"by-root"), (1, sattr(mode=0o644))))
        assert status == OK
        st = (server.export / "pub" / "by-root").stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        assert (res.obj_attributes.uid, res.obj_attributes.gid) == (65534, 65534)
        # the export root is root's 0755: squashed root may not create there
        status, _ = rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(root, b"x"), (1, NO_SATTR)))
        assert status == S.NFS3ERR_ACCES
        home = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"home1000")))[1].object.data
        secret = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(home, b"secret")))[1].object.data
        status, _ = rpc.nfs(READ, nfs3.READ3args.cls(fh(secret), 0, 10))
        assert status == S.NFS3ERR_ACCES
        status, res = rpc.nfs(ACCESS, nfs3.ACCESS3args.cls(fh(secret), 0x3F))
        assert status == OK and res.access == 0
        # squashed root may not give files away either
        status, _ = rpc.nfs(SETATTR, nfs3.SETATTR3args.cls(fh(secret), sattr(uid=0), None))
        assert status == S.NFS3ERR_PERM
    assert (server.export / "home1000" / "secret").stat().st_uid == 1000
    # a client nobody here wrote, as root: the same
    nfs_rs = pytest.importorskip("nfs_rs")
    with nfs_rs.Client.connect(server.url(uid=0, gid=0), connect_timeout=10, operation_timeout=30) as c:
        with c.open("pub/by-nfs-rs", "wb") as f:
            f.write(b"x")
        with pytest.raises(nfs_rs.NfsError):
            with c.open("home1000/secret", "rb") as f:
                f.read()
    st = (server.export / "pub" / "by-nfs-rs").stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    out = subprocess.run(["nfs-cat", server.url("home1000/secret", uid="0", gid="0")],
                         capture_output=True, timeout=60)
    assert out.returncode != 0 and b"mine" not in out.stdout


def test_no_root_squash_lets_root_read(server: ServerProcess) -> None:
    _private_file(server.export)
    _restart_with(server, f'"{server.export}" *(rw,no_root_squash,insecure)\n')
    out = subprocess.run(["nfs-cat", server.url("home1000/secret", uid="0", gid="0")],
                         capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == b"mine", out
    with RpcClient(server.port) as rpc:
        root = rpc.mount(server.export_b)
        status, _ = rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(root, b"by-root"), (1, NO_SATTR)))
        assert status == OK
    st = (server.export / "by-root").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_all_squash_with_anonymous_ids(server: ServerProcess) -> None:
    _private_file(server.export)
    _restart_with(server, f'"{server.export}" 127.0.0.1(rw,all_squash,anonuid=1000,anongid=1000,insecure)\n')
    with RpcClient(server.port) as rpc:
        root = rpc.mount(server.export_b)
        home = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(root, b"home1000")), cred(4321, 4321))[1].object.data
        # whoever asks acts as 1000: may read 1000's secret and create in 1000's home
        secret = rpc.nfs(LOOKUP, nfs3.LOOKUP3args.cls(diropargs(home, b"secret")), cred(0, 0))[1].object.data
        status, res = rpc.nfs(READ, nfs3.READ3args.cls(fh(secret), 0, 10), cred(4321, 4321, (1, 2)))
        assert status == OK and res.data == b"mine"
        status, _ = rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(home, b"new"), (1, NO_SATTR)), cred(0, 0))
        assert status == OK
        status, _ = rpc.nfs(CREATE, nfs3.CREATE3args.cls(diropargs(root, b"nope"), (1, NO_SATTR)), cred(0, 0))
        assert status == S.NFS3ERR_ACCES
    st = (server.export / "home1000" / "new").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    # nfs-rs, whatever uid it claims
    nfs_rs = pytest.importorskip("nfs_rs")
    with nfs_rs.Client.connect(server.url(uid=5555, gid=5555), connect_timeout=10, operation_timeout=30) as c:
        with c.open("home1000/from-nfs-rs", "wb") as f:
            f.write(b"y")
    st = (server.export / "home1000" / "from-nfs-rs").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_unknown_option_stops_the_server(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    f = tmp_path / "exports"
    f.write_text(f"{d} *(rw,crossmnt)\n")
    proc = subprocess.run([sys.executable, "-m", "nfsd", "--exports", str(f), "--port", "0", "--bind", "127.0.0.1",
                           "--state-dir", str(tmp_path / "state")], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert f"{f}:1: unknown or unsupported export option 'crossmnt'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nfsd", "--port", "0"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--exports FILE" in proc.stderr
