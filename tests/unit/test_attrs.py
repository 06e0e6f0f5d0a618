"""stat results -> fattr3 and wcc_attr (nfsd/nfs3/attrs.py), against the fields computed
the plain way: equal timestamps (which share one nfstime3) and different ones, times past
2106 (seconds wrap to 32 bits), a directory and a device."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nfsd.nfs3 import attrs
from protocol import nfs3


def _time(ns: int) -> object:
    return nfs3.nfstime3((ns // 1_000_000_000) & 0xFFFFFFFF, ns % 1_000_000_000)


def _expected(st: os.stat_result, fsid: int) -> object:
    kinds = {0o100000: 1, 0o040000: 2, 0o060000: 3, 0o020000: 4, 0o120000: 5, 0o140000: 6, 0o010000: 7}
    rdev = nfs3.specdata3(os.major(st.st_rdev), os.minor(st.st_rdev)) if st.st_rdev else nfs3.specdata3(0, 0)
    return nfs3.fattr3(kinds[st.st_mode & 0o170000], st.st_mode & 0o7777, st.st_nlink, st.st_uid, st.st_gid,
                       st.st_size, st.st_blocks * 512, rdev, fsid, st.st_ino,
                       _time(st.st_atime_ns), _time(st.st_mtime_ns), _time(st.st_ctime_ns))


@pytest.mark.parametrize("atime, mtime", [(1, 1), (5, 7), (7, 5), (10**18 + 3, 10**18 + 3),
                                          (0, 2**40 * 10**9 + 1), (1_700_000_000_123_456_789, 1)])
def test_attributes_of_a_file(tmp_path: Path, atime: int, mtime: int) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 5000)
    os.utime(f, ns=(atime, mtime))
    st = os.stat(f)
    assert attrs.fattr(st, 42) == _expected(st, 42)
    assert attrs.wcc_before(st) == nfs3.wcc_attr(st.st_size, _time(st.st_mtime_ns), _time(st.st_ctime_ns))


def test_a_new_file_whose_times_are_all_equal(tmp_path: Path) -> None:
    """A file just made has one time for all three (they share one nfstime3 value)."""
    f = tmp_path / "new"
    f.write_bytes(b"")
    st = os.stat(f)
    assert st.st_atime_ns == st.st_mtime_ns == st.st_ctime_ns
    assert attrs.fattr(st, 1) == _expected(st, 1)
    assert attrs.wcc_before(st) == nfs3.wcc_attr(0, _time(st.st_mtime_ns), _time(st.st_ctime_ns))


@pytest.mark.parametrize("path", ["/dev/null", "/tmp"])
def test_attributes_of_a_device_and_a_directory(path: str) -> None:
    st = os.stat(path)
    assert attrs.fattr(st, 3) == _expected(st, 3)


def test_shared_times_stay_bounded_and_exact(tmp_path: Path) -> None:
    """nfstime3 values are shared through a cache by nanoseconds (``attrs._times``): past
    its bound it starts again, and every value is the one computed the plain way."""
    f = tmp_path / "f"
    f.write_bytes(b"")
    start = 1_700_000_000_000_000_000
    for i in range(attrs.TIMES_MAX + 50):
        ns = start + i * 1_000_000_007  # crosses second boundaries, distinct nanoseconds
        os.utime(f, ns=(ns, ns + 1))
        st = os.stat(f)
        assert attrs.fattr(st, 9) == _expected(st, 9)
        assert attrs.wcc_before(st) == nfs3.wcc_attr(0, _time(ns + 1), _time(st.st_ctime_ns))
        assert len(attrs._times) <= attrs.TIMES_MAX
    assert attrs.nfstime(start) == _time(start)
