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

On cgroup v2 a memory-limited group is throttled against its own, smaller thresholds; the
group's dirty pages (``memory.stat``) are then held to a share of its limit as well.
"""
from __future__ import annotations

import os
import time

PAGE = 4096
#: How often /proc/vmstat is read (about 30 us): a 1 MiB WRITE stream adds at most
#: ~150 MiB between two samples at the loopback rates measured here.
INTERVAL = 0.05
#: Inline only below this share of the throttling point (the rest is the burst margin).
SHARE = 0.5
_FIELDS = (b"\nnr_dirty ", b"\nnr_writeback ", b"\nnr_dirty_threshold ", b"\nnr_dirty_background_threshold ")


def aligned(offset: int, length: int) -> bool:
    """The write covers whole pages: the kernel never reads a page before overwriting it."""
    return not (offset | length) & (PAGE - 1)


def _cgroup_dir() -> str | None:
    """This process's cgroup v2 directory if it has a memory limit, else None."""
    try:
        with open("/proc/self/cgroup", "rb") as f:
            for line in f:
                if line.startswith(b"0::"):
                    path = "/sys/fs/cgroup" + os.fsdecode(line[3:].strip())
                    with open(os.path.join(path, "memory.max"), "rb") as m:
                        return None if m.read().strip() == b"max" else path
    except OSError:
        pass
    return None


class PageCacheRoom:
    """``roomy()``: dirty data is far enough below the kernel's throttling point that a
    buffered write will not be paused (re-read at most every ``interval`` seconds)."""

    def __init__(self, vmstat: str = "/proc/vmstat", interval: float = INTERVAL,
                 share: float = SHARE, cgroup: str | None = "auto") -> None:
        self.vmstat = vmstat
        self.interval = interval
        self.share = share
        self.cgroup = _cgroup_dir() if cgroup == "auto" else cgroup
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
        """A limited cgroup v2: its dirty and writeback bytes below ``share`` of the
        background ratio of its limit (the kernel's memcg domain is no larger)."""
        try:
            with open(os.path.join(self.cgroup, "memory.max"), "rb") as f:  # type: ignore[arg-type]
                limit = int(f.read())
            with open(os.path.join(self.cgroup, "memory.stat"), "rb") as f:  # type: ignore[arg-type]
                stat = dict(line.split() for line in f.read().splitlines())
            with open("/proc/sys/vm/dirty_background_ratio", "rb") as f:
                ratio = int(f.read()) or 10
        except (OSError, ValueError):
            return False
        dirty = int(stat.get(b"file_dirty", 0)) + int(stat.get(b"file_writeback", 0))
        return dirty < limit * ratio // 100 * self.share


#: The server's one gauge (the WRITE row's offload predicate, nfsd/nfs3/procedures.py).
page_cache = PageCacheRoom()
