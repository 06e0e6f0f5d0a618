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
"""
from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

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


class Ganesha:
    """ganesha.nfsd exporting one directory; starts rpcbind too when no
    portmapper is running, and stops only what it started."""

    def __init__(self, export: Path, port: int = 20490, mount_port: int | None = None,
                 work_dir: Path | None = None, start_timeout: float = 30.0) -> None:
        self.export = Path(export).resolve()
        self.port = port
        self.mount_port = mount_port or port + 1
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="ganesha-"))
        self.log_path = self.work_dir / "ganesha.log"
        self.start_timeout = start_timeout
        self._ganesha: subprocess.Popen[bytes] | None = None
        self._rpcbind: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the servers and return once both ports accept connections."""
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

    def _wait_for(self, ports: list[int], proc: subprocess.Popen[bytes], name: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not all(port_open(port) for port in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not come up on {ports}; log tail:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop ganesha.nfsd, then rpcbind if this object started it."""
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
        return self._ganesha is not None and self._ganesha.poll() is None

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
    args = parser.parse_args(argv)

    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with Ganesha(args.export, args.port, args.mountport, args.work_dir) as server:
        print(f"ganesha: listening on {BIND}:{server.port} mount {server.mount_port} "
              f"export {server.export} log {server.log_path}", flush=True)
        while not stop_requested and server.running():
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
