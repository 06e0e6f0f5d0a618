"""Group commit of directory fsyncs (nfsd/dirsync.py)."""
from __future__ import annotations

import threading
import time

from nfsd.dirsync import DirSync


def test_concurrent_changes_share_fsyncs_and_each_waits_for_one_begun_after_it() -> None:
    sync = DirSync()
    made: list[int] = []       # changes made, in order
    began: list[int] = []      # how many changes had been made when each fsync began
    covered: dict[int, int] = {}
    lock = threading.Lock()

    def fsync() -> None:
        with lock:
            began.append(len(made))
        time.sleep(0.05)

    def change(i: int) -> None:
        with lock:
            made.append(i)
            mine = len(made)
        sync.sync(7, fsync)
        with lock:  # some fsync that began after this change has completed
            covered[i] = mine
            assert any(b >= mine for b in began[:len(began)]), (mine, began)

    threads = [threading.Thread(target=change, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(covered) == 16
    assert 1 <= len(began) < 16  # shared
    assert sync._dirs == {}      # nothing kept once nobody waits


def test_a_failed_fsync_is_retried_by_the_next_caller() -> None:
    sync = DirSync()
    calls = []

    def failing() -> None:
        calls.append("fail")
        raise OSError("EIO")

    try:
        sync.sync(1, failing)
    except OSError:
        pass
    sync.sync(1, lambda: calls.append("ok"))
    assert calls == ["fail", "ok"]
