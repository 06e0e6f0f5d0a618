"""NFS version 3 (RFC 1813, program 100003), declared with the RFC's names.

Results are ``(nfsstat3, body)`` tuples: ``body`` is the ``resok`` struct when the status is
NFS3_OK and the ``resfail`` struct otherwise.
"""
from __future__ import annotations

from xdr import (Enum, FixedOpaque, List, Opaque, Optional, Preencoded, String, Struct, Union, boolean,
                 uint32, uint64, void)

from .program import Procedure, Program

NFS_PROGRAM, NFS_V3 = 100003, 3
NFS3_FHSIZE = 64
NFS3_COOKIEVERFSIZE = NFS3_CREATEVERFSIZE = NFS3_WRITEVERFSIZE = 8

filename3 = String(name="filename3")
nfspath3 = String(name="nfspath3")
fileid3 = cookie3 = size3 = offset3 = uint64
uid3 = gid3 = mode3 = count3 = uint32
cookieverf3 = FixedOpaque(NFS3_COOKIEVERFSIZE, "cookieverf3")
createverf3 = FixedOpaque(NFS3_CREATEVERFSIZE, "createverf3")
writeverf3 = FixedOpaque(NFS3_WRITEVERFSIZE, "writeverf3")

nfsstat3 = Enum("nfsstat3", dict(
    NFS3_OK=0, NFS3ERR_PERM=1, NFS3ERR_NOENT=2, NFS3ERR_IO=5, NFS3ERR_NXIO=6,
    NFS3ERR_ACCES=13, NFS3ERR_EXIST=17, NFS3ERR_XDEV=18, NFS3ERR_NODEV=19, NFS3ERR_NOTDIR=20,
    NFS3ERR_ISDIR=21, NFS3ERR_INVAL=22, NFS3ERR_FBIG=27, NFS3ERR_NOSPC=28, NFS3ERR_ROFS=30,
    NFS3ERR_MLINK=31, NFS3ERR_NAMETOOLONG=63, NFS3ERR_NOTEMPTY=66, NFS3ERR_DQUOT=69,
    NFS3ERR_STALE=70, NFS3ERR_REMOTE=71, NFS3ERR_BADHANDLE=10001, NFS3ERR_NOT_SYNC=10002,
    NFS3ERR_BAD_COOKIE=10003, NFS3ERR_NOTSUPP=10004, NFS3ERR_TOOSMALL=10005,
    NFS3ERR_SERVERFAULT=10006, NFS3ERR_BADTYPE=10007, NFS3ERR_JUKEBOX=10008,
))
NFS3_OK = nfsstat3.NFS3_OK
ftype3 = Enum("ftype3", dict(NF3REG=1, NF3DIR=2, NF3BLK=3, NF3CHR=4, NF3LNK=5, NF3SOCK=6, NF3FIFO=7))
stable_how = Enum("stable_how", dict(UNSTABLE=0, DATA_SYNC=1, FILE_SYNC=2))
createmode3 = Enum("createmode3", dict(UNCHECKED=0, GUARDED=1, EXCLUSIVE=2))
time_how = Enum("time_how", dict(DONT_CHANGE=0, SET_TO_SERVER_TIME=1, SET_TO_CLIENT_TIME=2))

ACCESS3_READ, ACCESS3_LOOKUP, ACCESS3_MODIFY = 0x01, 0x02, 0x04
ACCESS3_EXTEND, ACCESS3_DELETE, ACCESS3_EXECUTE = 0x08, 0x10, 0x20
FSF3_LINK, FSF3_SYMLINK, FSF3_HOMOGENEOUS, FSF3_CANSETTIME = 0x01, 0x02, 0x08, 0x10

specdata3 = Struct("specdata3", [("specdata1", uint32), ("specdata2", uint32)])
nfs_fh3 = Struct("nfs_fh3", [("data", Opaque(NFS3_FHSIZE, "nfs_fh3"))])
nfstime3 = Struct("nfstime3", [("seconds", uint32), ("nseconds", uint32)])
fattr3 = Struct("fattr3", [
    ("type", ftype3), ("mode", mode3), ("nlink", uint32), ("uid", uid3), ("gid", gid3),
    ("size", size3), ("used", size3), ("rdev", specdata3), ("fsid", uint64),
    ("fileid", fileid3), ("atime", nfstime3), ("mtime", nfstime3), ("ctime", nfstime3),
])
post_op_attr = Optional(fattr3, "post_op_attr")
wcc_attr = Struct("wcc_attr", [("size", size3), ("mtime", nfstime3), ("ctime", nfstime3)])
pre_op_attr = Optional(wcc_attr, "pre_op_attr")
wcc_data = Struct("wcc_data", [("before", pre_op_attr), ("after", post_op_attr)])
post_op_fh3 = Optional(nfs_fh3, "post_op_fh3")

