"""Acting as the caller: per-thread file-system credentials, and the permission rules the
server applies itself.

When the server runs as root on Linux, every call that touches the file system runs with the
caller's identity (after squashing, see ``nfsd.exports.rules``) as the *file-system* credentials of
the thread serving it: ``setfsuid``, ``setfsgid`` and ``setgroups``, called as raw system
calls.  Linux keeps credentials per thread and these three change only the calling thread;
glibc's ``setgroups()`` (and so ``os.setgroups``) would broadcast the change to every thread
of the process, which is why the raw ``syscall()`` is used.  The kernel then decides, exactly
as for a local process of that user: permission bits, ACLs, sticky directories, who may
chmod or chown (a non-zero fsuid drops CAP_CHOWN, CAP_FOWNER, CAP_DAC_OVERRIDE... from the
thread's effective set, and getting back to fsuid 0 raises them again), and new objects are
owned by the caller's fsuid/fsgid (with the set-group-ID directory rule applied by the kernel).
The server's fsuid (so its capabilities) is restored after every call (``try``/``finally``),
so background work (index scans and flushes, LMDB syncs, inotify) always runs as root.

What the kernel cannot decide on its own, because the server keeps descriptors open across
calls (a file's read/write descriptor, a directory's cached listing), is checked here from the
mode bits with ``may``, following knfsd: the owner may always read and write their own file
(``cp`` of a 0444 file, git objects), READ is allowed on an execute-only file (clients must
read a program to run it), and uid 0 is the superuser (unless squashed).

When the server does not run as root, nothing is switched: every operation runs as the
server's user, as any process of that user would (the README says so).  A root server on
a platform whose system call numbers are not known here refuses to start.  The cost of a
switch is a few microseconds (two system calls through ctypes when a thread serves the same
user again, see ``become``); calls that do not need one (GETATTR, ACCESS, FSSTAT, FSINFO,
PATHCONF, READ, COMMIT) never pay it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import stat
import sys
import threading
from typing import Any, Iterator, NamedTuple

from .backend import StatResult

# Raw system call numbers: setgroups, setfsuid, setfsgid (the 32-bit-id versions).
_SYSCALLS = {"x86_64": (116, 122, 123), "aarch64": (159, 151, 152), "riscv64": (159, 151, 152)}

R, W, X = 4, 2, 1


class Identity(NamedTuple):
    """Who a call acts as: file-system uid, gid and supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _server_identity() -> Identity:
    return Identity(os.geteuid(), os.getegid(), tuple(sorted(set(os.getgroups()))))


SERVER = _server_identity()
class _ThreadState(threading.local):
    """What this thread acts as now (``ident``) and what it last set (``fsgid``,
    ``groups``; None: not known yet).  Class defaults, not ``getattr(local, name, None)``:
    a name a thread never set costs an AttributeError raised and caught each time."""

    ident: "Identity | None" = None
    fsgid: int | None = None
    groups: tuple[int, ...] | None = None


_local = _ThreadState()
_numbers = _SYSCALLS.get(platform.machine()) if sys.platform == "linux" else None
# Whether calls act as their caller: the server runs as root on a supported platform.
ACTING = SERVER.uid == 0 and _numbers is not None

if _numbers is not None:
    _libc = ctypes.CDLL(None, use_errno=True)
    _call1 = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long)(("syscall", _libc))
    _call2 = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                              use_errno=True)(("syscall", _libc))
    _SYS_SETGROUPS, _SYS_SETFSUID, _SYS_SETFSGID = _numbers
_group_arrays: dict[tuple[int, ...], tuple[ctypes.Array, int]] = {}


def current() -> Identity | None:
    """The caller identity this thread acts as now, or None when it acts as the server."""
    return _local.ident


