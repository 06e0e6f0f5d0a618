"""Whether a buffered write may run on the event loop: the page cache's room for dirty data.

An UNSTABLE WRITE only copies into the page cache (pwrite), which is cheaper inline than a
thread round trip (a 1 MiB WRITE: about 12 % less server CPU).  What could make that copy
sleep, and with it every connection the loop serves, is the kernel's dirty-page throttling
(``balance_dirty_pages``: a writer is paused once dirty and writeback pages pass the midpoint
of the background and hard thresholds) and reading a partly overwritten page that is not
cached.  ``PageCacheRoom`` samples ``/proc/vmstat`` (the kernel's own thresholds) now and then
and says a write may go inline only while dirty data is well below where throttling begins,
with a margin for what a burst adds before the next sample; ``aligned`` tells which writes
cover whole pages (nothing to read first).  Everything else runs in the thread pool.

In a memory-limited cgroup (v2, or v1 whose reclaim waits for writeback) the group's own
dirty and writeback pages (``memory.stat``) are held to a share of its limit as well.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

PAGE = 4096
#: How often /proc/vmstat is read (about 45 µs): a 1 MiB WRITE stream adds at most
#: ~150 MiB between two samples at the loopback rates measured here.
INTERVAL = 0.05
#: Inline only below this share of the throttling point (the rest is the burst margin).
SHARE = 0.5
_FIELDS = (b"\nnr_dirty ", b"\nnr_writeback ", b"\nnr_dirty_threshold ", b"\nnr_dirty_background_threshold ")


#: File systems whose buffered writes only fill the page cache (not FUSE, whose writes may
#: wait for its daemon and whose dirty pages are throttled early, nor network ones).
LOCAL_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})


def copies_only(path: str, mountinfo: str = "/proc/self/mountinfo", sysfs: str = "/sys/dev/block") -> bool:
    """Whether a buffered write to a file under ``path`` only copies into the page cache: a
    local file system (``LOCAL_TYPES``) on a device that does not need pages held stable
    during writeback (``queue/stable_writes``: there an overwrite waits for the I/O of the
    page it replaces)."""
    try:
        st = os.stat(path)
        with open(mountinfo, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    dev = b"%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev))
    fstype = None
    for line in lines:  # the last mount of the device is the one on top
        fields = line.split()
        if len(fields) > 2 and fields[2] == dev and b" - " in line:
            fstype = line.split(b" - ", 1)[1].split()[0].decode(errors="replace")
    if fstype not in LOCAL_TYPES:
        return False
    block = os.path.join(sysfs, dev.decode())
    for queue in (os.path.join(block, "queue"), os.path.join(block, "..", "queue")):  # a partition: its disk's
        try:
            with open(os.path.join(queue, "stable_writes"), "rb") as f:
                return f.read().strip() == b"0"
        except OSError:
            continue
    return True  # no block device (tmpfs)


def aligned(offset: int, length: int) -> bool:
    """The write covers whole pages: the kernel never reads a page before overwriting it."""
    return not (offset | length) & (PAGE - 1)


@dataclass(frozen=True)
class MemoryGroup:
    """A memory-limited cgroup: where its limit and page counts are, and the names of its
    dirty and writeback counters (cgroup v2: ``memory.max``, ``file_dirty``; v1:
    ``memory.limit_in_bytes``, ``dirty``)."""

    limit_path: str
    stat_path: str
    dirty_keys: tuple[bytes, bytes]


_NO_LIMIT = 1 << 62  # v1 writes "no limit" as a page-rounded 2**63 - 1


def memory_group(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> MemoryGroup | None:
    """This process's memory cgroup if it has a memory limit, else None."""
    try:
        with open(proc_cgroup, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            _, controllers, path = line.split(b":", 2)
        except ValueError:
            continue
        where = os.fsdecode(path.strip()).lstrip("/")
        if controllers == b"":  # v2 (its memory controller unless v1 claims it below)
            group = MemoryGroup(os.path.join(root, where, "memory.max"),
                                os.path.join(root, where, "memory.stat"), (b"file_dirty", b"file_writeback"))
        elif b"memory" in controllers.split(b","):
            group = MemoryGroup(os.path.join(root, "memory", where, "memory.limit_in_bytes"),
                                os.path.join(root, "memory", where, "memory.stat"), (b"dirty", b"writeback"))
        else:
            continue
        try:
            with open(group.limit_path, "rb") as f:
                text = f.read().strip()
            if text != b"max" and int(text) < _NO_LIMIT:
                return group
        except (OSError, ValueError):
            continue
    return None


class PageCacheRoom:
    """``roomy()``: dirty data is far enough below the kernel's throttling point that a
    buffered write will not be paused (re-read at most every ``interval`` seconds)."""

    def __init__(self, vmstat: str = "/proc/vmstat", interval: float = INTERVAL,
                 share: float = SHARE, cgroup: "MemoryGroup | None | str" = "auto") -> None:
        self.vmstat = vmstat
        self.interval = interval
        self.share = share
        self.cgroup = memory_group() if cgroup == "auto" else cgroup
        self._until = 0.0   # the last verdict holds until then
        self._roomy = False

    def roomy(self) -> bool:
        now = time.monotonic()
        if now >= self._until:
            self._until = now + self.interval
            self._roomy = self._sample()
        return self._roomy

    def _sample(self) -> bool:
        try:
            with open(self.vmstat, "rb") as f:
                text = b"\n" + f.read()
        except OSError:
            return False  # unknown: the thread pool is always safe
        values = []
        for field in _FIELDS:  # four look-ups, not a parse of ~180 lines
            at = text.find(field)
            if at < 0:
                return False
            end = text.find(b"\n", at + len(field))
            values.append(int(text[at + len(field):end if end >= 0 else None]))
        dirty, writeback, threshold, background = values
        if dirty + writeback >= (threshold + background) // 2 * self.share:
            return False
        return self.cgroup is None or self._cgroup_roomy()

    def _cgroup_roomy(self) -> bool:
        """A memory-limited cgroup: its dirty and writeback bytes below ``share`` of the
        background ratio of its limit (its own throttling domain is no larger; on v1 its
        reclaim may wait for writeback)."""
        group = self.cgroup
        assert isinstance(group, MemoryGroup)
        try:
            with open(group.limit_path, "rb") as f:
                limit = int(f.read())
            with open(group.stat_path, "rb") as f:
                stat = dict(line.split() for line in f.read().splitlines())
            with open("/proc/sys/vm/dirty_background_ratio", "rb") as f:
                ratio = int(f.read()) or 10
        except (OSError, ValueError):
            return False
        dirty = sum(int(stat.get(key, 0)) for key in group.dirty_keys)
        return dirty < limit * ratio // 100 * self.share


#: The server's one gauge (the WRITE row's offload predicate, nfsd/nfs3/procedures.py).
page_cache = PageCacheRoom()
