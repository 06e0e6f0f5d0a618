"""Differential test against NFS-Ganesha: the same raw NFSv3 calls, as root and as ordinary
users, sent to pysfsd and to Ganesha (FSAL VFS), each serving its own export built
identically; per case the status codes and the resulting attributes (type, mode, owner, size,
link count, which timestamps moved) must agree, or the difference be listed in ``KNOWN``
with its reason (docs/design.rst, "Protocol behaviour", says the same).

The cases are data (``CASES``, built from small tables): a tree template, a credential and
one or more calls naming objects by path.  Each case gets its own directory in both exports,
built before the servers start, so the cases do not disturb each other; before the cases
run, the timestamps of every object are set to ``OLD`` on both sides, so a timestamp set to
"now" or to the client's time (``CLIENT``) is told apart from one left alone.

Both servers act as their callers when run as root, so the test needs root; it is skipped
only where Ganesha, unshare, ip or rpcbind is not installed (scripts/run-tests.sh installs
them).  Ganesha will not start without registering with a portmapper, and unregisters other
servers' NFS and MOUNT mappings there: it runs with an rpcbind of its own in a private network
and mount namespace (scripts/vm/ganesha.py, ``private=True``), where this process opens its
connections to it (setns); pysfsd runs on the host's loopback without registering.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest

from protocol import mount3, nfs3
from protocol.rpc import Credentials
from tests.conftest import REPO, ServerProcess
from tests.nfs3_helpers import (CREATE, GETATTR, LINK, LOOKUP, MKDIR, NFS, REMOVE, RENAME, RMDIR,
                                SETATTR, WRITE, cred, diropargs, pack)
from tests.rpc_client import RpcClient, fh
from tests.waiting import DEADLINE_S

_MISSING = [tool for tool in ("ganesha.nfsd", "unshare", "ip", "rpcbind") if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="both servers act as their callers only as root"),
    pytest.mark.skipif(bool(_MISSING), reason=f"{_MISSING} not installed (scripts/run-tests.sh installs "
                                              "nfs-ganesha, nfs-ganesha-vfs, util-linux, iproute2, rpcbind)"),
]

CREDS = {
    "root": cred(0, 0, (0,)),
    "owner": cred(1000, 1000, (1000,)),      # owns the objects of most trees
    "member": cred(1001, 1001, (1001, 2000)),  # not the owner, in the group 2000 of the objects
    "other": cred(1001, 1001, (1001,)),      # neither owner nor in the group
}
OLD = 1_000_000_000 * 10**9   # every object's atime and mtime before a case runs
CLIENT = 7 * 10**9             # the time SET_TO_CLIENT_TIME sends
D, F, P, L = "dir", "file", "fifo", "symlink"

# Tree templates: (path, kind, uid, gid, mode, content).  Group 2000 is the shared group.
TREES: dict[str, list[tuple[str, str, int, int, int, bytes]]] = {
    # a group-writable file in a directory its owner and group may write
    "file": [("d", D, 1000, 2000, 0o775, b""), ("d/f", F, 1000, 2000, 0o664, b"0123456789")],
    # a set-user-ID and set-group-ID program the group may write
    "setid": [("d", D, 0, 0, 0o777, b""), ("d/f", F, 1000, 2000, 0o6775, b"#!/bin/sh\nexit 0\n")],
    # a world-writable directory with files of two owners
    "pub": [("d", D, 0, 0, 0o777, b""), ("d/rw", F, 1000, 1000, 0o666, b"data"),
            ("d/ro", F, 1000, 1000, 0o644, b"data"), ("d/mine", F, 1000, 1000, 0o640, b"data"),
            ("d/sub", D, 1000, 1000, 0o755, b""), ("d/fifo", P, 1000, 1000, 0o666, b"")],
    # /tmp-like: sticky and world-writable
    "sticky": [("d", D, 0, 0, 0o1777, b""), ("d/f", F, 1000, 1000, 0o644, b"x"),
               ("d/g", F, 1001, 1001, 0o644, b"y"), ("d/sub", D, 1000, 1000, 0o755, b""),
               ("d/full", D, 1001, 1001, 0o777, b""), ("d/full/x", F, 1001, 1001, 0o644, b"")],
    # only the owner may write d; d2 is anybody's; e is a directory owned by 1000 in d2
    "private": [("d", D, 1000, 1000, 0o755, b""), ("d/f", F, 1000, 1000, 0o644, b"x"),
                ("d2", D, 0, 0, 0o777, b""), ("d2/e", D, 1000, 1000, 0o755, b""),
                ("d2/g", F, 1000, 1000, 0o644, b"g")],
    # a set-group-ID directory of the shared group
    "sgid": [("d", D, 1000, 2000, 0o2777, b"")],
    # a symbolic link of 1000's (content: its target)
    "symlink": [("d", D, 1000, 2000, 0o775, b""), ("d/s", L, 1000, 1000, 0o777, b"target")],
}


class Case(NamedTuple):
    name: str
    tree: str
    who: str
    calls: tuple[tuple[Any, ...], ...]  # ("SETATTR", path, {"mode": 0o600, ...}) ... see ``_send``


def _cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    users = ("root", "owner", "member", "other")
    how_names = {0: "keep", 1: "server", 2: "client"}
    for a in (0, 1, 2):
        for m in (0, 1, 2):
            if a or m:
                for who in users:
                    add(Case(f"setattr atime={how_names[a]} mtime={how_names[m]} as {who}", "file", who,
                             (("SETATTR", "d/f", dict(atime=a, mtime=m)),)))
    fields: list[tuple[str, dict[str, Any]]] = [
        ("mode 0600", dict(mode=0o600)), ("mode 04775", dict(mode=0o4775)),
        ("mode 02775", dict(mode=0o2775)), ("uid 1001", dict(uid=1001)),
        ("gid 2000 (unchanged)", dict(gid=2000)), ("gid 1000", dict(gid=1000)),
        ("gid 3000", dict(gid=3000)), ("uid 1000 gid 2000 (unchanged)", dict(uid=1000, gid=2000)),
        ("size 0", dict(size=0)), ("size 20", dict(size=20)),
        ("mode 0600 and size 0", dict(mode=0o600, size=0)),
        ("size 0 and atime=server", dict(size=0, atime=1)),
    ]
    for label, attrs in fields:
        for who in users:
            add(Case(f"setattr {label} as {who}", "file", who, (("SETATTR", "d/f", attrs),)))
    # directories and symbolic links
    others: list[tuple[str, str, dict[str, Any]]] = [
        ("directory atime=server", "d", dict(atime=1)), ("directory both times=server", "d", dict(atime=1, mtime=1)),
        ("directory mtime=client", "d", dict(mtime=2)), ("directory mode 0700", "d", dict(mode=0o700)),
        ("directory size 0", "d", dict(size=0)),
        ("symlink times=client", "d/s", dict(atime=2, mtime=2)), ("symlink mode 0600", "d/s", dict(mode=0o600)),
        ("symlink uid 1001", "d/s", dict(uid=1001)), ("symlink size 0", "d/s", dict(size=0)),
    ]
    for label, path, attrs in others:
        for who in users:
            add(Case(f"setattr {label} as {who}", "symlink", who, (("SETATTR", path, attrs),)))
    # set-user-ID and set-group-ID bits: who clears them, when
    setid: list[tuple[str, tuple[Any, ...]]] = [
        ("write", ("WRITE", "d/f", 0, b"#")),
        ("truncate", ("SETATTR", "d/f", dict(size=4))),
        ("chown to itself", ("SETATTR", "d/f", dict(uid=1000))),
        ("chgrp to itself", ("SETATTR", "d/f", dict(gid=2000))),
        ("chmod 06755", ("SETATTR", "d/f", dict(mode=0o6755))),
        ("touch", ("SETATTR", "d/f", dict(atime=1, mtime=1))),
    ]
    for label, call in setid:
        for who in ("root", "owner", "member"):
            add(Case(f"setid file: {label} as {who}", "setid", who, (call,)))
    # CREATE in each mode, of a new name and of existing objects
    targets = {"new": "d/new", "existing rw 0666": "d/rw", "existing 0644": "d/ro",
               "existing 0640": "d/mine", "existing directory": "d/sub", "existing fifo": "d/fifo"}
    for mode_name, mode in (("unchecked", 0), ("guarded", 1), ("exclusive", 2)):
        for target, path in targets.items():
            for who in ("root", "owner", "other"):
                how = b"verf0001" if mode == 2 else dict(mode=0o600, size=0)
                add(Case(f"create {mode_name} {target} as {who}", "pub", who,
                         (("CREATE", path, mode, how),)))
    for target in ("d/rw", "d/ro", "d/mine"):
        for who in ("owner", "other"):
            add(Case(f"create unchecked mode only, {target} as {who}", "pub", who,
                     (("CREATE", target, 0, dict(mode=0o600)),)))
    for who in ("root", "owner", "other"):
        add(Case(f"create unchecked with owner and times, existing rw 0666 as {who}", "pub", who,
                 (("CREATE", "d/rw", 0, dict(uid=1001, gid=1001, size=0, atime=2, mtime=1)),)))
    for who in ("owner", "other"):
        add(Case(f"create exclusive retransmitted as {who}", "pub", who,
                 (("CREATE", "d/x", 2, b"verf0002"), ("CREATE", "d/x", 2, b"verf0002"),
                  ("CREATE", "d/x", 2, b"verf0003"))))
        add(Case(f"create unchecked in a directory of another as {who}", "private", who,
                 (("CREATE", "d/new", 0, dict(mode=0o644)),)))
        add(Case(f"create unchecked without a mode as {who}", "pub", who,
                 (("CREATE", "d/new", 0, dict()),)))
    # sticky directories, directories without write permission, set-group-ID directories
    links: list[tuple[str, str, tuple[Any, ...]]] = [
        ("remove own file", "sticky", ("REMOVE", "d/f")),
        ("remove another's file", "sticky", ("REMOVE", "d/g")),
        ("rename own file", "sticky", ("RENAME", "d/f", "d/h")),
        ("rename another's file", "sticky", ("RENAME", "d/g", "d/h")),
        ("rename over another's file", "sticky", ("RENAME", "d/f", "d/g")),
        ("rmdir another's empty directory", "sticky", ("RMDIR", "d/sub")),
        ("rmdir a non-empty directory", "sticky", ("RMDIR", "d/full")),
        ("link the file of 1001", "sticky", ("LINK", "d/g", "d/l")),
        ("link the file of 1000", "sticky", ("LINK", "d/f", "d/l")),
        ("remove in a directory of another", "private", ("REMOVE", "d/f")),
        ("rename out of a directory of another", "private", ("RENAME", "d/f", "d2/f")),
        ("rename into a directory of another", "private", ("RENAME", "d2/g", "d/g")),
        ("move another's directory", "private", ("RENAME", "d2/e", "d2/e2")),
        ("link into a directory of another", "private", ("LINK", "d2/g", "d/l")),
        ("mkdir in a set-group-ID directory", "sgid", ("MKDIR", "d/new", 0o755)),
        ("create in a set-group-ID directory", "sgid", ("CREATE", "d/new", 1, dict(mode=0o2755))),
        ("mkdir 02755 in a set-group-ID directory", "sgid", ("MKDIR", "d/new", 0o2755)),
    ]
    for label, tree, call in links:
        for who in users:
            add(Case(f"{label} as {who}", tree, who, (call,)))
    add(Case("trailing bytes after the arguments", "file", "root", (("GETATTR+4", "d/f"),)))
    return cases


CASES = _cases()

# Differences from Ganesha 4.3 that pysfsd keeps, with the reason (docs/design.rst).
_TRUNCATE_SETID = ("truncation clears set-user-ID and set-group-ID bits, as a local truncate(2) "
                   "by that user does (the call acts as the caller); Ganesha keeps them")
_PROTECTED_LINK = ("fs.protected_hardlinks: acting as the caller, the kernel refuses a hard link to "
                   "a file the caller neither owns nor may read and write (EPERM); Ganesha (and "
                   "knfsd) link it")
_OPEN_EXISTING = ("CREATE UNCHECKED of an existing file without a size applies nothing (knfsd's "
                  "do_nfsd_create), so it needs no write permission; Ganesha opens the file for "
                  "writing and answers ACCES")
_OTHER_TYPE = ("CREATE UNCHECKED of an existing FIFO (not a regular file, not a directory) "
               "answers EXIST and opens nothing; Ganesha answers BADTYPE (knfsd OK)")
_SIZE_OF_DIR = "SETATTR of a size on a directory: ISDIR, as knfsd; Ganesha answers BADTYPE"
_SIZE_OF_LINK = "SETATTR of a size on a symbolic link: INVAL, as knfsd (NFSv3); Ganesha answers BADTYPE"
_MODE_OF_LINK = ("a mode in SETATTR of a symbolic link is ignored (Linux keeps none), as knfsd does, "
                 "so a non-owner gets OK; Ganesha checks ownership first (PERM)")
_TIMES_OF_LINK = ("SETATTR of a client's times on a symbolic link sets those times (utimensat "
                  "AT_SYMLINK_NOFOLLOW); Ganesha 4.3 sets the current time instead")
KNOWN: dict[str, str] = {
    **{f"setattr directory size 0 as {who}": _SIZE_OF_DIR for who in ("root", "owner", "member", "other")},
    **{f"setattr symlink size 0 as {who}": _SIZE_OF_LINK for who in ("root", "owner", "member", "other")},
    **{f"setattr symlink mode 0600 as {who}": _MODE_OF_LINK for who in ("member", "other")},
    **{f"setattr symlink times=client as {who}": _TIMES_OF_LINK for who in ("root", "owner")},
    "create unchecked existing fifo as root": _OTHER_TYPE,
    "create unchecked existing fifo as owner": _OTHER_TYPE,
    "create unchecked existing fifo as other": _OTHER_TYPE,
    "create unchecked with owner and times, existing rw 0666 as owner": (
        "CREATE UNCHECKED of an existing file applies only the size, as knfsd's do_nfsd_create; "
        "Ganesha 4.3 applies the owner sent too when the caller owns the file, and refuses (PERM)"),
    "setid file: truncate as owner": _TRUNCATE_SETID,
    "setid file: truncate as member": _TRUNCATE_SETID,
    "link the file of 1000 as member": _PROTECTED_LINK,
    "link the file of 1000 as other": _PROTECTED_LINK,
    "link the file of 1001 as owner": _PROTECTED_LINK,
    "create unchecked mode only, d/mine as other": _OPEN_EXISTING,
    "create unchecked mode only, d/ro as other": _OPEN_EXISTING,
    "setattr mode 0600 and size 0 as member": (
        "as knfsd (nfsd_setattr), the size is set first, then the mode is refused (PERM) and the "
        "truncation stays; Ganesha refuses before truncating"),
    "setattr mode 0600 and size 0 as other": (
        "as knfsd, write permission for the size is checked first (ACCES); Ganesha checks the "
        "ownership the mode needs first (PERM)"),
    "trailing bytes after the arguments": "pysfsd answers GARBAGE_ARGS to a call with bytes after "
                                          "its arguments (RFC 5531); Ganesha ignores them",
}


# -- building the exports -------------------------------------------------------------------
def build(export: Path) -> None:
    """The same tree on each side: one directory per case."""
    export.mkdir(parents=True)
    os.chmod(export, 0o755)
    for i, case in enumerate(CASES):
        base = export / f"c{i:03d}"
        base.mkdir()
        for path, kind, uid, gid, mode, content in TREES[case.tree]:
            p = base / path
            if kind == D:
                p.mkdir()
            elif kind == P:
                os.mkfifo(p)
            elif kind == L:
                os.symlink(content, p)
                os.lchown(p, uid, gid)
                continue
            else:
                p.write_bytes(content)
            os.chown(p, uid, gid)
            os.chmod(p, mode)


def _paths(case: Case) -> list[str]:
    """Every path a case may touch: its tree's, and the names its calls create."""
    paths = [p for p, *_ in TREES[case.tree]]
    for call in case.calls:
        for arg in call[1:]:
            if isinstance(arg, str) and arg not in paths:
                paths.append(arg)
    return paths


