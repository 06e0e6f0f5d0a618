"""Who is using a state store: servers share it, ``pysfsd check --repair`` needs it alone.

A server holds a shared ``flock`` on ``STORE/users.lock`` for as long as it runs; ``check
--repair`` takes it exclusively, so neither starts while the other runs.  The kernel drops
the lock when its holder dies, kill -9 included, so a crash never leaves the store locked.
``pysfsd index``, ``query`` and a read-only ``check`` take no lock: LMDB lets them share the
store with a running server.  A server also holds ``STORE/server.lock`` exclusively
(``hold_server``): a second server on the same store is refused at start, with the pid of
the first.
"""
from __future__ import annotations

import fcntl
import os
import time

from ..config.errors import ConfigError

LOCK_NAME = "users.lock"
WAIT_SECONDS = 2.0  # a read-only check holds the lock exclusively for an instant (``in_use``)


class StateBusy(ConfigError):
    pass


def _open(store_dir: str) -> int:
    return os.open(os.path.join(store_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def hold_shared(store_dir: str) -> int:
    """A server's hold on its store (a descriptor: closing it lets go)."""
    fd = _open(store_dir)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
        os.close(fd)
        raise StateBusy(f"state store {store_dir} is being repaired (pysfsd check --repair); "
                        "start the server when it is done")


def hold_exclusive(store_dir: str) -> int:
    """Sole use of the store, for a repair; StateBusy while a server runs on it."""
    fd = _open(store_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateBusy(f"a pysfsd server is using state store {store_dir}: stop it to repair, "
                        "or check without --repair") from None
    return fd


def in_use(store_dir: str) -> bool:
    """Whether a server (or a repair) holds the store right now."""
    try:
        os.close(hold_exclusive(store_dir))
    except StateBusy:
        return True
    return False


def release(fd: int) -> None:
    os.close(fd)


SERVER_LOCK_NAME = "server.lock"


def hold_server(store_dir: str, pid: int | None = None) -> int:
    """The one server of a store: a second server on the same exports and state directory
    is refused, since each keeps its own in-memory view (open files, listing cache,
    placeholders, the index queue) of what the store records.  The holder's pid is written
    in the file, to name it (``pid``: the process to name instead, a worker's parent)."""
    fd = os.open(os.path.join(store_dir, SERVER_LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StateBusy(f"another pysfsd server (pid {holder}) already serves these exports with state "
                        f"store {store_dir}: stop it first, or give this one another --state-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid or os.getpid()}\n".encode(), 0)
    return fd