set_mode3 = Optional(mode3, "set_mode3")
set_uid3 = Optional(uid3, "set_uid3")
set_gid3 = Optional(gid3, "set_gid3")
set_size3 = Optional(size3, "set_size3")
set_atime = Union("set_atime", time_how, {time_how.SET_TO_CLIENT_TIME: nfstime3}, default=void)
set_mtime = Union("set_mtime", time_how, {time_how.SET_TO_CLIENT_TIME: nfstime3}, default=void)
sattr3 = Struct("sattr3", [("mode", set_mode3), ("uid", set_uid3), ("gid", set_gid3),
                           ("size", set_size3), ("atime", set_atime), ("mtime", set_mtime)])
diropargs3 = Struct("diropargs3", [("dir", nfs_fh3), ("name", filename3)])


def _res(name: str, ok: list, fail: list) -> tuple[Struct, Struct, Union]:
    """The RFC's ``resok``/``resfail`` pair and the status-switched union around them."""
    resok = Struct(f"{name}3resok", ok)
    resfail = Struct(f"{name}3resfail", fail)
    return resok, resfail, Union(f"{name}3res", nfsstat3, {NFS3_OK: resok}, default=resfail)


# --- procedure arguments and results ---------------------------------------------------------
GETATTR3args = Struct("GETATTR3args", [("object", nfs_fh3)])
GETATTR3resok = Struct("GETATTR3resok", [("obj_attributes", fattr3)])
GETATTR3res = Union("GETATTR3res", nfsstat3, {NFS3_OK: GETATTR3resok}, default=void)

sattrguard3 = Optional(nfstime3, "sattrguard3")
SETATTR3args = Struct("SETATTR3args", [("object", nfs_fh3), ("new_attributes", sattr3), ("guard", sattrguard3)])
SETATTR3resok, SETATTR3resfail, SETATTR3res = _res("SETATTR", [("obj_wcc", wcc_data)], [("obj_wcc", wcc_data)])

LOOKUP3args = Struct("LOOKUP3args", [("what", diropargs3)])
LOOKUP3resok, LOOKUP3resfail, LOOKUP3res = _res(
    "LOOKUP", [("object", nfs_fh3), ("obj_attributes", post_op_attr), ("dir_attributes", post_op_attr)],
    [("dir_attributes", post_op_attr)])

ACCESS3args = Struct("ACCESS3args", [("object", nfs_fh3), ("access", uint32)])
ACCESS3resok, ACCESS3resfail, ACCESS3res = _res(
    "ACCESS", [("obj_attributes", post_op_attr), ("access", uint32)], [("obj_attributes", post_op_attr)])

READLINK3args = Struct("READLINK3args", [("symlink", nfs_fh3)])
READLINK3resok, READLINK3resfail, READLINK3res = _res(
    "READLINK", [("symlink_attributes", post_op_attr), ("data", nfspath3)],
    [("symlink_attributes", post_op_attr)])

READ3args = Struct("READ3args", [("file", nfs_fh3), ("offset", offset3), ("count", count3)])
READ3resok, READ3resfail, READ3res = _res(
    "READ", [("file_attributes", post_op_attr), ("count", count3), ("eof", boolean), ("data", Opaque())],
    [("file_attributes", post_op_attr)])

# WRITE data is decoded as a memoryview into the request: no copy before pwrite().
WRITE3args = Struct("WRITE3args", [("file", nfs_fh3), ("offset", offset3), ("count", count3),
                                   ("stable", stable_how), ("data", Opaque(view=True))])
WRITE3resok, WRITE3resfail, WRITE3res = _res(
    "WRITE", [("file_wcc", wcc_data), ("count", count3), ("committed", stable_how), ("verf", writeverf3)],
    [("file_wcc", wcc_data)])

