"""Network namespaces as hosts: a private "lab" of namespaces joined by a bridge.

Each host is a network *and* mount namespace of its own, held open by one small process
(``unshare --net --mount``) that ends when its stdin closes; commands run in it through
``nsenter``.  The hosts meet on a bridge that lives in one more namespace of the lab (the
"switch"), so nothing is added to the machine's own network: the addresses (192.0.2.0/24,
TEST-NET-1 by default) exist only inside these namespaces and no route leads out of them.
Mounts made inside a host (ceph-fuse) stay in its mount namespace and vanish with it.

Root only (namespaces, veth, bridge); needs util-linux's ``unshare``/``nsenter`` and
iproute2's ``ip``.  Everything is torn down by ``Lab.close()`` (a context manager), which
kills every process started through the lab, even when the block failed.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager, contextmanager
from typing import Self

TOOLS = ("unshare", "nsenter", "ip", "setpriv")
SUBNET = "192.0.2"          # TEST-NET-1 (RFC 5737): documentation only, routes nowhere
_CLONE_NEWNET = 0x40000000
# The holder: make its mounts private, bring its loopback up, then wait for stdin to close.
_HOLDER = ("mount --make-rprivate / && ip link set lo up && echo ready && exec cat >/dev/null")


class Host:
    """One network + mount namespace, held by a process; ``pid`` names it for nsenter/setns."""

    def __init__(self, name: str, address: str | None = None) -> None:
        self.name = name
        self.address = address
        self._holder = subprocess.Popen(["unshare", "--net", "--mount", "sh", "-c", _HOLDER],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line.strip() != b"ready":
            self._holder.kill()
            self._holder.wait()
            raise RuntimeError(f"namespace {name}: holder did not start")
        self.pid = self._holder.pid
        self._procs: list[subprocess.Popen] = []

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host (its network and mount namespace)."""
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--", *argv]

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 60,
            **kw: object) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), check=check, timeout=timeout, **kw)  # type: ignore[call-overload]

    def popen(self, argv: Sequence[str], **kw: object) -> subprocess.Popen:
        """A long-running process in this host, killed by ``close()``, or by the kernel if
        the calling process dies first (even by SIGKILL).  nsenter execs the command (no
        fork without --pid), nor does setpriv, so the Popen's pid is the daemon's own."""
        proc = subprocess.Popen(self.command(dies_with_parent(argv)), **kw)  # type: ignore[call-overload]
        self._procs.append(proc)
        return proc

    def path(self, inside: str) -> str:
        """A path as this host's mount namespace sees it, for the calling process to open."""
        return f"/proc/{self.pid}/root{inside}"

    @contextmanager
    def network(self) -> Iterator[None]:
        """Run the block (in this thread) in this host's network namespace: sockets made in
        it stay there after it ends.  setns(2) through ctypes (os.setns is 3.12+)."""
        with network_namespace(self.pid):
            yield

    def close(self) -> None:
        for proc in reversed(self._procs):
            stop(proc)
        self._procs.clear()
        if self._holder.poll() is None:
            assert self._holder.stdin is not None
            self._holder.stdin.close()
            try:
                self._holder.wait(5)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait()


def dies_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` made to get SIGKILL when the calling process ends, even by SIGKILL
    (util-linux ``setpriv --pdeathsig``, which then execs it), so a test runner killed
    outright leaves no daemon behind.  An ``argv`` that is itself a ``setpriv`` (a change
    of user, which would clear the setting) gets the option added instead."""
    if argv and argv[0] == "setpriv":
        return ["setpriv", "--pdeathsig", "KILL", *argv[1:]]
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv]


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (at once with 0); always reaps."""
    t0 = time.monotonic()
    if proc.poll() is None and grace <= 0:
        proc.kill()
        proc.wait()
    elif proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if os.environ.get("PYSFSD_LAB_DEBUG"):
        print(f"stopped {proc.args!s} in {time.monotonic() - t0:.2f} s", file=sys.stderr)


def network_namespace(pid: int) -> ContextManager[None]:
    """Run the block (in this thread) in the network namespace of process ``pid``: sockets
    made in it stay there after it ends.  setns(2) through ctypes (os.setns is 3.12+)."""
    return _setns(pid, "net", _CLONE_NEWNET)


@contextmanager
def _setns(pid: int, kind: str, flag: int) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        try:
            if libc.setns(target, flag) != 0:
                raise OSError(ctypes.get_errno(), f"setns into the {kind} namespace of {pid}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, flag) != 0:
                raise OSError(ctypes.get_errno(), f"setns back into the own {kind} namespace")
    finally:
        os.close(own)


class Lab:
    """Hosts on one private bridge.  ``add("a")`` gives host ``a`` the next address of
    ``SUBNET`` (or the one asked for) on its ``eth0``, wired to the bridge in the switch
    namespace; hosts reach each other by address, and nothing else."""

    def __init__(self, subnet: str = SUBNET) -> None:
        self.subnet = subnet
        self.hosts: dict[str, Host] = {}
        self._next = 1
        self.switch = Host("switch")
        try:
            self.switch.run(["ip", "link", "add", "name", "br0", "type", "bridge"])
            self.switch.run(["ip", "link", "set", "br0", "up"])
        except BaseException:
            self.switch.close()
            raise

    def add(self, name: str, last_octet: int | None = None) -> Host:
        if name in self.hosts:
            raise ValueError(f"host {name} exists")
        octet = self._next if last_octet is None else last_octet
        self._next = max(self._next, octet + 1)
        host = Host(name, f"{self.subnet}.{octet}")
        self.hosts[name] = host
        port = f"p{octet}"
        # Both ends are made in the switch; the host end then moves into the host.
        self.switch.run(["ip", "link", "add", "name", port, "type", "veth", "peer", "name", "eth0"])
        self.switch.run(["ip", "link", "set", "eth0", "netns", str(host.pid)])
        self.switch.run(["ip", "link", "set", port, "master", "br0", "up"])
        host.run(["ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
        host.run(["ip", "link", "set", "eth0", "up"])
        return host

    def remove(self, host: Host) -> None:
        """End one host (its veth pair goes with its namespace)."""
        host.close()
        self.hosts.pop(host.name, None)

    def close(self) -> None:
        for host in reversed(list(self.hosts.values())):
            host.close()
        self.hosts.clear()
        self.switch.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
