"""MOUNT version 3 (RFC 1813 appendix I, program 100005)."""
from __future__ import annotations

from xdr import Enum, List, Opaque, String, Struct, Union, VarArray, int32, void

from .program import Procedure, Program

MOUNT_PROGRAM, MOUNT_V3 = 100005, 3
MNTPATHLEN, MNTNAMLEN, FHSIZE3 = 1024, 255, 64

fhandle3 = Opaque(FHSIZE3, "fhandle3")
dirpath = String(MNTPATHLEN, "dirpath")
name = String(MNTNAMLEN, "name")
mountstat3 = Enum("mountstat3", dict(
    MNT3_OK=0, MNT3ERR_PERM=1, MNT3ERR_NOENT=2, MNT3ERR_IO=5, MNT3ERR_ACCES=13,
    MNT3ERR_NOTDIR=20, MNT3ERR_INVAL=22, MNT3ERR_NAMETOOLONG=63, MNT3ERR_NOTSUPP=10004,
    MNT3ERR_SERVERFAULT=10006,
))
mountres3_ok = Struct("mountres3_ok", [("fhandle", fhandle3), ("auth_flavors", VarArray(int32))])
mountres3 = Union("mountres3", mountstat3, {mountstat3.MNT3_OK: mountres3_ok}, default=void)
mountbody = Struct("mountbody", [("ml_hostname", name), ("ml_directory", dirpath)])
mountlist = List(mountbody, "mountlist")
groupnode = Struct("groupnode", [("gr_name", name)])
exportnode = Struct("exportnode", [("ex_dir", dirpath), ("ex_groups", List(groupnode, "groups"))])
exports = List(exportnode, "exports")

MOUNT3 = Program.of(MOUNT_PROGRAM, MOUNT_V3, "MOUNT3", [
    Procedure(0, "NULL", void, void),
    Procedure(1, "MNT", dirpath, mountres3),
    Procedure(2, "DUMP", void, mountlist),
    Procedure(3, "UMNT", dirpath, void),
    Procedure(4, "UMNTALL", void, void),
    Procedure(5, "EXPORT", void, exports),
])
