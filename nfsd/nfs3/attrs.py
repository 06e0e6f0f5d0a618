"""POSIX stat results -> NFSv3 attribute structures (the hottest conversion in the server)."""
from __future__ import annotations

import os
import stat
from typing import Any, TypeAlias, overload

from protocol.nfs3 import fattr3, nfstime3, specdata3, wcc_attr, wcc_data

from ..fs.backend import StatResult

# XDR struct values are the namedtuples ``xdr.Struct`` generates at run time: typed Any.
Fattr3: TypeAlias = Any
WccAttr: TypeAlias = Any
WccData: TypeAlias = Any
NfsTime3: TypeAlias = Any

_FTYPE = {stat.S_IFREG: 1, stat.S_IFDIR: 2, stat.S_IFBLK: 3, stat.S_IFCHR: 4,
          stat.S_IFLNK: 5, stat.S_IFSOCK: 6, stat.S_IFIFO: 7}
_fattr3 = fattr3.cls
_time = nfstime3.cls
_spec = specdata3.cls
_wcc_attr = wcc_attr.cls
_wcc_data = wcc_data.cls
_NO_DEVICE = _spec(0, 0)
_BILLION = 1_000_000_000
# The struct values are built with tuple.__new__ directly: the generated classes' own
# __new__ is a Python function (a frame per value, four per fattr3), this is one C call.
_new = tuple.__new__


# nfstime3 values by nanoseconds, shared: a file's timestamps repeat from call to call (its
# mtime and atime until it changes, a SETATTR's pre-op ctime is the last one's post-op ctime),
# and a dictionary hit costs a fifth of a divmod and a struct value (tuple.__new__ allocates
# three tuples).  Values are immutable, so sharing is safe; bounded by clearing when full.
_times: dict[int, NfsTime3] = {}
TIMES_MAX = 4096


def nfstime(ns: int) -> NfsTime3:
    t = _times.get(ns)
    if t is None:
        s, n = divmod(ns, _BILLION)
        t = _new(_time, (s & 0xFFFFFFFF, n))
        if len(_times) >= TIMES_MAX:
            _times.clear()
        _times[ns] = t
    return t


def fattr(st: StatResult, fsid: int) -> Fattr3:
    # Equal timestamps share one nfstime3 (a file's atime and mtime often are).
    mode = st.st_mode
    rdev = st.st_rdev
    m = st.st_mtime_ns
    mtime = _times.get(m) or nfstime(m)
    c = st.st_ctime_ns
    ctime = mtime if c == m else _times.get(c) or nfstime(c)
    a = st.st_atime_ns
    atime = mtime if a == m else _times.get(a) or nfstime(a)
    return _new(_fattr3, (
        _FTYPE[mode & 0o170000], mode & 0o7777, st.st_nlink, st.st_uid, st.st_gid,
        st.st_size, st.st_blocks * 512,
        _spec(os.major(rdev), os.minor(rdev)) if rdev else _NO_DEVICE,
        fsid, st.st_ino, atime, mtime, ctime,
    ))


@overload
def wcc_before(st: StatResult) -> WccAttr: ...
@overload
def wcc_before(st: None) -> None: ...


def wcc_before(st: StatResult | None) -> WccAttr | None:
    if st is None:
        return None
    m = st.st_mtime_ns
    mtime = _times.get(m) or nfstime(m)
    c = st.st_ctime_ns
    return _new(_wcc_attr, (st.st_size, mtime, mtime if c == m else _times.get(c) or nfstime(c)))


def wcc(before: WccAttr | None, after: Fattr3 | None) -> WccData:
    return _new(_wcc_data, (before, after))


NO_WCC = _wcc_data(None, None)
