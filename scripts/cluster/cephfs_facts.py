"""Measure what the multi-head design relies on about ceph-fuse (docs/cluster.rst prints
these figures): cluster start, mount time, kernel handles across mounts, remounts, renames
and unlinks, how soon a create is visible through another mount, and how late
``ceph.dir.rctime`` moves on an ancestor.  Root only; everything in a private lab.

    python scripts/cluster/cephfs_facts.py [--creates 20] [--host-loss]

``--host-loss`` also measures how long a vanished client (its link down, holding write
capabilities on a file) blocks another mount's read of that file: with an explicit
eviction, and with the shortest session timeout the MDS accepts (30 s).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.cluster.ceph import CephCluster, missing_tools
from scripts.cluster.kernel import handle_body, name_to_handle, open_by_handle
from scripts.cluster.netns import Lab


def opens(mount: str, fh: object) -> str:
    """What opening ``fh`` on ``mount`` gives: the link count, or the error."""
    try:
        fd = open_by_handle(mount, fh)  # type: ignore[arg-type]
    except OSError as e:
        return f"error {e.strerror}"
    try:
        return f"opens, st_nlink {os.fstat(fd).st_nlink}"
    finally:
        os.close(fd)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def host_loss(lab: Lab, ceph: CephCluster) -> None:
    """Each way of getting past a vanished client's capabilities, timed."""
    for mode in ("evict", "session_timeout 30"):
        if mode != "evict":
            ceph.command(["fs", "set", "cephfs", "session_timeout", "30"])
        tag = mode.split()[0]
        a, b = lab.add(f"loss-a-{tag}"), lab.add(f"loss-b-{tag}")
        mnt = f"{ceph.dir}/loss-{tag}"
        ceph.mount(a, mnt)
        ceph.mount(b, mnt)
        name = ceph.mount_name(a, mnt)
        pa, pb = a.path(mnt), b.path(mnt)
        Path(pa, "f").write_text("x" * 1000)
        assert Path(pb, "f").read_text() == "x" * 1000       # both have had capabilities
        with open(f"{pa}/f", "a") as f:
            f.write("y")                                      # a holds write capabilities
        a.run(["ip", "link", "set", "eth0", "down"])         # a vanishes
        start = time.monotonic()
        if mode == "evict":
            sessions = json.loads(ceph.command(["tell", "mds.a", "session", "ls", "--format", "json"]))
            ids = [s_["id"] for s_ in sessions
                   if s_.get("client_metadata", {}).get("entity_id") == name.removeprefix("client.")]
            ceph.command(["tell", "mds.a", "client", "evict", f"id={ids[0]}"])
        res = subprocess.run(b.command(["timeout", "200", "cat", f"{mnt}/f"]), capture_output=True,
                             text=True, check=False)
        print(f"host loss, {mode}: the other mount read the file {time.monotonic() - start:.1f} s "
              f"after the link went down ({len(res.stdout)} bytes, exit {res.returncode})")
        ceph.unmount(a)
        ceph.unmount(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--creates", type=int, default=20, help="creates timed (one a second)")
    ap.add_argument("--host-loss", action="store_true", help="also time a vanished client (~1 min)")
    args = ap.parse_args()
    if os.geteuid() != 0 or missing_tools():
        print(f"needs root and {missing_tools()}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with Lab() as lab, CephCluster.started(lab.add("ceph", 10)) as ceph:
        print(f"cluster: monitor {ceph.timings['mon']:.2f} s, daemons {ceph.timings['daemons']:.2f} s, "
              f"MDS active {ceph.timings['mds active']:.2f} s, lab + cluster {time.monotonic() - t0:.2f} s")
        a, b, c = lab.add("a"), lab.add("b"), lab.add("c")
        mnt = f"{ceph.dir}/m"
        print(f"ceph-fuse mounts: {ceph.mount(a, mnt):.3f} s, {ceph.mount(b, mnt):.3f} s")
        pa, pb = a.path(mnt), b.path(mnt)
        os.makedirs(f"{pa}/top/mid/low")

        Path(pa, "top/f").write_text("x")
        fh = name_to_handle(f"{pa}/top/f")
        kind, body = handle_body(fh)
        print(f"kernel handle: type {kind:#x}, {len(body)} bytes; same from the other mount: "
              f"{handle_body(name_to_handle(f'{pb}/top/f')) == (kind, body)}; "
              f"st_ino same: {os.stat(f'{pa}/top/f').st_ino == os.stat(f'{pb}/top/f').st_ino}")
        ino = os.stat(f"{pa}/top/f").st_ino
        ceph.unmount(a)
        ceph.mount(a, mnt)
        print(f"after remount: st_ino same {os.stat(f'{pa}/top/f').st_ino == ino}, "
              f"handle {opens(pa, fh)}")
        os.rename(f"{pa}/top/f", f"{pa}/top/mid/g")
        print(f"after rename: handle on the other mount {opens(pb, fh)}")
        os.unlink(f"{pa}/top/mid/g")
        ceph.mount(c, mnt)
        print(f"after unlink: own mount {opens(pa, fh)}, other mount {opens(pb, fh)}, "
              f"mount made after the unlink {opens(c.path(mnt), fh)}")

        visible, rctime = [], []
        for i in range(args.creates):
            before = os.getxattr(f"{pb}/top", "ceph.dir.rctime")
            start = time.monotonic()
            Path(pa, f"top/mid/low/f{i}").touch()
            while not os.path.exists(f"{pb}/top/mid/low/f{i}"):
                time.sleep(0.001)
            visible.append(time.monotonic() - start)
            while (os.getxattr(f"{pb}/top", "ceph.dir.rctime") == before
                   and time.monotonic() - start < 60):
                time.sleep(0.01)
            rctime.append(time.monotonic() - start)
            time.sleep(max(0.0, 1.05 - (time.monotonic() - start) % 1))   # the next second
        print(f"create visible through the other mount ({args.creates}): p50 "
              f"{1000 * percentile(visible, 0.5):.1f} ms, max {1000 * max(visible):.1f} ms")
        print(f"rctime two levels up moved, seen through the other mount: p50 "
              f"{percentile(rctime, 0.5):.2f} s, p90 {percentile(rctime, 0.9):.2f} s, "
              f"max {max(rctime):.2f} s; all: {sorted(round(x, 2) for x in rctime)}")
        if args.host_loss:
            host_loss(lab, ceph)
    return 0


if __name__ == "__main__":
    sys.exit(main())
