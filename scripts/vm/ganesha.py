#!/usr/bin/env python3
"""Run NFS-Ganesha (FSAL VFS, NFSv3 over TCP only) on 127.0.0.1 as a reference
server: it validates the VM harness while pysfsd is not ready, and benchmarks
compare pysfsd with it.  Needs root, ganesha.nfsd and rpcbind (Ganesha
refuses to start unless it can register with a portmapper).

Usage:
    python scripts/vm/ganesha.py --export /tmp/ganesha_export [--port 20490] [--mountport M]

Serves until SIGINT or SIGTERM.  From Python:
    with Ganesha(Path("/tmp/ganesha_export"), port=20490) as server: ...

Ganesha answers PROG_UNAVAIL to MOUNT calls on the NFS port even when both
are configured on the same port, so MOUNT gets its own port (default
port + 1); give the VM test both (--port and --mountport).

Ganesha registers with rpcbind on port 111, refuses to start when another
server's registration of NFS v3 holds it, and at start unregisters every other
NFS and MOUNT mapping there.  ``--private`` (``Ganesha(..., private=True)``)
keeps it away from the host's rpcbind: it runs, with an rpcbind of its own, in
a private network and mount namespace (``unshare --net --mount``), whose
loopback only the caller reaches, through ``Ganesha.namespace()`` (or
``nsenter --net --target PID``).  tests/server/test_nlm_ganesha.py's script sets up
its namespace with the same ``setup_private_namespace``.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: scripts.cluster
from scripts.cluster.netns import network_namespace  # noqa: E402  (setns(2), shared with the cluster lab)

BIND = "127.0.0.1"
RPCBIND_PORT = 111
CONFIG = """\
NFS_CORE_PARAM {{
    NFS_Port = {port};
    MNT_Port = {mount_port};
    NFS_Protocols = 3;
    Bind_Addr = {bind};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = {export};
    Protocols = 3;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Transports = TCP;
    Attr_Expiration_Time = 0;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


def port_open(port: int, host: str = BIND) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# -- a private network and mount namespace ------------------------------------------------
PRIVATE_TOOLS = ("unshare", "ip", "rpcbind")
UNSHARE = ["unshare", "--net", "--mount"]   # no --fork: the command keeps the pid Popen saw


def setup_private_namespace() -> None:
    """Make a fresh ``unshare --net --mount`` fit for rpcbind, rpc.statd and Ganesha: mounts
    that stay inside, a loopback that is up, and a /run and /var/lib/nfs of its own (rpcbind's
    socket and lock, statd's state), so nothing meets the host's daemons.  Call it first
    thing inside the namespace."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # getaddrinfo(AI_ADDRCONFIG), which Ganesha uses for Bind_Addr, wants an IPv4 address
    # other than 127/8: a documentation address on this namespace's loopback, routing nowhere.
    subprocess.run(["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    for d in ("/run", "/var/lib/nfs"):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    for d in ("/var/lib/nfs/sm", "/var/lib/nfs/sm.bak", "/run/rpcbind"):
        os.makedirs(d, exist_ok=True)




class Ganesha:
    """ganesha.nfsd exporting one directory; starts rpcbind too when no
    portmapper is running, and stops only what it started.  With ``private``
    all of it runs in a private network and mount namespace (see the module's
    docstring), reached through ``namespace()``."""

    def __init__(self, export: Path, port: int = 20490, mount_port: int | None = None,
                 work_dir: Path | None = None, start_timeout: float = 30.0,
                 private: bool = False) -> None:
        self.export = Path(export).resolve()
        self.port = port
        self.mount_port = mount_port or port + 1
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="ganesha-"))
        self.log_path = self.work_dir / "ganesha.log"
        self.start_timeout = start_timeout
        self.private = private
        self._ganesha: subprocess.Popen[bytes] | None = None
        self._rpcbind: subprocess.Popen[bytes] | None = None
        self._holder: subprocess.Popen[bytes] | None = None   # the namespace's first process

    @property
    def namespace_pid(self) -> int | None:
        """A process in the private namespace (``nsenter --net --target`` it), or None."""
        return self._holder.pid if self._holder is not None else None

    @contextmanager
    def namespace(self) -> Iterator[None]:
        """The block runs where the servers listen: in their private network namespace, or
        (not private) unchanged."""
        if self._holder is None:
            yield
            return
        with network_namespace(self._holder.pid):
            yield

    def start(self) -> None:
        """Start the servers and return once both ports accept connections."""
        if self.private:
            self._start_private()
            return
        for port in {self.port, self.mount_port}:
            if port_open(port):
                raise RuntimeError(f"port {port} is already in use")
        self.export.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not port_open(RPCBIND_PORT):
            self._rpcbind = subprocess.Popen(["rpcbind", "-f", "-w"], stdin=subprocess.DEVNULL)
            self._wait_for([RPCBIND_PORT], self._rpcbind, "rpcbind")
        config = self.work_dir / "ganesha.conf"
        config.write_text(CONFIG.format(port=self.port, mount_port=self.mount_port,
                                        bind=BIND, export=self.export))
        self._ganesha = subprocess.Popen(
            ["ganesha.nfsd", "-F", "-f", str(config), "-L", str(self.log_path),
             "-p", str(self.work_dir / "ganesha.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_for([self.port, self.mount_port], self._ganesha, "ganesha.nfsd")

    def _start_private(self) -> None:
        """This script under ``unshare``, serving until its stdin closes (so it also ends
        when its caller dies); its first line says it listens."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._holder = subprocess.Popen(
            [*UNSHARE, sys.executable, str(Path(__file__).resolve()), "--in-private-namespace",
             "--export", str(self.export), "--port", str(self.port), "--mountport", str(self.mount_port),
             "--work-dir", str(self.work_dir), "--start-timeout", str(self.start_timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if not line.startswith(b"ganesha: listening"):
            rest = line + self._holder.stdout.read()
            self.stop()
            raise RuntimeError(f"Ganesha in a private namespace did not start:\n"
                               f"{rest.decode(errors='replace')[-3000:]}\nlog tail:\n{self.log_tail()}")

    def _wait_for(self, ports: list[int], proc: subprocess.Popen[bytes], name: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not all(port_open(port) for port in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not come up on {ports}; log tail:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop ganesha.nfsd, then rpcbind if this object started it (private: end the
        namespace's first process, which stops both)."""
        if self._holder is not None:
            assert self._holder.stdin is not None and self._holder.stdout is not None
            self._holder.stdin.close()
            try:
                self._holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait()
            self._holder.stdout.close()
            self._holder = None
        for proc in (self._ganesha, self._rpcbind):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._ganesha = self._rpcbind = None

    def running(self) -> bool:
        proc = self._holder or self._ganesha
        return proc is not None and proc.poll() is None

    def log_tail(self, count: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-count:])

    def __enter__(self) -> Ganesha:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="directory to export (created if missing)")
    parser.add_argument("--port", type=int, default=20490, help="NFS port on 127.0.0.1")
    parser.add_argument("--mountport", type=int, help="MOUNT port (default: --port + 1)")
    parser.add_argument("--work-dir", type=Path, help="config, log and pid file (default: a temp dir)")
    parser.add_argument("--private", action="store_true",
                        help="run in a private network and mount namespace with its own rpcbind "
                             "(reach it with nsenter --net --target PID)")
    parser.add_argument("--start-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--in-private-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    if args.in_private_namespace:
        setup_private_namespace()
        threading.Thread(target=_set_at_eof, args=(sys.stdin.buffer, stop), daemon=True).start()
    where = "a private namespace, " if args.private or args.in_private_namespace else ""
    with Ganesha(args.export, args.port, args.mountport, args.work_dir, args.start_timeout,
                 private=args.private) as server:
        print(f"ganesha: listening on {where}{BIND}:{server.port} mount {server.mount_port} "
              f"export {server.export} log {server.log_path} pid {server.namespace_pid or os.getpid()}",
              flush=True)
        while not stop.is_set() and server.running():
            stop.wait(0.5)
    return 0


def _set_at_eof(stream: IO[bytes], event: threading.Event) -> None:
    """The caller of a private Ganesha closes our stdin to stop it (or dies, which does too)."""
    while stream.read(4096):
        pass
    event.set()


if __name__ == "__main__":
    sys.exit(main())
