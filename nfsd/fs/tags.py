"""Tags people set on files: where they live, and the rules for their names.

A tag is a value of the *user field* ``tag`` (``tag:/vacation``), set by people rather than
found by a transducer.  It belongs to the file, not to its path, so it is kept with the file:
in the user extended attribute ``user.pysfsd.tags`` (one value a line), which moves with the
file through any rename, behind the server's back too, and which ``cp -a``, ``rsync -X``,
``tar --xattrs`` and backups carry.  The index holds the searchable copy: when it (re)reads a
file's stat tier it reads the attribute too (``UserFieldReader``), and a change of the
attribute moves the file's ctime, so the index notices it like any other change (inotify
reports it as IN_ATTRIB).

Where the file system has no user extended attributes (EOPNOTSUPP: tmpfs before Linux 6.6,
vfat, some FUSE and network file systems), the values go to the state store instead, keyed by
inode number and generation: they follow renames and moves within the file system (the inode
stays), but a copy does not carry them, and a file replaced by another (an editor saving
through a new file) loses them.

The state store also keeps the *declared* tags: ``mkdir tag:/vacation`` declares a tag with no
file yet, and tagging a file through the server declares its tag, so a tag stays listed in
``tag:`` until ``rmdir`` removes it (an empty one only).
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import threading
from typing import Iterable

import lmdb

from ..index.fields import valid_value
from ..query.names import decode_value

USER_FIELDS: tuple[bytes, ...] = (b"tag",)
XATTR_OF = {b"tag": "user.pysfsd.tags"}
MAX_VALUES = 1000          # per file and field: a bounded attribute, a bounded cost
MAX_XATTR = 64 * 1024      # what ext4 allows for all of one inode's attributes together
FS_IOC_GETVERSION = 0x80087601
_NO_XATTRS = (errno.EOPNOTSUPP, errno.ENOTSUP)
_GEN = struct.Struct(">Q")


class TagError(OSError):
    """A tag name or operation that breaks the rules: ``TagError(errno.EINVAL, why)``."""


def xattr_name(field: bytes) -> str:
    return XATTR_OF.get(field) or "user.pysfsd." + field.decode()


def value_of_name(name: bytes) -> bytes:
    """The tag a path component names (``%2F`` escapes as in every value directory)."""
    value = decode_value(name)
    if value is None:
        raise TagError(errno.EINVAL, f"bad escape in {name!r}")
    check_value(value)
    return value


def check_value(value: bytes) -> None:
    """The value rules (1 to 255 bytes, no NUL), and no newline (the attribute's separator);
    ``.`` and ``..`` cannot name a directory."""
    if not valid_value(value) or b"\n" in value or value in (b".", b".."):
        raise TagError(errno.EINVAL, f"illegal tag {value!r}")


def parse(raw: bytes) -> list[bytes]:
    """Values of an attribute: one a line, in the order set; malformed lines are ignored."""
    out: list[bytes] = []
    for line in raw.split(b"\n"):
        if valid_value(line) and line not in out:
            out.append(line)
            if len(out) >= MAX_VALUES:
                break
    return out


def serialize(values: Iterable[bytes]) -> bytes:
    return b"\n".join(values)


def generation(path: str | bytes) -> int:
    """The inode generation (0 where the file system has none): it tells a reused inode
    number from the file the fallback store's values were set on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return 0
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETVERSION, b"\0" * 8)
        return int.from_bytes(buf[:4], "little")
    except OSError:
        return 0
    finally:
        os.close(fd)


class FallbackStore:
    """The state store's part: declared tags, and the values of files on file systems
    without user extended attributes.  Keys: ``D field NUL value`` (declared) and
    ``F ino(8) field`` -> generation(8) + values (the attribute's format)."""

    def __init__(self, env: lmdb.Environment, export_id: int) -> None:
        self.env = env
        self.db = env.open_db(b"usertags%d" % export_id)
        self.serial = 0  # moves with every change to the declared set

    # -- declared tags -------------------------------------------------------------------
    def declared(self, field: bytes) -> list[bytes]:
        prefix = b"D" + field + b"\0"
        with self.env.begin(db=self.db) as txn:
            cur = txn.cursor()
            out = []
            if cur.set_range(prefix):
                for key in cur.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    out.append(bytes(key[len(prefix):]))
        return out

    def entries(self) -> int:
        """Declared values and files' values together (a bound on endless mkdirs)."""
        with self.env.begin() as txn:
            return int(txn.stat(self.db)["entries"])

    def is_declared(self, field: bytes, value: bytes) -> bool:
        with self.env.begin(db=self.db) as txn:
            return txn.get(b"D" + field + b"\0" + value) is not None

    def declare(self, field: bytes, value: bytes, present: bool = True) -> bool:
        """Declare (or forget) a value; True if that changed anything.  Synced: a tag made
        by ``mkdir`` survives a crash right after the reply."""
        key = b"D" + field + b"\0" + value
        if self.is_declared(field, value) == present:
            return False  # a read: no write transaction for what is already so
        with self.env.begin(write=True, db=self.db) as txn:
            changed = txn.put(key, b"", overwrite=False) if present else txn.delete(key)
        if changed:
            self.serial += 1
            self.env.sync(True)
        return changed

    # -- values of files without user xattrs ---------------------------------------------
    def get(self, ino: int, gen: int, field: bytes, txn: lmdb.Transaction | None = None) -> list[bytes]:
        key = b"F" + _GEN.pack(ino) + field
        if txn is not None:
            raw = txn.get(key, db=self.db)
        else:
            with self.env.begin(db=self.db) as rtxn:
                raw = rtxn.get(key)
                raw = bytes(raw) if raw is not None else None
        if raw is None or len(raw) < 8:
            return []
        known_gen, = _GEN.unpack_from(raw)
        if gen and known_gen and gen != known_gen:
            return []  # the inode number now belongs to another file
        return parse(bytes(raw[8:]))

    def put(self, ino: int, gen: int, field: bytes, values: list[bytes]) -> None:
        key = b"F" + _GEN.pack(ino) + field
        with self.env.begin(write=True, db=self.db) as txn:
            if values:
                txn.put(key, _GEN.pack(gen) + serialize(values))
            else:
                txn.delete(key)
        self.env.sync(True)


