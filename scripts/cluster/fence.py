"""Fence a lost head before taking over its address: evict its CephFS session.

keepalived's ``notify_master`` runs this on the head that has just become MASTER (the
deployment in docs/cluster.rst), naming the other head's ceph-fuse client.  Eviction makes
the MDS drop that client's capabilities at once (a read of a file the lost head had open
for writing otherwise blocks until the session times out, 36-67 s: docs/cluster.rst) and
blocklists it, so the old head cannot write stale data should it come back.  No session of
that name (a clean stop, or already evicted) is not an error.

    python scripts/cluster/fence.py -c /etc/ceph/ceph.conf --mds a --client client.head-a
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys


def ceph(conf: str, *args: str) -> str:
    return subprocess.run(["ceph", "-c", conf, "--connect-timeout", "10", *args], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def fence(conf: str, mds: str, client: str) -> list[int]:
    """Evict every session of ``client`` (``client.NAME`` or ``NAME``); the ids evicted."""
    name = client.removeprefix("client.")
    sessions = json.loads(ceph(conf, "tell", f"mds.{mds}", "session", "ls", "--format", "json"))
    ids = [s["id"] for s in sessions if s.get("client_metadata", {}).get("entity_id") == name]
    for session_id in ids:
        ceph(conf, "tell", f"mds.{mds}", "client", "evict", f"id={session_id}")
    return ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--conf", required=True, help="ceph.conf of the cluster")
    ap.add_argument("--mds", default="a", help="the active MDS's name (default a)")
    ap.add_argument("--client", required=True, help="the other head's ceph client name")
    opts = ap.parse_args()
    ids = fence(opts.conf, opts.mds, opts.client)
    print(f"fenced {opts.client}: evicted sessions {ids}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
