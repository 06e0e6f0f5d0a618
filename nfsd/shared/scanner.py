"""The scanner head: one head of the cluster looks for changes made outside NFS.

Changes made through a head reach the others through the change log; a change made
straight into the shared file system (another CephFS client, a backup restore) is seen by
no head's inotify (CephFS tells a mount nothing of the others').  So one head, the holder of
a PostgreSQL *session* advisory lock (``SCANNER_LOCK``) on a connection of its own, walks
the tree every ``interval`` seconds, compares it with its own index, and notes every
difference to its publishing index: its own index applies it and the change log carries it
to the other heads.  When that head dies its connection ends, the lock frees, and another
head's next try (every ``interval``) takes it over.

On CephFS a directory whose ``ceph.dir.rctime`` (the newest ctime anywhere below it) is
the value this scanner saw there on its previous pass is skipped with its whole subtree.
The value is compared with the one *seen last time at that directory*, never with the time
of the last pass: rctime propagates up lazily (seconds late, docs/cluster.rst), carrying the
change's own ctime.  Elsewhere (no such attribute) every directory is listed.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from typing import Any, Callable

from .schema import SCANNER_LOCK

log = logging.getLogger("pysfsd.shared")

RCTIME = "ceph.dir.rctime"


def rctime(path: bytes) -> bytes | None:
    try:
        return os.getxattr(path, RCTIME, follow_symlinks=False)
    except OSError:
        return None


class TreeDiff:
    """One export's walk: every (directory inode, name) whose entry differs from the index."""

    def __init__(self, root: str, index: Any) -> None:
        self.root = os.fsencode(root)
        self.index = index
        self.seen_rctime: dict[int, bytes] = {}   # dir inode -> rctime at the last pass
        self.listed = 0                            # directories listed in the last pass

    def walk(self, note: Callable[[int, bytes], None]) -> int:
        """Note every difference; returns how many."""
        found = 0
        self.listed = 0
        stack = [self.root]
        while stack:
            path = stack.pop()
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            r = rctime(path)
            if r is not None and self.seen_rctime.get(st.st_ino) == r:
                continue   # nothing changed anywhere below
            try:
                with os.scandir(path) as it:
                    entries = {os.fsencode(e.name): e.stat(follow_symlinks=False) for e in it}
            except OSError:
                continue
            self.listed += 1
            known = self.index.entries_of(st.st_ino)
            for name, est in entries.items():
                rec = known.get(name)
                if rec is None or rec[0] != est.st_ino or (
                        not stat.S_ISDIR(est.st_mode)
                        and (rec[1], rec[2], rec[3]) != (est.st_size, est.st_mtime_ns, est.st_ctime_ns)):
                    note(st.st_ino, name)
                    found += 1
                if stat.S_ISDIR(est.st_mode):
                    stack.append(os.path.join(path, name))
            for name in known.keys() - entries.keys():
                note(st.st_ino, name)
                found += 1
            if r is not None:
                self.seen_rctime[st.st_ino] = r
        return found


class Scanner:
    """Tries for the scanner lock, and while holding it rescans every ``interval`` seconds.
    ``exports``: export id -> (root path, the head's own index, its publishing index)."""

    def __init__(self, connect: Callable[[], Any], exports: dict[int, tuple[str, Any, Any]],
                 interval: float) -> None:
        self._connect = connect
        self.interval = interval
        self.diffs = {eid: (TreeDiff(root, inner), publishing) for eid, (root, inner, publishing) in exports.items()}
        self.holding = False
        self.passes = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pysfsd-scanner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        conn = None
        while not self._closed.is_set():
            try:
                if conn is None or conn.closed:
                    self.holding = False
                    conn = self._connect()
                if not self.holding:
                    self.holding = bool(conn.execute("SELECT pg_try_advisory_lock(%s)",
                                                     (SCANNER_LOCK,)).fetchone()[0])
                    if self.holding:
                        log.warning("scanner head: this head now looks for changes made outside NFS "
                                    "(every %g s)", self.interval)
                else:
                    conn.execute("SELECT 1")   # still ours: the session (and its lock) is alive
                if self.holding:
                    self.scan_once()
            except Exception as exc:
                if conn is not None:
                    log.warning("scanner head: lost PostgreSQL (%s); trying again", str(exc).strip())
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                self.holding = False
            self._closed.wait(self.interval)
        if conn is not None:
            conn.close()

    def scan_once(self) -> int:
        """One pass over every export; returns the differences noted (and published)."""
        t0 = time.monotonic()
        total = 0
        for diff, publishing in self.diffs.values():
            found = diff.walk(publishing.note_entry)
            if found:
                publishing.flush()
            total += found
        self.passes += 1
        if total:
            log.info("scanner head: %d changes made outside NFS (%.2f s)", total, time.monotonic() - t0)
        return total