_xattr_lock = threading.Lock()


def read_values(path: str | bytes, field: bytes, st: os.stat_result, fallback: FallbackStore | None,
                txn: lmdb.Transaction | None = None) -> list[bytes]:
    """A file's values of a user field; ``path`` must not be a symlink (only regular files
    carry user attributes)."""
    try:
        raw = os.getxattr(path, xattr_name(field), follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return []
        if exc.errno in _NO_XATTRS and fallback is not None:
            return fallback.get(st.st_ino, generation(path), field, txn)
        raise
    return parse(raw)


def change_values(path: str, field: bytes, add: Iterable[bytes] = (), drop: Iterable[bytes] = (),
                  fallback: FallbackStore | None = None) -> tuple[list[bytes], list[bytes]]:
    """Add and remove values of a regular file's user field, as the calling thread's
    file-system identity (the kernel asks for write permission, as for any user attribute);
    returns (before, after).  Without user attributes on that file system the fallback
    store is used (the caller checks permission itself), or EOPNOTSUPP is raised."""
    add, drop = list(add), set(drop)
    for value in add:
        check_value(value)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise TagError(errno.EINVAL, "only regular files carry tags")
    name = xattr_name(field)
    with _xattr_lock:  # read-modify-write: one change at a time within the process
        try:
            try:
                before = parse(os.getxattr(path, name))
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    raise
                before = []
            after = _merged(before, add, drop)
            if after == before:
                if add:  # tagging asks for write permission even when nothing changes
                    os.setxattr(path, name, serialize(after), os.XATTR_REPLACE if before else 0)
                return before, after
            if after:
                os.setxattr(path, name, serialize(after))
            else:
                os.removexattr(path, name)
            return before, after
        except OSError as exc:
            if exc.errno not in _NO_XATTRS or fallback is None:
                raise
        gen = generation(path)
        before = fallback.get(st.st_ino, gen, field)
        after = _merged(before, add, drop)
        if after != before:
            fallback.put(st.st_ino, gen, field, after)
        return before, after


def _merged(before: list[bytes], add: list[bytes], drop: set[bytes]) -> list[bytes]:
    after = [v for v in before if v not in drop]
    for value in add:
        if value not in after:
            after.append(value)
    if len(after) > MAX_VALUES or len(serialize(after)) > MAX_XATTR:
        raise TagError(errno.ENOSPC, "too many tags on one file")
    return after


class UserFieldReader:
    """What the index calls for each file whose stat tier it derives: the posting keys of
    its user fields (``tag\\0vacation``)."""

    fields = USER_FIELDS

    def __init__(self, fallback: FallbackStore | None) -> None:
        self.fallback = fallback

    def keys(self, dir_fd: int, name: bytes, st: os.stat_result, txn: lmdb.Transaction | None) -> list[bytes]:
        # through /proc: os.getxattr takes no dir_fd (and getxattrat needs Linux 6.13)
        return self.keys_at(b"/proc/self/fd/%d/%s" % (dir_fd, name), st, txn)

    def keys_at(self, path: bytes, st: os.stat_result, txn: lmdb.Transaction | None) -> list[bytes]:
        """The same for a path (not followed if it is a symlink)."""
        if not stat.S_ISREG(st.st_mode):
            return []
        out: list[bytes] = []
        for field in USER_FIELDS:
            try:
                values = read_values(path, field, st, self.fallback, txn)
            except OSError:
                continue  # gone meanwhile: its own note follows
            out.extend(field + b"\0" + v for v in values)
        return out
