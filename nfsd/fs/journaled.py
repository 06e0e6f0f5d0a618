"""Whether a directory's fsync also commits the inodes made with its new entries.

A sync export makes a new object's own inode durable next to its directory's entry
(``LocalFS.fsync_new``).  Where a journal logs whole transactions, the new inode and the
entry naming it are one transaction, and the directory's fsync commits it: ext4 with its
journal (``ext4_force_commit``) and XFS (a log force up to the directory's last change).
There an fsync of the new inode finds nothing to commit but still flushes the device's
cache: on a journaled loop-device ext4 here a pipelined CREATE lost a quarter of its
ops/s to it (docs/design.rst).  Everywhere else (ext4 without a journal, ext2, btrfs, any
file system not recognised, or one whose journal cannot be seen) the new inode gets its
own fsync: the answer errs towards syncing.

Recognised through /proc/self/mountinfo (the file system type of a device number) and, for
ext4, /proc/fs/jbd2 (one entry per journal, ``<device>-<journal inode>``, the device named
as /sys/dev/block names it).  Asked once per device.
"""
from __future__ import annotations

import functools
import os

#: file systems whose directory fsync is a commit of everything changed with the entries
_WHOLE_COMMIT = {"xfs"}


@functools.lru_cache(maxsize=None)
def dir_fsync_covers_new_inodes(dev: int) -> bool:
    """True only if a directory fsync on device ``dev`` is known to commit new inodes too."""
    return covers(dev)


def covers(dev: int, proc: str = "/proc", sysfs: str = "/sys") -> bool:
    """``dir_fsync_covers_new_inodes`` reading the given /proc and /sys (tests: copies)."""
    number = f"{os.major(dev)}:{os.minor(dev)}"
    fstype = None
    try:
        with open(os.path.join(proc, "self", "mountinfo"), encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == number and " - " in line:
                    fstype = line.split(" - ", 1)[1].split()[0]
                    break
    except OSError:
        return False
    if fstype in _WHOLE_COMMIT:
        return True
    if fstype != "ext4":
        return False
    try:
        name = os.path.basename(os.readlink(os.path.join(sysfs, "dev", "block", number)))
        journals = os.listdir(os.path.join(proc, "fs", "jbd2"))
    except OSError:
        return False
    return any(j.startswith(name + "-") for j in journals)
