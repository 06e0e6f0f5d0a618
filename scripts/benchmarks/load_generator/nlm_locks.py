#!/usr/bin/env python3
"""NLM v4 against pysfsd and NFS-Ganesha: the same lock sequence, and lock throughput.

    python scripts/benchmarks/load_generator/nlm_locks.py [--pairs 3000]

Runs as root inside a private network and mount namespace of its own (it re-executes
itself under ``unshare --net --mount``, set up by scripts/vm/ganesha.py's
``setup_private_namespace``): Ganesha's NLM needs rpcbind on port 111 and rpc.statd, and
those must not meet anybody else's.  In there it starts rpcbind, rpc.statd,
Ganesha (FSAL VFS, NLM on) and pysfsd, each exporting its own directory with one file, then

1. sends both servers the same sequence of NLM calls from two raw-RPC clients (caller names
   ``alpha`` and ``beta``: conflicts, ranges, shared locks, TEST holders, UNLOCK splits,
   64-bit offsets) and prints each call's result side by side; exit status 1 if they differ;
2. times uncontended LOCK+UNLOCK pairs (one client, one call at a time, over TCP) and prints
   pairs per second of wall time and of the server's own CPU time (utime+stime from /proc).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from protocol import mount3, nfs3, nlm4, portmap
from protocol.nlm4 import NLM4
from protocol.rpc import AUTH_SYS, Credentials
from nfsd.rpc.client import RpcClient, RpcError
from procfs import cpu_seconds  # scripts/benchmarks/load_generator/, this script's directory
from servers import ganesha_module


ROOT = Credentials(AUTH_SYS, 0, 0, (), b"bench")
GANESHA_CONF = """\
NFS_CORE_PARAM {{
    NFS_Port = {port}; MNT_Port = {mount_port}; NLM_Port = {nlm_port};
    NFS_Protocols = 3; Bind_Addr = 127.0.0.1; Enable_NLM = true; Enable_RQUOTA = false;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
NFSV4 {{ Graceless = true; Grace_Period = 1; Lease_Lifetime = 1; }}
EXPORT {{
    Export_Id = 1; Path = {export}; Pseudo = {export}; Protocols = 3; Access_Type = RW;
    Squash = No_Root_Squash; SecType = sys; FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


def rpc_to(port: int) -> RpcClient:
    """One TCP connection, one call at a time, as root."""
    return RpcClient(port, timeout=20, cred=ROOT)


def getport(prog: int, vers: int) -> int:
    return int(rpc_to(111).call(portmap.PORTMAP2, 3, portmap.mapping(prog, vers, portmap.IPPROTO_TCP, 0)))


def file_handle(mount_port: int, nfs_port: int, export: Path) -> bytes:
    status, ok = rpc_to(mount_port).call(mount3.MOUNT3, 1, os.fsencode(export))
    assert status == 0, f"MNT: {status}"
    status, res = rpc_to(nfs_port).call(nfs3.NFS3, 3, nfs3.LOOKUP3args.cls(
        nfs3.diropargs3.cls(nfs3.nfs_fh3.cls(ok.fhandle), b"f")))
    assert status == 0, f"LOOKUP: {status}"
    return bytes(res.object.data)


class Client:
    def __init__(self, nlm_port: int, name: bytes, fh: bytes) -> None:
        self.rpc, self.name, self.fh = rpc_to(nlm_port), name, fh

    def alock(self, svid: int, off: int, length: int) -> Any:
        return nlm4.nlm4_lock(self.name, self.fh, b"%d@%s" % (svid, self.name), svid, off, length)

    def lock(self, svid: int, off: int, length: int, excl: bool = True) -> str:
        r = self.rpc.call(NLM4, 2, nlm4.nlm4_lockargs(b"c", False, excl, self.alock(svid, off, length), False, 1))
        return nlm4.nlm4_stats.values(r.stat).name

    def unlock(self, svid: int, off: int, length: int) -> str:
        r = self.rpc.call(NLM4, 4, nlm4.nlm4_unlockargs(b"u", self.alock(svid, off, length)))
        return nlm4.nlm4_stats.values(r.stat).name

    def test(self, svid: int, off: int, length: int, excl: bool = True) -> str:
        stat, holder = self.rpc.call(NLM4, 1, nlm4.nlm4_testargs(b"t", excl, self.alock(svid, off, length))).test_stat
        name = nlm4.nlm4_stats.values(stat).name
        if holder is None:
            return name
        return f"{name} holder(excl={holder.exclusive} svid={holder.svid} off={holder.l_offset} len={holder.l_len})"


TOP = (1 << 63) - 10
SEQUENCE: list[tuple[str, str, tuple[Any, ...]]] = [
    ("a", "lock", (1, 0, 100)), ("a", "lock", (1, 0, 100)), ("b", "lock", (7, 50, 10)),
    ("b", "test", (7, 99, 5)), ("b", "test", (7, 100, 0)), ("b", "lock", (7, 100, 0)),
    ("a", "lock", (2, 1 << 40, 10, False)), ("b", "unlock", (7, 1 << 40, 0)),
    ("a", "lock", (2, 1 << 40, 10, False)), ("b", "lock", (8, 1 << 40, 10, False)),
    ("b", "lock", (8, (1 << 40) + 5, 1, True)), ("b", "test", (8, (1 << 40) + 5, 1, True)),
    ("a", "lock", (3, 10, 1)), ("a", "lock", (4, TOP, 0)), ("b", "lock", (7, TOP - 5, 6, False)),
    ("b", "lock", (7, TOP - 5, 5, False)), ("b", "test", (9, TOP + 9, 1)), ("a", "lock", (4, 1 << 63, 0)),
    ("a", "lock", (4, 5, (1 << 64) - 5)), ("a", "lock", (4, 5, (1 << 64) - 4)), ("a", "test", (4, (1 << 64) - 1, 1)), ("a", "unlock", (4, 1 << 63, 1)),
    ("a", "unlock", (4, TOP + 3, 0)), ("b", "lock", (7, TOP + 3, 100)), ("b", "test", (9, TOP + 9, 1)), ("a", "unlock", (1, 0, 0)), ("b", "lock", (7, 0, 100)),
    ("a", "test", (1, 0, 1, False)), ("b", "unlock", (7, 0, 0)), ("b", "unlock", (8, 0, 0)),
    ("a", "unlock", (2, 0, 0)), ("a", "unlock", (4, 0, 0)), ("b", "test", (9, 0, 0)),
]


def run_sequence(nlm_port: int, fh: bytes) -> list[str]:
    clients = {"a": Client(nlm_port, b"alpha", fh), "b": Client(nlm_port, b"beta", fh)}
    return [getattr(clients[who], what)(*args) for who, what, args in SEQUENCE]


def throughput(nlm_port: int, fh: bytes, pid: int, pairs: int) -> tuple[float, float]:
    c = Client(nlm_port, b"bench", fh)
    for _ in range(50):  # warm up (Ganesha: NSM monitoring of the new client)
        c.lock(1, 0, 1), c.unlock(1, 0, 1)
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for _ in range(pairs):
        assert c.lock(1, 0, 1) == "NLM4_GRANTED"
        c.unlock(1, 0, 1)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    return pairs / wall, pairs / cpu if cpu > 0 else float("inf")


def wait_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up on port {port}")
            time.sleep(0.2)


def inside(args: argparse.Namespace) -> int:
    ganesha_module().setup_private_namespace()
    work = Path(tempfile.mkdtemp(prefix="nlm-bench-"))
    procs: list[subprocess.Popen[Any]] = []
    try:
        procs.append(subprocess.Popen(["rpcbind", "-f", "-w"]))
        wait_port(111, procs[-1], "rpcbind")
        procs.append(subprocess.Popen(["rpc.statd", "-F", "--no-notify"], stderr=subprocess.DEVNULL))
        time.sleep(1)
        exports = {}
        for name in ("ganesha", "pysfsd"):
            exports[name] = work / name / "export"
            exports[name].mkdir(parents=True)
            (exports[name] / "f").write_bytes(b"x" * 4096)
        conf = work / "ganesha.conf"
        conf.write_text(GANESHA_CONF.format(port=20490, mount_port=20491, nlm_port=20492,
                                            export=exports["ganesha"]))
        ganesha = subprocess.Popen(["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(work / "ganesha.log"),
                                    "-p", str(work / "ganesha.pid")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT)
        procs.append(ganesha)
        try:
            wait_port(20490, ganesha, "ganesha.nfsd")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n" + (work / "ganesha.log").read_text(errors="replace")[-3000:]) from None
        log = open(work / "pysfsd.log", "wb")
        pysfsd = subprocess.Popen([sys.executable, "-m", "nfsd", "--export", f'"{exports["pysfsd"]}" *(rw,no_root_squash,insecure)',
                                   "--bind", "127.0.0.1", "--port", "20590", "--state-dir", str(work / "state")],
                                  cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        procs.append(pysfsd)
        wait_port(20590, pysfsd, "pysfsd")
        servers = {
            "ganesha": (ganesha.pid, 20491, 20490),
            "pysfsd": (pysfsd.pid, 20590, 20590),
        }
        deadline = time.monotonic() + 30
        while True:   # Ganesha registers NLM a moment after it listens, and has a grace period
            try:
                nlm_ports = {"ganesha": getport(100021, 4), "pysfsd": 20590}
                if nlm_ports["ganesha"]:
                    fh = file_handle(20491, 20490, exports["ganesha"])
                    if Client(nlm_ports["ganesha"], b"probe", fh).lock(1, 0, 1) != "NLM4_DENIED_GRACE_PERIOD":
                        break
            except (OSError, RuntimeError, AssertionError, RpcError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Ganesha's NLM did not become ready:\n" + (work / "ganesha.log").read_text()[-3000:])
            time.sleep(1)
        Client(nlm_ports["ganesha"], b"probe", fh).unlock(1, 0, 1)
        results = {}
        handles = {}
        for name, (pid, mport, nport) in servers.items():
            handles[name] = file_handle(mport, nport, exports[name])
            results[name] = run_sequence(nlm_ports[name], handles[name])
        same = results["ganesha"] == results["pysfsd"]
        print(f"{'call':44} {'NFS-Ganesha':40} pysfsd")
        for (who, what, a), g, p in zip(SEQUENCE, results["ganesha"], results["pysfsd"]):
            mark = "" if g == p else "   <-- differs"
            print(f"{who} {what}{a!s:38} {g:40} {p}{mark}")
        print("sequence: " + ("same results" if same else "DIFFERENT results"))
        for name, (pid, mport, nport) in servers.items():
            wall, cpu = throughput(nlm_ports[name], handles[name], pid, args.pairs)
            print(f"{name:8} uncontended LOCK+UNLOCK pairs: {wall:8.0f}/s wall, {cpu:8.0f}/s of server CPU "
                  f"({args.pairs} pairs, TCP, one call at a time)")
        return 0 if same else 1
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3000, help="LOCK+UNLOCK pairs per server (default 3000)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        print("nlm_locks: needs root (a private network and mount namespace)", file=sys.stderr)
        return 2
    return subprocess.call([*ganesha_module().UNSHARE, sys.executable, __file__, "--inside",
                            "--pairs", str(args.pairs)])


if __name__ == "__main__":
    sys.exit(main())
