"""The durable part of lock recovery: our NSM state number and the clients holding locks.

Kept in ``<state dir>/nlm/``: ``state`` holds the NSM state number (odd while up, raised by
two at each start, as statd does), and ``hosts/`` one small file per client that holds
locks, written (and fsynced, with its directory) before the first lock of that client is
granted.  After a restart or a crash the files name exactly the clients to send SM_NOTIFY
to, and whether a grace period is needed at all: with no file, nobody can reclaim anything.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator

from .manager import Host

log = logging.getLogger("pysfsd.nlm")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


class MonitorRecords:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.hosts_dir = os.path.join(directory, "hosts")
        os.makedirs(self.hosts_dir, mode=0o700, exist_ok=True)

    def next_state(self) -> int:
        """This run's NSM state number (odd), recorded before anyone is told about it."""
        path = os.path.join(self.dir, "state")
        try:
            with open(path, "rb") as f:
                old = int(f.read().strip() or b"0")
        except (OSError, ValueError):
            old = -1
        state = (old | 1) + 2 if old >= 0 else 1
        state &= 0x7FFFFFFF
        _write_durably(path, b"%d\n" % state)
        return state

    def _path(self, host: Host) -> str:
        digest = hashlib.sha256(f"{host.name}\0{host.addr}".encode()).hexdigest()[:24]
        return os.path.join(self.hosts_dir, digest)

    def add(self, host: Host) -> None:
        _write_durably(self._path(host), json.dumps({"name": host.name, "addr": host.addr}).encode())

    def remove(self, host: Host) -> None:
        try:
            os.unlink(self._path(host))
        except FileNotFoundError:
            return
        _fsync_dir(self.hosts_dir)

    def hosts(self) -> Iterator[Host]:
        for entry in os.scandir(self.hosts_dir):
            if entry.name.endswith(".tmp"):
                continue
            try:
                with open(entry.path, "rb") as f:
                    d = json.loads(f.read())
                yield Host(str(d["name"]), str(d["addr"]))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable lock-client record %s", entry.path)