def _when(t: int) -> str:
    return "old" if t == OLD else "client" if t == CLIENT else "now"


def observe(base: Path, paths: list[str], before: dict[str, Any] | None) -> dict[str, Any]:
    """What a case left, per path: type, mode, owner, size, links, and which times moved."""
    out: dict[str, Any] = {}
    for path in paths:
        try:
            st = os.lstat(base / path)
        except FileNotFoundError:
            out[path] = None
            continue
        was = before.get(path) if before else None
        out[path] = {"type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
                     "uid": st.st_uid, "gid": st.st_gid,
                     "size": st.st_size if stat.S_ISREG(st.st_mode) else None, "nlink": st.st_nlink,
                     # a directory's atime moves whenever someone lists it (an index scan)
                     "atime": None if stat.S_ISDIR(st.st_mode) else _when(st.st_atime_ns),
                     "mtime": _when(st.st_mtime_ns),
                     "ctime": ("new" if was is None else "same" if st.st_ctime_ns == was else "moved")}
    return out


# -- sending calls --------------------------------------------------------------------------
class Target(NamedTuple):
    name: str
    export: Path
    rpc: RpcClient
    root: bytes


def _call(t: Target, proc: int, args: Any, c: Credentials = CREDS["root"]) -> Any:
    """An NFS call, sent again after JUKEBOX ("try later", which a loaded server may answer)
    as a real client does."""
    deadline = time.monotonic() + DEADLINE_S  # (100 tries, 10 s, were a bet on the load)
    while True:
        status, res = t.rpc.nfs(proc, args, c)
        if status != nfs3.nfsstat3.NFS3ERR_JUKEBOX:
            return status, res
        assert time.monotonic() < deadline, f"{t.name}: JUKEBOX for {DEADLINE_S} s"
        time.sleep(0.1)


