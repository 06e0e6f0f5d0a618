"""Directory fsyncs shared by worker processes (nfsd/fs/shared_fsyncs.py, ``DirSync.share_with``)."""
from __future__ import annotations

import asyncio
import functools
import os
import select
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nfsd.fs import dirsync as dirsync_module
from nfsd.fs.dirsync import DirSync
from nfsd.fs.shared_fsyncs import COVERED, START, WAIT, SharedFsyncs

KEY = (5, 77)  # (fsid, inode) of the directory both processes change
BURSTS = 40
FSYNC_SECONDS = 0.004


def _serve_bursts(slot: int, shared: SharedFsyncs, log_path: Path, go: int) -> None:
    """One worker process: bursts of changes in one directory, each held until its fsync,
    fsyncs through the pool (a plain function: no AIO), everything logged with the time;
    it starts when ``go`` (a pipe) is closed, so that both processes' bursts overlap."""
    shared.attach(slot)
    os.read(go, 1)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)

    def log(event: str, n: int) -> None:
        os.write(fd, f"{slot} {event} {time.monotonic_ns()} {n}\n".encode())

    def fsync() -> None:
        log("begin", 0)
        time.sleep(FSYNC_SECONDS)
        log("end", 0)

    def replied(n: int, _: object) -> None:
        log("reply", n)

    async def main() -> None:
        sync = DirSync()
        executor = ThreadPoolExecutor(2)
        sync.defer_in_bursts(executor)
        sync.share_with(shared)
        held = []
        for n in range(BURSTS):
            sync.begin_burst()
            log("change", n)  # (after the change)
            sync.sync(KEY, fsync)
            done = sync.end_burst()
            assert done is not None
            done.add_done_callback(functools.partial(replied, n))
            held.append(done)
            await asyncio.sleep(0.001 * (1 + slot))
        await asyncio.gather(*held)
        executor.shutdown()

    asyncio.run(main())


def _run_two(log_path: Path) -> list[tuple[int, str, int, int]]:
    shared = SharedFsyncs.create(2)
    log_path.touch()
    go, start = os.pipe()
    pids = []
    for slot in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(start)
                _serve_bursts(slot, shared, log_path, go)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(go)
    os.close(start)  # both start
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    rows = []
    for line in log_path.read_text().splitlines():
        f_slot, event, f_at, f_n = line.split()
        rows.append((int(f_slot), event, int(f_at), int(f_n)))
    return rows


def test_two_processes_share_fsyncs_and_no_reply_precedes_an_fsync_begun_after_its_change(tmp_path: Path) -> None:
    rows = _run_two(tmp_path / "log")
    fsyncs: list[tuple[int, int, int]] = []  # (worker, began, ended)
    for slot in range(2):
        b = [at for s, e, at, _ in rows if s == slot and e == "begin"]
        en = [at for s, e, at, _ in rows if s == slot and e == "end"]
        assert len(b) == len(en)
        fsyncs += [(slot, x, y) for x, y in zip(sorted(b), sorted(en))]
    assert fsyncs
    changes = {(s, n): at for s, e, at, n in rows if e == "change"}
    replies = {(s, n): at for s, e, at, n in rows if e == "reply"}
    assert set(replies) == set(changes) and len(replies) == 2 * BURSTS
    by_other_only = 0
    for (slot, n), replied in replies.items():
        covering = [w for w, began, ended in fsyncs if began > changes[slot, n] and ended < replied]
        assert covering, f"worker {slot}'s reply {n} left before any fsync begun after its change"
        if slot not in covering:
            by_other_only += 1
    # shared: fewer fsyncs than two processes each with its own group commit would make
    # (each waits for the other's fsync in flight), and some replies covered by the other's
    assert by_other_only > 0
    in_flight = sorted((began, 1) for _, began, _ in fsyncs) + sorted((ended, -1) for _, _, ended in fsyncs)
    most, now = 0, 0
    for _, step in sorted(in_flight):
        now += step
        most = max(most, now)
    assert most == 1  # one fsync of the directory at a time, across both processes


def test_a_waiter_fsyncs_itself_when_the_other_worker_never_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that died mid-fsync leaves its mark: the other one waits ``WAIT_LIMIT``, then
    fsyncs for itself (and a restarted worker in that slot clears the mark)."""
    monkeypatch.setattr(dirsync_module, "WAIT_LIMIT", 0.05)
    shared = SharedFsyncs.create(2)
    shared.attach(0)
    dead = SharedFsyncs(shared.fd, 2, shared.wake_fds)
    dead.attach(1)
    assert dead.claim(KEY, time.monotonic_ns())[0] == START  # ... and never ``finished``
    calls: list[float] = []

    async def main() -> float:
        sync = DirSync()
        with ThreadPoolExecutor(1) as executor:
            sync.defer_in_bursts(executor)
            sync.share_with(shared)
            began = time.monotonic()
            sync.begin_burst()
            sync.sync(KEY, lambda: calls.append(time.monotonic()))
            done = sync.end_burst()
            assert done is not None
            await asyncio.wait_for(done, 5)
            return began

    began = asyncio.run(main())
    assert len(calls) == 1 and calls[0] - began >= 0.05
    SharedFsyncs(shared.fd, 2, shared.wake_fds).attach(1)  # restarted: its mark is gone
    assert shared.claim(KEY, time.monotonic_ns())[0] == START


def test_the_table_covers_only_changes_made_before_an_fsync_began_and_completed() -> None:
    shared = SharedFsyncs.create(2)
    shared.attach(0)
    other = SharedFsyncs(shared.fd, 2, shared.wake_fds)
    other.attach(1)
    before = time.monotonic_ns()
    verdict, began = other.claim(KEY, before)
    assert verdict == START and began > before
    after = time.monotonic_ns()  # a change made while the other's fsync is in flight
    assert shared.claim(KEY, before)[0] == WAIT   # not done yet, even for the earlier change
    other.finished(KEY, began, ok=True)
    assert os.eventfd_read(shared.wake_fd) == 1    # the waiter is woken
    assert shared.claim(KEY, before)[0] == COVERED
    assert shared.claim(KEY, after)[0] == START    # began before that change: not covered
    verdict, began2 = other.claim(KEY, after)
    assert verdict == WAIT
    shared.finished(KEY, time.monotonic_ns(), ok=False)  # a failed fsync covers nothing
    assert other.claim(KEY, after)[0] == START


def test_the_table_lock_excludes_another_process_until_let_go() -> None:
    """The table's lock is a record lock across processes: one asking for it while another
    holds it waits, and gets it once let go."""
    table = SharedFsyncs.create(2)
    table.attach(0)
    done_r, done_w = os.pipe()
    lock = table._locked()
    lock.__enter__()
    pid = os.fork()
    if pid == 0:  # another worker: takes the lock, says so, lets it go
        try:
            with table._locked():
                os.write(done_w, b"x")
        finally:
            os._exit(0)
    try:
        ready, _, _ = select.select([done_r], [], [], 0.3)
        assert ready == []  # held here: the other process waits
    finally:
        lock.__exit__(None, None, None)
    ready, _, _ = select.select([done_r], [], [], 30)
    assert ready == [done_r] and os.read(done_r, 1) == b"x"
    assert os.waitpid(pid, 0)[1] == 0
    with table._locked():  # and this process takes it again at once
        pass
    os.close(done_r)
    os.close(done_w)
