"""Confining a transducer process: what it may use, write, reach and who it runs as.

Applied by a worker to itself at start (``confine``), before any user code runs; what it
sets is inherited by every command the worker starts.  The layers, each useful alone:

* resource limits: address space, no core files, file size 0 (writing to any regular file
  kills the writer), a few descriptors, and (once unprivileged) a process count that stops
  fork bombs;
* Landlock (Linux 5.13+, unprivileged): no file or directory may be written, created,
  removed, renamed, linked or truncated anywhere; no TCP bind or connect (ABI 4); no
  signals to processes outside the sandbox, so none to the server (ABI 6);
* a network namespace of its own with nothing in it (when started as root);
* an unprivileged user (``nobody`` by default) when the server runs as root;
* an empty, unwritable working directory and a clean environment.

Landlock denies a whole class of access when a ruleset *handles* it and no rule allows it:
here no rule is ever added, so the handled rights are denied everywhere while reading stays
allowed (reading is not handled).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
from dataclasses import dataclass

log = logging.getLogger("pysfsd.sandbox")

# <linux/landlock.h>
_SYS_CREATE_RULESET, _SYS_RESTRICT_SELF = 444, 446
_CREATE_RULESET_VERSION = 1
_FS_WRITE_FILE = 1 << 1
_FS_REMOVE_DIR, _FS_REMOVE_FILE = 1 << 4, 1 << 5
_FS_MAKE = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


@dataclass(frozen=True)
class Limits:
    """What a transducer may consume, per file (``cpu_seconds``, ``timeout``) or at once."""

    timeout: float = 5.0          # wall clock, per file
    cpu_seconds: int = 5          # CPU time, per file
    memory_bytes: int = 512 << 20  # address space of each process
    processes: int = 64           # of the sandbox user (only when running as one)
    open_files: int = 256


@dataclass(frozen=True)
class Identity:
    """Who the sandbox runs as; None: whoever the server is (it is not root)."""

    uid: int
    gid: int


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def deny_writes_and_network() -> int:
    """Landlock this process (and what it runs) as described above; returns the ABI used,
    0 when the kernel offers no Landlock (then only the other layers hold)."""
    abi = landlock_abi()
    if abi <= 0:
        return 0
    fs = _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE
    if abi >= 2:
        fs |= _FS_REFER
    if abi >= 3:
        fs |= _FS_TRUNCATE
    if abi >= 5:
        fs |= _FS_IOCTL_DEV
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    size = ctypes.sizeof(attr) if abi >= 6 else (16 if abi >= 4 else 8)
    fd = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return abi


def leave_network() -> bool:
    """A network namespace of one's own: no interface but a down loopback.  Needs root."""
    if _libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EINVAL, errno.ENOSYS):
            return False
        raise OSError(err, "unshare(CLONE_NEWNET)")
    return True


def set_limits(limits: Limits, unprivileged_user: bool) -> None:
    def cap(which: int, value: int) -> None:
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_AS, limits.memory_bytes)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_FSIZE, 0)
    cap(resource.RLIMIT_NOFILE, limits.open_files)
    if unprivileged_user:  # counted per user: the server's own threads would count otherwise
        cap(resource.RLIMIT_NPROC, limits.processes)


def become(identity: Identity) -> None:
    os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    if os.geteuid() != identity.uid or os.getuid() != identity.uid:
        raise PermissionError("could not drop privileges")


def confine(limits: Limits, identity: Identity | None, workdir: str) -> list[str]:
    """Everything but the user switch (``become``), which the worker does after importing
    what it needs; returns what could not be applied, for the log."""
    missing = []
    os.chdir(workdir)
    if os.geteuid() == 0 and not leave_network():
        missing.append("network namespace")
    set_limits(limits, identity is not None)
    if deny_writes_and_network() == 0:
        missing.append("Landlock (file writes are stopped only by RLIMIT_FSIZE and the user)")
    return missing
