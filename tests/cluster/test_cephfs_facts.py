"""What the multi-head design (issue 16, docs/cluster.rst) relies on about ceph-fuse, checked
on the test cluster: two mounts, each in its own host (mount namespace), at the same path.

- st_ino of a file is the same through every mount (the inode number is Ceph's);
- a kernel handle from one mount (name_to_handle_at) is the same from the other and opens
  the file there (open_by_handle_at): a handle needs no table to be resolved by another head;
- inotify on one mount sees nothing done through another (so heads must tell each other);
- ``ceph.dir.rctime`` of an ancestor moves after a change below it (a scanner can skip
  unchanged subtrees).
"""
from __future__ import annotations

import os
import time

from scripts.cluster.kernel import (
    handle_body,
    inotify_events,
    name_to_handle,
    open_by_handle,
)


def test_ceph_fuse_identity_and_blind_spots(ceph, host_factory) -> None:
    a, b = host_factory("fa"), host_factory("fb")
    mnt = f"{ceph.dir}/mnt-facts"     # the same path, a mount in each host's namespace
    for host in (a, b):
        ceph.mount(host, mnt)
    ma, mb = a.path(mnt), b.path(mnt)          # the two mounts, seen from here
    base = f"facts-{os.getpid()}-{time.monotonic_ns()}"
    os.makedirs(f"{ma}/{base}/sub")
    with open(f"{ma}/{base}/sub/f", "wb") as f:
        f.write(b"through a")

    # the same inode number through both mounts
    assert os.stat(f"{ma}/{base}/sub/f").st_ino == os.stat(f"{mb}/{base}/sub/f").st_ino
    assert os.stat(f"{ma}/{base}").st_ino == os.stat(f"{mb}/{base}").st_ino

    # a kernel handle made on mount a opens the file on mount b; both mounts give the
    # same handle (so a head may carry it inside its NFS handles)
    fh = name_to_handle(f"{ma}/{base}/sub/f")
    assert handle_body(fh) == handle_body(name_to_handle(f"{mb}/{base}/sub/f"))
    assert len(handle_body(fh)[1]) <= 32
    fd = open_by_handle(mb, fh)
    try:
        assert os.read(fd, 100) == b"through a"
    finally:
        os.close(fd)

    # rctime of the top directory, before a change deep below it
    def rctime() -> bytes:
        return os.getxattr(f"{mb}/{base}", "ceph.dir.rctime")

    before = rctime()
    time.sleep(1.1)      # rctime has one-second resolution in its printed form

    # inotify on mount b: blind to a create through mount a, sees one through b itself
    def create_through_a() -> None:
        open(f"{ma}/{base}/sub/g", "wb").close()

    def create_through_b() -> None:
        open(f"{mb}/{base}/sub/h", "wb").close()

    assert inotify_events(f"{mb}/{base}/sub", create_through_a, wait=1.0) == []
    assert inotify_events(f"{mb}/{base}/sub", create_through_b, wait=1.0) == [b"h"]
    assert os.path.exists(f"{mb}/{base}/sub/g")         # yet b sees the file itself

    deadline = time.monotonic() + 30      # usually at once, seen as late as 9 s
    while rctime() == before:
        assert time.monotonic() < deadline, f"rctime stayed {before!r}"
        time.sleep(0.2)
