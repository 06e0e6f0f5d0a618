"""``--workers 2``: the primary journals a lone burst's handle-table places while no other
worker serves a connection (nfsd/state/store.py, nfsd/state/journal_flag.py); a follower
has the journal folded into LMDB before it touches the handle table."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess
from tests.nfs3_helpers import OK, create_ok, getattr_, look, lookup, mkdir_ok, remove
from tests.rpc_client import RpcClient
from tests.server.test_workers import one_per_worker, serving_pid, two_workers, woken_inbox, workers_of

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")

FOLDED = 8  # a journal holding nothing: its fold count alone


def journal_path(srv: ServerProcess) -> Path:
    state = srv.export.parent / "state"
    found = [p / "places.journal" for p in state.iterdir() if (p / "places.journal").exists()]
    assert len(found) == 1, found
    return found[0]


def journal_size(srv: ServerProcess) -> int:
    return journal_path(srv).stat().st_size


RECORDED = """
import sys
from nfsd.fs.handles import unpack_real
from nfsd.state.store import Store
h = unpack_real(bytes.fromhex(sys.argv[2]))
rec = Store(sys.argv[1]).get_object(h.export_id, h.ino)
print("none" if rec is None else "deleted" if rec.deleted else "live" if rec.gen == h.gen else "other")
"""


def recorded(srv: ServerProcess, fh: bytes) -> str:
    """What LMDB's handle table holds for ``fh``'s inode (read beside the running server)."""
    env = journal_path(srv).parent
    return subprocess.run([sys.executable, "-c", RECORDED, str(env), fh.hex()], capture_output=True, text=True,
                          check=True, cwd=REPO).stdout.strip()


def client_of(srv: ServerProcess, pid: int) -> RpcClient:
    """A connection served by worker ``pid`` (others opened on the way are closed)."""
    spare: list[RpcClient] = []
    try:
        for _ in range(100):
            c = RpcClient(srv.port)
            c.raw_call(100003, 3, 0)
            if serving_pid(c, srv.port, workers_of(srv)) == pid:
                return c
            spare.append(c)
        pytest.fail(f"no connection reached worker {pid}")
    finally:
        for c in spare:
            c.close()


def alone_on_primary(srv: ServerProcess) -> tuple[RpcClient, bytes]:
    """A connection to the primary, and the export's root handle, once the primary journals
    (the follower published that it serves no connection: within a second of the last one
    closing)."""
    c = client_of(srv, workers_of(srv)[0])
    root = c.mount(srv.export_b)
    until_journaling(srv, c, root)
    return c, root


def until_journaling(srv: ServerProcess, c: RpcClient, d: bytes) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        create_ok(c, d, b"probe")
        assert remove(c, d, b"probe")[0] == OK
        if journal_size(srv) > FOLDED:
            return
        time.sleep(0.2)
    pytest.fail("the primary never journaled")


def test_a_handle_the_primary_journaled_alone_resolves_at_once_through_the_follower(tmp_path: Path) -> None:
    with two_workers(tmp_path) as two:
        a, root = alone_on_primary(two)
        src = look(a, root, b"src")
        made = [create_ok(a, src, f"f{i}".encode()) for i in range(3)]
        deep = mkdir_ok(a, root, b"deep")
        made.append(create_ok(a, deep, b"inner"))
        assert journal_size(two) > FOLDED  # journaled, not committed
        b = client_of(two, workers_of(two)[1])
        for h in made:
            assert getattr_(b, h)[0] == OK
        assert look(b, root, b"deep") == deep
        assert journal_size(two) == FOLDED  # the follower had it folded first
        a.close()
        b.close()


def test_a_followers_write_after_a_journaled_tombstone_is_not_undone_by_the_fold(tmp_path: Path) -> None:
    """The primary, alone, creates and removes ``f`` (its tombstone journaled); the follower
    creates ``f`` again, which on ext4 usually reuses the inode with a new generation.  Had
    the follower written the new place straight into LMDB, the later fold would tombstone
    it: the new handle would be stale."""
    with two_workers(tmp_path, "--no-watch") as two:
        a, root = alone_on_primary(two)
        d = mkdir_ok(a, root, b"box")
        b: RpcClient | None = None
        reused = 0
        try:
            for _ in range(10):
                if b is not None:  # the primary is alone again once the follower publishes 0
                    b.close()
                    b = None
                    until_journaling(two, a, d)
                old = create_ok(a, d, b"f")
                assert remove(a, d, b"f")[0] == OK
                assert journal_size(two) > FOLDED
                b = client_of(two, workers_of(two)[1])
                new = create_ok(b, d, b"f")
                if new[4:12] == old[4:12]:
                    reused += 1
                    deadline = time.monotonic() + 5  # (folded already; else the periodic sync folds)
                    while journal_size(two) > FOLDED and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert recorded(two, new) == "live"  # not the old file's tombstone (before a
                    for c in (a, b):                     # look-up's search could mend it)
                        assert getattr_(c, new)[0] == OK
                assert remove(b, d, b"f")[0] == OK
            if not reused:
                pytest.skip("the file system never reused an inode number here")
        finally:
            a.close()
            if b is not None:
                b.close()


@pytest.mark.parametrize("whom", ["parent", "primary"])
def test_journaled_handles_resolve_after_kill_9(tmp_path: Path, whom: str) -> None:
    """Kill -9 of the server (its parent), or of the primary alone (the flag stays up: the
    follower's fold request waits for the restarted primary, which takes the journal in)."""
    with two_workers(tmp_path) as two:
        a, root = alone_on_primary(two)
        made = [create_ok(a, look(a, root, b"src"), b"a.txt"), create_ok(a, mkdir_ok(a, root, b"deep"), b"b.txt")]
        assert journal_size(two) > FOLDED
        a.close()
        if whom == "parent":
            two.restart(signal.SIGKILL)
        else:
            first = workers_of(two)
            os.kill(first[0], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (len(workers_of(two)) == 2 and first[0] not in workers_of(two)):
                time.sleep(0.1)
        for c in one_per_worker(two).values():
            for h in made:
                assert getattr_(c, h)[0] == OK
            assert lookup(c, root, b"deep")[0] == OK
            c.close()


def test_a_fold_request_folds_the_journal_and_is_answered() -> None:
    """A follower's ``P`` request: the writer's inbox thread folds the store's journal (no
    index flush) and answers."""
    folds: list[int] = []
    with woken_inbox(lambda: folds.append(1)) as (index, sender):
        assert sender.flush(0, timeout=5.0, kind=b"P") == (0, 0)
        assert folds == [1] and index.flushes == 0
