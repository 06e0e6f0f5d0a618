"""Directory fsyncs shared by worker processes (nfsd/fs/shared_dirsync.py, DirSync.shared)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from nfsd.fs.dirsync import DirSync
from nfsd.fs.shared_dirsync import SharedFsyncs

KEY = (2049, 77)


def _spawn(table: SharedFsyncs, body: Callable[[SharedFsyncs], object]) -> int:
    """Run ``body(table)`` in a child process (a worker) attached to ``table``; its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            table.attach()
            body(table)
            code = 0
        finally:
            os._exit(code)
    return pid


def _forked(table: SharedFsyncs, body: Callable[[SharedFsyncs], object]) -> int:
    """``_spawn``, then its exit status."""
    return os.waitstatus_to_exitcode(os.waitpid(_spawn(table, body), 0)[1])


def test_a_change_made_before_another_workers_fsync_began_needs_no_fsync_of_its_own() -> None:
    """DirSync with ``shared``: a change whose directory another process fsynced after it
    returns without an fsync; one made after that fsync began still gets its own."""
    table = SharedFsyncs.create()
    table.attach()
    sync = DirSync()
    sync.shared = table
    changed = time.monotonic_ns()  # our change (before the other worker's fsync begins)
    other_fsyncs: list[int] = []
    assert _forked(table, lambda t: t.fsync(KEY, lambda: other_fsyncs.append(1), time.monotonic_ns())) == 0
    ours: list[str] = []
    sync.sync(KEY, lambda: ours.append("fsync"), changed_at=changed)
    assert ours == [] and table.saved == 1
    sync.sync(KEY, lambda: ours.append("fsync"))  # made now: after the other's fsync began
    assert ours == ["fsync"] and table.done == 1
    sync.sync((2049, 78), lambda: ours.append("other directory"), changed_at=changed)
    assert ours == ["fsync", "other directory"]  # another directory's fsync covers nothing here


def test_a_worker_waits_for_another_workers_fsync_under_way_and_then_needs_none(tmp_path: Path) -> None:
    """While another process fsyncs a directory (holding its slot), a pool thread's fsync of
    it waits; a change made before that fsync began is then durable without a second one."""
    table = SharedFsyncs.create()
    table.attach()
    began, release = tmp_path / "began", tmp_path / "release"

    def slow(t: SharedFsyncs) -> None:
        def fsync() -> None:
            began.touch()
            while not release.exists():
                time.sleep(0.01)
        t.fsync(KEY, fsync, time.monotonic_ns())  # made now: never covered already

    changed = time.monotonic_ns()
    pid = _spawn(table, slow)
    try:
        while not began.exists():
            time.sleep(0.01)
        ours: list[str] = []
        waiter = threading.Thread(target=table.fsync, args=(KEY, lambda: ours.append("fsync"), changed))
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive()  # waiting for the other's fsync, not writing the directory beside it
        release.touch()
        waiter.join(10)
        assert not waiter.is_alive() and ours == [] and table.saved == 1
        # the event loop never waits: with the slot held elsewhere it fsyncs at once
        release.unlink()
        began.unlink()
        pid2 = _spawn(table, slow)
        while not began.exists():
            time.sleep(0.01)
        table.fsync(KEY, lambda: ours.append("inline"), time.monotonic_ns(), wait=False)
        assert ours == ["inline"]
        release.touch()
        os.waitpid(pid2, 0)
    finally:
        release.touch()
        os.waitpid(pid, 0)


def test_a_torn_or_foreign_record_is_never_taken_for_a_completed_fsync() -> None:
    table = SharedFsyncs.create(slots=1)  # every directory in one slot
    table.attach()
    table.fsync((1, 1), lambda: None, 0)  # recorded for directory (1, 1)
    done: list[int] = []
    table.fsync((1, 2), lambda: done.append(1), 0)  # another directory in the same slot
    assert done == [1]
    assert table._map is not None
    table._map[16:24] = (2**63).to_bytes(8, "little")  # a start time whose check word is stale
    table.fsync((1, 2), lambda: done.append(2), 0)
    assert done == [1, 2]
