"""File handle layout: opaque to clients, at most 64 bytes, stable across restarts.

    version(1) kind(1) export_id(2) inode(8) generation(4)      = 16 bytes

The generation comes from FS_IOC_GETVERSION where the file system keeps one, so a handle
of a deleted file whose inode number was reused is told apart (STALE).  The boot time is
never part of a handle: restarts must not invalidate handles.  ``kind`` leaves room for
virtual (query) directories, whose handles carry their own payload after the export id.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from protocol.nfs3 import NFS3_FHSIZE, nfsstat3

from ..nfs3.errors import NfsError

HANDLE_VERSION = 1
KIND_REAL = 0
_REAL = struct.Struct(">BBHQI")
_PREFIX = struct.Struct(">BBH")


class RealHandle(NamedTuple):
    export_id: int
    ino: int
    gen: int


def pack_real(export_id: int, ino: int, gen: int) -> bytes:
    return _REAL.pack(HANDLE_VERSION, KIND_REAL, export_id, ino, gen & 0xFFFFFFFF)


#: ``pack_real`` without its Python function, for LOOKUP's path (a lone call runs with cold
#: caches, where every helper's code costs: design.rst, "cold calls"): ``(HANDLE_VERSION,
#: KIND_REAL, export_id, ino, gen & 0xFFFFFFFF)``
pack_real_fields = _REAL.pack


def handle_kind(fh: bytes) -> tuple[int, int]:
    """(kind, export_id) of a handle; BADHANDLE if it cannot be one of ours."""
    if len(fh) < _PREFIX.size or len(fh) > NFS3_FHSIZE:
        raise NfsError(nfsstat3.NFS3ERR_BADHANDLE, f"handle of {len(fh)} bytes")
    version, kind, export_id = _PREFIX.unpack_from(fh)
    if version != HANDLE_VERSION:
        raise NfsError(nfsstat3.NFS3ERR_BADHANDLE, f"handle version {version}")
    return kind, export_id


def unpack_real(fh: bytes) -> RealHandle:
    if len(fh) != _REAL.size:
        raise NfsError(nfsstat3.NFS3ERR_BADHANDLE, f"handle of {len(fh)} bytes")
    version, kind, export_id, ino, gen = _REAL.unpack(fh)
    if version != HANDLE_VERSION or kind != KIND_REAL:
        raise NfsError(nfsstat3.NFS3ERR_BADHANDLE, "not a real-object handle")
    return RealHandle(export_id, ino, gen)