def _lookup(t: Target, path: str) -> bytes:
    h = t.root
    for part in path.split("/"):
        status, res = _call(t, LOOKUP, nfs3.LOOKUP3args.cls(diropargs(h, part.encode())))
        assert status == 0, f"{t.name}: LOOKUP {path}: {status}"
        h = res.object.data
    return h


def _where(t: Target, path: str) -> Any:
    parent, _, name = path.rpartition("/")
    return diropargs(_lookup(t, parent), name.encode())


def _time(how: int) -> tuple[int, Any]:
    return how, (nfs3.nfstime3.cls(CLIENT // 10**9, 0) if how == 2 else None)


def _sattr3(attrs: dict[str, Any]) -> Any:
    return nfs3.sattr3.cls(attrs.get("mode"), attrs.get("uid"), attrs.get("gid"), attrs.get("size"),
                           _time(attrs.get("atime", 0)), _time(attrs.get("mtime", 0)))


def _send(t: Target, base: str, call: tuple[Any, ...], c: Credentials) -> Any:
    """One call of a case (paths relative to the case's directory ``base``); its status."""
    op, *args = call
    p: list[Any] = [f"{base}/{a}" if isinstance(a, str) else a for a in args]
    if op == "SETATTR":
        a = nfs3.SETATTR3args.cls(fh(_lookup(t, p[0])), _sattr3(p[1]), None)
    elif op == "CREATE":
        how = p[2] if p[1] == 2 else _sattr3(p[2])
        a = nfs3.CREATE3args.cls(_where(t, p[0]), (p[1], how))
    elif op == "MKDIR":
        a = nfs3.MKDIR3args.cls(_where(t, p[0]), _sattr3({"mode": p[1]}))
    elif op == "WRITE":
        a = nfs3.WRITE3args.cls(fh(_lookup(t, p[0])), p[1], len(p[2]), 2, p[2])
    elif op in ("REMOVE", "RMDIR"):
        a = (nfs3.REMOVE3args if op == "REMOVE" else nfs3.RMDIR3args).cls(_where(t, p[0]))
    elif op == "RENAME":
        a = nfs3.RENAME3args.cls(_where(t, p[0]), _where(t, p[1]))
    elif op == "LINK":
        a = nfs3.LINK3args.cls(fh(_lookup(t, p[0])), _where(t, p[1]))
    elif op == "GETATTR+4":
        args_bytes = pack(nfs3.GETATTR3args, nfs3.GETATTR3args.cls(fh(_lookup(t, p[0])))) + b"\0" * 4
        _, body, _ = t.rpc.raw_call(NFS, 3, GETATTR, args_bytes, c)
        return ("accept_stat", body[1].reply_data[0])
    else:
        raise AssertionError(f"unknown call {op}")
    proc = {"SETATTR": SETATTR, "CREATE": CREATE, "MKDIR": MKDIR, "WRITE": WRITE, "REMOVE": REMOVE,
            "RMDIR": RMDIR, "RENAME": RENAME, "LINK": LINK}[op]
    status, _ = _call(t, proc, a, c)
    return nfs3.nfsstat3.values(status).name if status else "OK"


def run_cases(t: Target) -> dict[str, Any]:
    # Every object's times to OLD, now that the server runs (its start-up scan is done); then
    # a pause longer than a clock tick, so a change of ctime shows even where the kernel
    # keeps coarse timestamps.
    for i, case in enumerate(CASES):
        for path in _paths(case):
            p = t.export / f"c{i:03d}" / path
            if p.exists():
                os.utime(p, ns=(OLD, OLD), follow_symlinks=False)
    time.sleep(0.05)
    results: dict[str, Any] = {}
    for i, case in enumerate(CASES):
        base = f"c{i:03d}"
        paths = _paths(case)
        before = {p: os.lstat(t.export / base / p).st_ctime_ns for p in paths
                  if (t.export / base / p).exists()}
        statuses = [_send(t, base, call, CREDS[case.who]) for call in case.calls]
        results[case.name] = {"status": statuses, "after": observe(t.export / base, paths, before)}
    return results


# -- the servers ----------------------------------------------------------------------------
def _ganesha_class() -> Any:
    """scripts/vm/ganesha.py's Ganesha, through scripts/benchmarks/load_generator/servers.py (loaded by path:
    scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_servers", REPO / "scripts" / "benchmarks" / "load_generator" / "servers.py")
    assert spec is not None and spec.loader is not None
    servers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(servers)
    return servers.ganesha_module().Ganesha


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    work = tmp_path_factory.mktemp("differential")
    out: dict[str, dict[str, Any]] = {}
    # pysfsd
    build(work / "pysfsd" / "export")
    srv = ServerProcess(work / "pysfsd" / "export", work / "pysfsd" / "state").start()
    try:
        with RpcClient(srv.port) as rpc:
            root = rpc.mount(srv.export_b)
            out["pysfsd"] = run_cases(Target("pysfsd", srv.export, rpc, root))
    finally:
        log = srv.stop()
    assert "Traceback" not in log, log[-4000:]
    # Ganesha, alone in its namespace: its ports are free there, and its rpcbind is its own.
    export = work / "ganesha" / "export"
    build(export)
    with _ganesha_class()(export, work_dir=work / "ganesha" / "run", private=True) as server:
        with server.namespace():
            mnt, rpc = RpcClient(server.mount_port), RpcClient(server.port)
        with mnt, rpc:
            status, ok = mnt.call(mount3.MOUNT3, 1, os.fsencode(str(export.resolve())))
            assert status == 0, f"Ganesha MNT: {status}"
            out["ganesha"] = run_cases(Target("ganesha", export.resolve(), rpc, ok.fhandle))
    yield out


def difference(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """What differs in one case, as "what: pysfsd's / Ganesha's"."""
    parts = []
    if ours["status"] != theirs["status"]:
        parts.append(f"status {ours['status']} / {theirs['status']}")
    for path, mine in ours["after"].items():
        other = theirs["after"][path]
        if mine is None or other is None:
            if mine != other:
                parts.append(f"{path} {'missing' if mine is None else 'exists'} / "
                             f"{'missing' if other is None else 'exists'}")
            continue
        parts.extend(f"{path} {key} {value} / {other[key]}" for key, value in mine.items() if value != other[key])
    return "; ".join(parts)


def test_cases_are_many_and_distinct() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 130
    assert set(KNOWN) <= {c.name for c in CASES}


def test_same_answers_as_ganesha(results: dict[str, dict[str, Any]]) -> None:
    """Every case agrees with Ganesha, except the differences listed in KNOWN, which must
    still differ (a list that no longer matches is out of date)."""
    ours, theirs = results["pysfsd"], results["ganesha"]
    differ = {name for name in ours if ours[name] != theirs[name]}
    report = "\n".join(f"{name}: {difference(ours[name], theirs[name])}" for name in sorted(differ - set(KNOWN)))
    assert not differ - set(KNOWN), f"{len(differ - set(KNOWN))} unexpected differences:\n{report}"
    assert not set(KNOWN) - differ, f"listed in KNOWN but no longer different: {sorted(set(KNOWN) - differ)}"
