"""A CephFS micro cluster for tests: one mon, one mgr, one OSD on memstore, one MDS.

Started from Debian's packages (ceph, ceph-mds, ceph-fuse; scripts/run-tests.sh installs
them) without cephadm (which wants container images): the configuration is written here,
every daemon runs in the foreground as a child of this process inside a network namespace
of a ``netns.Lab`` host (so its ports meet nobody else's), everything it stores lives in a
temporary directory (memstore keeps the objects in memory), authentication is off, pools
have one replica.  ``close()`` kills every daemon and ceph-fuse, also after a failure.

    with Lab() as lab, CephCluster.started(lab.add("ceph", 10)) as ceph:
        head = lab.add("a")
        ceph.mount(head, "/mnt/cephfs")

``python scripts/cluster/ceph.py`` starts one, prints the time each step took, and stops it.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.cluster.netns import Host, Lab, stop

TOOLS = ("ceph", "ceph-mon", "ceph-mgr", "ceph-osd", "ceph-mds", "ceph-fuse", "monmaptool")

CONFIG = """\
[global]
fsid = {fsid}
mon host = v2:{addr}:3300
mon initial members = a
public addr = {addr}
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
ms bind ipv6 = false
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
pid file = {dir}/run/$name.pid
keyring = {dir}/keyring
mon data = {dir}/mon/$name
mgr data = {dir}/mgr/$name
osd data = {dir}/osd/$name
mds data = {dir}/mds/$name
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
osd crush chooseleaf type = 0
crush location = root=default host=lab
# no daemons to update: do not wait for them
mon osd down out interval = 0
mgr initial modules =
debug ms = 0
"""


class CephCluster:
    """The daemons of one micro cluster, running in ``host``."""

    def __init__(self, host: Host, work_dir: Path | None = None,
                 memstore_bytes: int = 1 << 30) -> None:
        if host.address is None:
            raise ValueError("the cluster's host needs an address (Lab.add)")
        self.host = host
        self._own_dir = work_dir is None
        self.dir = Path(work_dir or tempfile.mkdtemp(prefix="pysfsd-ceph-"))
        self.conf = self.dir / "ceph.conf"
        self.fsid = str(uuid.uuid4())
        self.memstore_bytes = memstore_bytes
        self._daemons: dict[str, subprocess.Popen] = {}
        self._mounts: list[tuple[Host, str, str, subprocess.Popen]] = []  # host, path, name, process
        self._mount_numbers = itertools.count()
        self.timings: dict[str, float] = {}     # step -> seconds since start() began

    # -- start ----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> CephCluster:
        t0 = time.monotonic()
        deadline = t0 + timeout
        for sub in ("run", "log", "mon/mon.a", "mgr/mgr.x", "mds/mds.a", "osd/osd.0"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "keyring").write_text("")
        self.conf.write_text(CONFIG.format(fsid=self.fsid, addr=self.host.address, dir=self.dir,
                                           memstore_bytes=self.memstore_bytes))
        monmap = self.dir / "monmap"
        self._tool(["monmaptool", "--create", "--fsid", self.fsid,
                    "--addv", "a", f"[v2:{self.host.address}:3300]", str(monmap)])
        self._tool(["ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap)])
        self._daemon("mon.a", ["ceph-mon", "-i", "a"])
        self._ceph(["mon", "stat"], deadline)     # the monitor answers
        self.timings["mon"] = time.monotonic() - t0
        self._daemon("mgr.x", ["ceph-mgr", "-i", "x"])
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph(["osd", "new", osd_uuid], deadline).strip()
        if osd_id != "0":
            raise RuntimeError(f"unexpected OSD id {osd_id!r}")
        self._tool(["ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        self._daemon("osd.0", ["ceph-osd", "-i", "0"])
        for pool in ("cephfs_metadata", "cephfs_data"):
            self._ceph(["osd", "pool", "create", pool, "8"], deadline)
        self._ceph(["fs", "new", "cephfs", "cephfs_metadata", "cephfs_data"], deadline)
        self._daemon("mds.a", ["ceph-mds", "-i", "a"])
        self.timings["daemons"] = time.monotonic() - t0
        self._wait_mds_active(deadline)
        self.timings["mds active"] = time.monotonic() - t0
        return self

    @classmethod
    @contextmanager
    def started(cls, host: Host, **kw: object) -> Iterator[CephCluster]:
        cluster = cls(host, **kw)  # type: ignore[arg-type]
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.close()

    def _tool(self, argv: list[str]) -> str:
        """A one-shot command in the cluster's host; its output, or an error with it."""
        res = self.host.run(argv, check=False, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}"
                               f"{self._logs_tail()}")
        return res.stdout

    def _ceph(self, args: list[str], deadline: float) -> str:
        """The ``ceph`` command line (retried while the monitor is not up yet)."""
        argv = ["ceph", "-c", str(self.conf), "--connect-timeout", "10", *args]
        while True:
            res = self.host.run(argv, check=False, capture_output=True, text=True, timeout=60)
            if res.returncode == 0:
                return res.stdout
            if time.monotonic() > deadline:
                raise RuntimeError(f"ceph {' '.join(args)}: {res.stderr.strip()}{self._logs_tail()}")
            time.sleep(0.3)

    def _daemon(self, name: str, argv: list[str]) -> None:
        # -f: foreground (our child, so close() can kill it), logging to its log file.
        self._daemons[name] = self.host.popen([*argv, "-c", str(self.conf), "-f"],
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)

    def _wait_mds_active(self, deadline: float) -> None:
        while True:
            dump = json.loads(self._ceph(["fs", "dump", "--format", "json"], deadline))
            states = [info.get("state") for fs in dump.get("filesystems", [])
                      for info in fs["mdsmap"].get("info", {}).values()]
            if "up:active" in states:
                return
            for name, proc in self._daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}){self._logs_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no active MDS (states {states}){self._logs_tail()}")
            time.sleep(0.2)

    def _logs_tail(self) -> str:
        out = []
        for log in sorted((self.dir / "log").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-5:]
            out.append(f"\n--- {log.name}\n" + "\n".join(lines))
        return "".join(out)

    def command(self, args: list[str], timeout: float = 60.0) -> str:
        """A ``ceph`` command against this cluster (``["fs", "set", ...]``); its output."""
        return self._ceph(args, time.monotonic() + timeout)

    # -- clients --------------------------------------------------------------------------
    def mount(self, host: Host, mountpoint: str, timeout: float = 30.0) -> float:
        """Mount the file system with ceph-fuse at ``mountpoint`` in ``host``'s mount
        namespace (created there if missing); returns the seconds the mount took."""
        t0 = time.monotonic()
        host.run(["mkdir", "-p", mountpoint])
        before = host.run(["stat", "-c", "%d", mountpoint], capture_output=True, text=True).stdout
        name = f"client.m{next(self._mount_numbers)}"
        proc = host.popen(["ceph-fuse", "-c", str(self.conf), "-f", "--name", name, mountpoint],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        self._mounts.append((host, mountpoint, name, proc))
        deadline = t0 + timeout
        while host.run(["stat", "-c", "%d", mountpoint], capture_output=True,
                       text=True).stdout == before:
            if proc.poll() is not None:
                raise RuntimeError(f"ceph-fuse exited ({proc.returncode}){self._logs_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ceph-fuse did not mount {mountpoint}")
            time.sleep(0.02)
        return time.monotonic() - t0

    def mount_name(self, host: Host, mountpoint: str) -> str:
        """The client name (``client.mN``) of the ceph-fuse mounted at ``mountpoint`` in
        ``host``, as the MDS's session list shows it."""
        for h, mp, name, _ in self._mounts:
            if h is host and mp == mountpoint:
                return name
        raise KeyError(mountpoint)

    def unmount(self, host: Host, mountpoint: str | None = None) -> None:
        """End the ceph-fuse mount at ``mountpoint`` in ``host`` (None: all of the host's)."""
        keep = []
        for h, mp, name, proc in self._mounts:
            if h is host and mountpoint in (None, mp):
                h.run(["umount", "-l", mp], check=False, stderr=subprocess.DEVNULL)
                stop(proc)
            else:
                keep.append((h, mp, name, proc))
        self._mounts = keep

    # -- stop -----------------------------------------------------------------------------
    def close(self) -> None:
        """Unmount and kill everything this cluster started, clients first."""
        for host, mountpoint, _, proc in reversed(self._mounts):
            if proc.poll() is None:
                host.run(["umount", "-l", mountpoint], check=False, stderr=subprocess.DEVNULL)
            stop(proc)
        self._mounts.clear()
        # SIGKILL: memstore keeps nothing worth a clean shutdown (the MDS spends 4.5 s
        # flushing its journal on SIGTERM).
        for name in ("mds.a", "osd.0", "mgr.x", "mon.a"):
            proc = self._daemons.pop(name, None)
            if proc is not None:
                stop(proc, grace=0)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def missing_tools() -> list[str]:
    return [t for t in TOOLS + ("unshare", "nsenter", "ip") if shutil.which(t) is None]


def main() -> int:
    """Start a cluster, mount it twice, print the timings, stop it."""
    if os.geteuid() != 0 or missing_tools():
        print(f"needs root and {missing_tools()}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with Lab() as lab:
        ceph_host = lab.add("ceph", 10)
        with CephCluster.started(ceph_host) as ceph:
            total = time.monotonic() - t0
            for step, t in ceph.timings.items():
                print(f"{step:12s} {t:6.2f} s")
            print(f"{'total':12s} {total:6.2f} s (lab + cluster)")
            client = lab.add("client")
            for i in range(2):
                print(f"ceph-fuse mount {i}: {ceph.mount(client, f'{ceph.dir}/mnt{i}'):.3f} s")
            t1 = time.monotonic()
    print(f"{'stop':12s} {time.monotonic() - t1:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