createhow3 = Union("createhow3", createmode3, {
    createmode3.UNCHECKED: sattr3, createmode3.GUARDED: sattr3, createmode3.EXCLUSIVE: createverf3,
})
CREATE3args = Struct("CREATE3args", [("where", diropargs3), ("how", createhow3)])
_CREATED_OK = [("obj", post_op_fh3), ("obj_attributes", post_op_attr), ("dir_wcc", wcc_data)]
_DIR_WCC = [("dir_wcc", wcc_data)]
CREATE3resok, CREATE3resfail, CREATE3res = _res("CREATE", _CREATED_OK, _DIR_WCC)

MKDIR3args = Struct("MKDIR3args", [("where", diropargs3), ("attributes", sattr3)])
MKDIR3resok, MKDIR3resfail, MKDIR3res = _res("MKDIR", _CREATED_OK, _DIR_WCC)

symlinkdata3 = Struct("symlinkdata3", [("symlink_attributes", sattr3), ("symlink_data", nfspath3)])
SYMLINK3args = Struct("SYMLINK3args", [("where", diropargs3), ("symlink", symlinkdata3)])
SYMLINK3resok, SYMLINK3resfail, SYMLINK3res = _res("SYMLINK", _CREATED_OK, _DIR_WCC)

devicedata3 = Struct("devicedata3", [("dev_attributes", sattr3), ("spec", specdata3)])
mknoddata3 = Union("mknoddata3", ftype3, {
    ftype3.NF3CHR: devicedata3, ftype3.NF3BLK: devicedata3,
    ftype3.NF3SOCK: sattr3, ftype3.NF3FIFO: sattr3,
}, default=void)
MKNOD3args = Struct("MKNOD3args", [("where", diropargs3), ("what", mknoddata3)])
MKNOD3resok, MKNOD3resfail, MKNOD3res = _res("MKNOD", _CREATED_OK, _DIR_WCC)

REMOVE3args = Struct("REMOVE3args", [("object", diropargs3)])
REMOVE3resok, REMOVE3resfail, REMOVE3res = _res("REMOVE", _DIR_WCC, _DIR_WCC)
RMDIR3args = Struct("RMDIR3args", [("object", diropargs3)])
RMDIR3resok, RMDIR3resfail, RMDIR3res = _res("RMDIR", _DIR_WCC, _DIR_WCC)

RENAME3args = Struct("RENAME3args", [("from_", diropargs3), ("to", diropargs3)])
_RENAME_WCC = [("fromdir_wcc", wcc_data), ("todir_wcc", wcc_data)]
RENAME3resok, RENAME3resfail, RENAME3res = _res("RENAME", _RENAME_WCC, _RENAME_WCC)

LINK3args = Struct("LINK3args", [("file", nfs_fh3), ("link", diropargs3)])
_LINK_BODY = [("file_attributes", post_op_attr), ("linkdir_wcc", wcc_data)]
LINK3resok, LINK3resfail, LINK3res = _res("LINK", _LINK_BODY, _LINK_BODY)

READDIR3args = Struct("READDIR3args", [("dir", nfs_fh3), ("cookie", cookie3),
                                       ("cookieverf", cookieverf3), ("count", count3)])
entry3 = Struct("entry3", [("fileid", fileid3), ("name", filename3), ("cookie", cookie3)])
dirlist3 = Struct("dirlist3", [("entries", List(entry3)), ("eof", boolean)])
READDIR3resok, READDIR3resfail, READDIR3res = _res(
    "READDIR", [("dir_attributes", post_op_attr), ("cookieverf", cookieverf3), ("reply", dirlist3)],
    [("dir_attributes", post_op_attr)])

READDIRPLUS3args = Struct("READDIRPLUS3args", [("dir", nfs_fh3), ("cookie", cookie3),
                                               ("cookieverf", cookieverf3), ("dircount", count3),
                                               ("maxcount", count3)])
entryplus3 = Struct("entryplus3", [("fileid", fileid3), ("name", filename3), ("cookie", cookie3),
                                   ("name_attributes", post_op_attr), ("name_handle", post_op_fh3)])
