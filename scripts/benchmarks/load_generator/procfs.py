"""Which process serves a loopback TCP connection, read from /proc (Linux): with
``--workers`` the kernel hands each accepted connection to one worker, and a measurement
or a test of one worker must know which took it.  No imports beyond the standard library,
so tests load it by path (tests/server/test_workers.py)."""
from __future__ import annotations

import contextlib
import os


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (/proc/PID/stat, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the IPv4 socket whose local end is ``local_port`` and remote end
    ``remote_port`` (the server's end of a loopback connection: server port, client port)."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
                return int(fields[9]) or None
    return None


def connection_holder(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server's end of the connection from ``client_port``."""
    inode = socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


def established_holders(server_port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections to ``server_port`` each of ``pids`` holds
    (IPv4 and IPv6 tables): which workers a client's connections (nconnect) reached."""
    inodes: set[int] = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table_path) as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == server_port:
                    inodes.add(int(fields[9]))
    targets = {f"socket:[{inode}]" for inode in inodes if inode}
    held: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                        held[pid] = held.get(pid, 0) + 1
    return held