def _setgroups(groups: tuple[int, ...]) -> None:
    known = _group_arrays.get(groups)
    if known is None:
        arr = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
        if len(_group_arrays) > 4096:
            _group_arrays.clear()
        known = _group_arrays[groups] = (arr, ctypes.addressof(arr))
    if _call2(_SYS_SETGROUPS, len(groups), known[1]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")
    _local.groups = groups


def become(ident: Identity) -> None:
    """Act as ``ident`` on this thread until ``restore``.  Only what differs from what the
    thread has is changed, one system call each.

    ``restore`` gives back only the server's fsuid: the fsgid and supplementary groups of
    the last caller stay on the thread (with fsuid 0 they change nothing: root passes every
    check, and the server creates no files of its own while serving), so a thread serving
    the same user again and again pays two system calls per call, not six.  A thread's
    first switch sets everything: a new thread inherits its creator's fsgid and groups,
    whatever they were (``None`` below: not known yet)."""
    if ident.uid != 0 and ident.groups != _local.groups:
        _setgroups(ident.groups)
    if ident.gid != _local.fsgid:
        _call1(_SYS_SETFSGID, ident.gid)
        _local.fsgid = ident.gid
    if ident.uid != SERVER.uid:
        _call1(_SYS_SETFSUID, ident.uid)
    _local.ident = ident


def restore(ident: Identity) -> None:
    """Back to the server's fsuid after ``become(ident)``: back to uid 0 the kernel gives
    the thread its file-system capabilities again."""
    _local.ident = None
    if ident.uid != SERVER.uid:
        _call1(_SYS_SETFSUID, SERVER.uid)


@contextlib.contextmanager
def as_server() -> Iterator[None]:
    """Run a block wholly as the server even inside a call acting as someone else (index
    flushes: they read files on everyone's behalf, and threads they start inherit the
    thread's credentials)."""
    ident = current()
    if not ACTING or (ident is None and _local.fsgid == SERVER.gid):
        yield
        return
    if ident is not None:
        restore(ident)
    _call1(_SYS_SETFSGID, SERVER.gid)
    _local.fsgid = SERVER.gid
    try:
        yield
    finally:
        if ident is not None:
            become(ident)


def _thread_ids() -> tuple[str, str, list[str]]:
    """(fsuid, fsgid, sorted groups) of the calling thread, as the kernel reports them."""
    with open("/proc/thread-self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return status["Uid"].split()[3], status["Gid"].split()[3], sorted(status["Groups"].split(), key=int)


def self_test() -> None:
    """Check, in a scratch thread, that switching works and stays in that thread; raise
    OSError otherwise (a root server that cannot act as its callers must not serve)."""
    if not ACTING:
        return
    probe = Identity(65534, 65533, (65531, 65532))
    seen: list[object] = []

    def run() -> None:
        try:
            become(probe)
            try:
                seen.append(_thread_ids())
                with as_server():
                    seen.append(_thread_ids()[:2])
                seen.append(_thread_ids())
            finally:
                restore(probe)
            seen.append(_thread_ids()[:2])
        except Exception as exc:  # reported below
            seen.append(exc)

    t = threading.Thread(target=run, name="pysfsd-identity-check")
    t.start()
    t.join()
    server = (str(SERVER.uid), str(SERVER.gid))
    acting = ("65534", "65533", ["65531", "65532"])
    expected = [acting, server, acting, (str(SERVER.uid), "65533")]
    if seen != expected or _thread_ids()[:2] != server or current() is not None:
        raise OSError(f"per-thread credentials do not work here: {seen!r}")


# -- permission rules applied by the server itself ----------------------------------------
def may(st: StatResult, ident: Identity, want: int, owner_override: bool = False) -> bool:
    """Whether ``ident`` may ``want`` (R, W, X bits) the object with attributes ``st``, from
    its mode bits as the kernel reads them (owner class, else group class if the gid or a
    supplementary group matches, else other).  ``owner_override``: the owner may read and
    write whatever the bits say (knfsd's rule for READ, WRITE and truncation)."""
    mode = st.st_mode
    if ident.uid == 0:
        # The superuser reads and writes anything; executes what has an x bit somewhere.
        return not (want & X) or stat.S_ISDIR(mode) or bool(mode & 0o111)
    if ident.uid == st.st_uid:
        if owner_override and not want & X:
            return True
        perm = (mode >> 6) & 7
    elif ident.gid == st.st_gid or st.st_gid in ident.groups:
        perm = (mode >> 3) & 7
    else:
        perm = mode & 7
    return perm & want == want


def may_read_data(st: StatResult, ident: Identity) -> bool:
    """READ: read permission, or execute permission on a regular file (a client must read
    a program to run it), or ownership."""
    return may(st, ident, R, True) or (stat.S_ISREG(st.st_mode) and may(st, ident, X))


class Reach:
    """Which paths below a directory (a node: its O_PATH descriptor) the current thread's
    identity can reach, asked of the kernel: ``a/b/.`` can be looked up only with search permission on the directory itself,
    ``a`` and ``a/b``.  Answers are memoized per directory for the life of the object (one
    call, one identity)."""

    __slots__ = ("node", "fd", "_dirs")

    def __init__(self, node: Any) -> None:
        self.node = node  # holds the directory's descriptor open as long as this lives
        self.fd: int = node.fd
        self._dirs: dict[bytes, bool] = {}

    def searchable(self, rel_dir: bytes) -> bool:
        ok = self._dirs.get(rel_dir)
        if ok is None:
            parent = rel_dir.rpartition(b"/")[0] if rel_dir else None
            if parent is not None and not self.searchable(parent):
                ok = False
            else:
                try:
                    os.stat(rel_dir + b"/." if rel_dir else b".", dir_fd=self.fd)
                    ok = True
                except OSError:
                    ok = False
            self._dirs[rel_dir] = ok
        return ok

    def visible(self, rel_path: bytes, ident: Identity, content: bool) -> bool:
        """``rel_path`` (a file below the directory) can be reached by path, and, when
        ``content`` is asked for, read (so a query on what a file holds never tells what is
        in a file the caller could not open)."""
        if not self.searchable(rel_path.rpartition(b"/")[0]):
            return False
        if not content:
            return True
        try:
            st = os.stat(rel_path, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return may_read_data(st, ident)