# A listing's entries may come already encoded (xdr.Encoded from entryplus3_list's own
# encoders): the server keeps unchanged entries' bytes between listings.
entryplus3_list = List(entryplus3)
dirlistplus3 = Struct("dirlistplus3", [("entries", Preencoded(entryplus3_list)), ("eof", boolean)])
READDIRPLUS3resok, READDIRPLUS3resfail, READDIRPLUS3res = _res(
    "READDIRPLUS", [("dir_attributes", post_op_attr), ("cookieverf", cookieverf3), ("reply", dirlistplus3)],
    [("dir_attributes", post_op_attr)])

FSSTAT3args = Struct("FSSTAT3args", [("fsroot", nfs_fh3)])
FSSTAT3resok, FSSTAT3resfail, FSSTAT3res = _res("FSSTAT", [
    ("obj_attributes", post_op_attr), ("tbytes", size3), ("fbytes", size3), ("abytes", size3),
    ("tfiles", size3), ("ffiles", size3), ("afiles", size3), ("invarsec", uint32),
], [("obj_attributes", post_op_attr)])

FSINFO3args = Struct("FSINFO3args", [("fsroot", nfs_fh3)])
FSINFO3resok, FSINFO3resfail, FSINFO3res = _res("FSINFO", [
    ("obj_attributes", post_op_attr), ("rtmax", uint32), ("rtpref", uint32), ("rtmult", uint32),
    ("wtmax", uint32), ("wtpref", uint32), ("wtmult", uint32), ("dtpref", uint32),
    ("maxfilesize", size3), ("time_delta", nfstime3), ("properties", uint32),
], [("obj_attributes", post_op_attr)])

PATHCONF3args = Struct("PATHCONF3args", [("object", nfs_fh3)])
PATHCONF3resok, PATHCONF3resfail, PATHCONF3res = _res("PATHCONF", [
    ("obj_attributes", post_op_attr), ("linkmax", uint32), ("name_max", uint32),
    ("no_trunc", boolean), ("chown_restricted", boolean), ("case_insensitive", boolean),
    ("case_preserving", boolean),
], [("obj_attributes", post_op_attr)])

COMMIT3args = Struct("COMMIT3args", [("file", nfs_fh3), ("offset", offset3), ("count", count3)])
COMMIT3resok, COMMIT3resfail, COMMIT3res = _res(
    "COMMIT", [("file_wcc", wcc_data), ("verf", writeverf3)], [("file_wcc", wcc_data)])


def _p(number: int, name: str, args, res, idempotent: bool = True) -> Procedure:
    return Procedure(number, name, args, res, idempotent)


NFS3 = Program.of(NFS_PROGRAM, NFS_V3, "NFS3", [
    _p(0, "NULL", void, void),
    _p(1, "GETATTR", GETATTR3args, GETATTR3res),
    _p(2, "SETATTR", SETATTR3args, SETATTR3res, idempotent=False),
    _p(3, "LOOKUP", LOOKUP3args, LOOKUP3res),
    _p(4, "ACCESS", ACCESS3args, ACCESS3res),
    _p(5, "READLINK", READLINK3args, READLINK3res),
    _p(6, "READ", READ3args, READ3res),
    _p(7, "WRITE", WRITE3args, WRITE3res, idempotent=False),
    _p(8, "CREATE", CREATE3args, CREATE3res, idempotent=False),
    _p(9, "MKDIR", MKDIR3args, MKDIR3res, idempotent=False),
    _p(10, "SYMLINK", SYMLINK3args, SYMLINK3res, idempotent=False),
    _p(11, "MKNOD", MKNOD3args, MKNOD3res, idempotent=False),
    _p(12, "REMOVE", REMOVE3args, REMOVE3res, idempotent=False),
    _p(13, "RMDIR", RMDIR3args, RMDIR3res, idempotent=False),
    _p(14, "RENAME", RENAME3args, RENAME3res, idempotent=False),
    _p(15, "LINK", LINK3args, LINK3res, idempotent=False),
    _p(16, "READDIR", READDIR3args, READDIR3res),
    _p(17, "READDIRPLUS", READDIRPLUS3args, READDIRPLUS3res),
    _p(18, "FSSTAT", FSSTAT3args, FSSTAT3res),
    _p(19, "FSINFO", FSINFO3args, FSINFO3res),
    _p(20, "PATHCONF", PATHCONF3args, PATHCONF3res),
    _p(21, "COMMIT", COMMIT3args, COMMIT3res),
])
