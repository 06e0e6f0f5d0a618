"""What the multi-head design (issue 16, docs/cluster.rst) relies on about ceph-fuse, checked
on the test cluster: two mounts, each in its own host (mount namespace), at the same path.

- st_ino of a file is the same through every mount (the inode number is Ceph's);
- a kernel handle from one mount (name_to_handle_at) opens the file through the other
  (open_by_handle_at): a handle needs no table to be resolved by another head;
- inotify on one mount sees nothing done through another (so heads must tell each other);
- ``ceph.dir.rctime`` of an ancestor moves after a change below it (a scanner can skip
  unchanged subtrees).
"""
from __future__ import annotations

import ctypes
import os
import select
import struct
import time

_libc = ctypes.CDLL(None, use_errno=True)
_MAX_HANDLE = 128
IN_CREATE = 0x100


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_char * _MAX_HANDLE)]


def name_to_handle(path: str) -> _FileHandle:
    fh = _FileHandle(_MAX_HANDLE, 0)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(-100, os.fsencode(path), ctypes.byref(fh), ctypes.byref(mount_id), 0):
        raise OSError(ctypes.get_errno(), "name_to_handle_at", path)
    return fh


def open_by_handle(mount_dir: str, fh: _FileHandle) -> int:
    mfd = os.open(mount_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "open_by_handle_at")
        return fd
    finally:
        os.close(mfd)


def inotify_events(watch_dir: str, action, wait: float) -> list[bytes]:
    """Names inotify reports in ``watch_dir`` within ``wait`` seconds after ``action()``."""
    ifd = _libc.inotify_init1(os.O_NONBLOCK)
    assert ifd >= 0
    try:
        assert _libc.inotify_add_watch(ifd, os.fsencode(watch_dir), IN_CREATE) >= 0
        action()
        names: list[bytes] = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([ifd], [], [], left)[0]:
                break
            buf = os.read(ifd, 4096)
            off = 0
            while off < len(buf):
                _, _, _, n = struct.unpack_from("iIII", buf, off)
                names.append(buf[off + 16:off + 16 + n].rstrip(b"\0"))
                off += 16 + n
        return names
    finally:
        os.close(ifd)


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

    # a kernel handle made on mount a opens the file on mount b
    fh = name_to_handle(f"{ma}/{base}/sub/f")
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

    deadline = time.monotonic() + 10
    while rctime() == before:
        assert time.monotonic() < deadline, f"rctime stayed {before!r}"
        time.sleep(0.2)
