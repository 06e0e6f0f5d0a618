"""The search for an unplaced handle in slices (nfsd/fs/searchslices.py, searchwalk.py): a
walk bigger than one slice answers JUKEBOX, goes on between calls on the event loop, and
then answers: the file where it moved, or STALE once the whole export was walked -- never
STALE because a deadline cut it.  Slices here are one directory each; the gate's clock
stands still (so walking is never out of share, and nothing depends on time)."""
import asyncio
import os

import pytest

from nfsd.fs import searchslices, searchwalk
from nfsd.fs.handles import pack_real
from nfsd.fs.localfs import LocalFS
from nfsd.fs.searchgate import SearchGate
from nfsd.nfs3.errors import NfsError, NfsPending
from nfsd.state.store import Store
from protocol.nfs3 import nfsstat3

WIDE = 40  # directories side by side, each with a few below: far more than one slice


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def tree(tmp_path):
    exp = tmp_path / "exp"
    for i in range(WIDE):
        (exp / f"d{i:02}" / "e" / "f").mkdir(parents=True)
        (exp / f"d{i:02}" / "g").mkdir()
    store = Store(str(tmp_path / "state"))
    yield exp, store
    store.close()


def _fresh(exp, store, clock):
    """A server's backend after a restart (nothing in memory), slices of one directory."""
    fs = LocalFS(str(exp), 1, store)
    fs._searches.gate = SearchGate(clock=clock)
    fs._searches.slice_dirs = 1
    return fs


def _status(fs, fh):
    try:
        fs.node(fh)
    except NfsError as err:
        return err.status
    return nfsstat3.NFS3_OK


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


async def _turns_until_done(fs, most=10_000):
    """Let the event loop turn (no calls meanwhile) until the background walk is done."""
    for turn in range(most):
        w = fs._searches._walk
        if w is None or w.done or not w.missing:
            return turn
        await asyncio.sleep(0)
    raise AssertionError("the walk did not end")


def _moved_deep(exp, store):
    """The handle and inode of a file created through the server, then moved behind its
    back to a directory the walk reaches late, that directory's tree moved deeper too."""
    fs = LocalFS(str(exp), 1, store)
    f = fs.create_file(fs.lookup(fs.lookup(fs.lookup(fs.root, b"d03"), b"e"), b"f"), b"file", 0o644, True)
    fh, ino = f.fh, f.ino
    fs.store.end_burst()
    fs.close()
    os.rename(exp / "d03" / "e" / "f" / "file", exp / f"d{WIDE - 1:02}" / "e" / "f" / "moved")
    os.rename(exp / f"d{WIDE - 1:02}", exp / "d00" / "e" / "deeper")  # and its tree, deeper
    return fh, ino


def test_a_file_moved_deep_is_jukebox_first_then_found_by_the_walk_going_on(tree):
    exp, store = tree
    clock = Clock()
    fh, ino = _moved_deep(exp, store)
    fresh = _fresh(exp, store, clock)
    searches = []
    real = fresh._search
    fresh._search = lambda i: searches.append(i) or real(i)

    async def go():
        assert _status(fresh, fh) == nfsstat3.NFS3ERR_JUKEBOX  # one directory walked: not yet
        turns = await _turns_until_done(fresh)
        assert turns >= 5  # the walk went on, a directory per turn (the file is 6 deep)
        return fresh.node(fh)
    found = asyncio.run(go())
    assert found.ino == ino and found.name == b"moved"
    assert searches == [ino]  # the second call was answered from the walk
    store.end_burst()
    assert fresh.node(fh) is found  # (and its node is cached now)
    # the directories met were recorded: a restart finds the file without a walk
    again = _fresh(exp, store, clock)
    again._search = lambda i: pytest.fail("walked again")
    assert again.node(fh).ino == ino
    again.close()
    fresh.close()


def test_a_made_up_inode_is_stale_only_once_the_whole_export_was_walked(tree):
    exp, store = tree
    clock = Clock()
    fs = _fresh(exp, store, clock)
    made_up = pack_real(1, 10**9 + 3, 0)
    walked = []
    for _ in range(4 * WIDE + 5):  # without an event loop, only calls move the walk on
        status = _status(fs, made_up)
        walked.append(status)
        if status != nfsstat3.NFS3ERR_JUKEBOX:
            break
    assert walked[-1] == nfsstat3.NFS3ERR_STALE
    assert len(walked) > 4 * WIDE  # every directory read before the answer
    assert set(walked[:-1]) == {nfsstat3.NFS3ERR_JUKEBOX}
    assert fs._searches._walk.whole
    # another made-up number: answered from the complete walk at once
    assert _status(fs, pack_real(1, 10**9 + 4, 0)) == nfsstat3.NFS3ERR_STALE
    fs.close()


def test_a_walk_holds_few_descriptors_whatever_the_width_and_lets_them_go_unused(tree, monkeypatch):
    monkeypatch.setattr(searchwalk, "HELD_FDS", 1)  # the root's; the others let go, and reopened
    exp, store = tree
    clock = Clock()
    fs = _fresh(exp, store, clock)
    before = _open_fds()
    counts = []
    for _ in range(2 * WIDE):
        assert _status(fs, pack_real(1, 10**9 + 5, 0)) == nfsstat3.NFS3ERR_JUKEBOX
        counts.append(_open_fds() - before)
    assert max(counts) <= 3  # the root, the directory walked and its listing; none per pending one
    clock.t += searchslices.RESULT_SECONDS + 1  # nobody asked since: the walk is closed
    assert fs._searches.known(10**9 + 6) is None
    assert fs._searches._walk is None and _open_fds() == before
    fs.close()


def test_a_directory_moved_away_while_the_walk_is_inside_it_does_not_lose_the_rest(tree, tmp_path, monkeypatch):
    """Going up to a directory whose descriptor it let go, the walk opens ``..`` and checks
    it: after the directory it was in moved out of the export, ``..`` is another directory;
    the walk opens its parent again by names from the root and walks on, finding a file in
    a directory it had not reached."""
    monkeypatch.setattr(searchwalk, "HELD_FDS", 1)  # the root's only
    exp, store = tree
    clock = Clock()
    fs = LocalFS(str(exp), 1, store)
    f = fs.create_file(fs.lookup(fs.root, b"d05"), b"file", 0o644, True)
    fh, ino = f.fh, f.ino
    fs.store.end_burst()
    fs.close()
    os.rename(exp / "d05" / "file", exp / "d05" / "renamed")
    fresh = _fresh(exp, store, clock)
    assert _status(fresh, fh) == nfsstat3.NFS3ERR_JUKEBOX
    w = fresh._searches._walk
    while len(w._frames) < 4 or not w._frames[1].subdirs:  # in dX/e/f, dX/g not walked yet
        assert _status(fresh, fh) == nfsstat3.NFS3ERR_JUKEBOX
    assert w._frames[1].fd < 0  # (dX's descriptor let go)
    dx = next(p for p in exp.iterdir() if p.stat().st_ino == w._frames[1].ino)
    os.rename(dx / "e", tmp_path / "outside")  # ``..`` of e is no longer dX
    os.rename(exp / "d05" / "renamed", dx / "g" / "moved")
    status = nfsstat3.NFS3ERR_JUKEBOX
    for _ in range(5 * WIDE):
        status = _status(fresh, fh)
        if status != nfsstat3.NFS3ERR_JUKEBOX:
            break
    assert status == nfsstat3.NFS3_OK
    assert fresh.node(fh).name == b"moved" and fresh.node(fh).ino == ino
    # (had the walk taken ``..`` of e for dX, it would have looked for g outside the export)
    fresh.close()


def test_a_walk_that_cannot_start_is_jukebox_not_stale(tree, monkeypatch):
    """Out of descriptors (say), the export cannot be walked: that is no answer, so the
    client is told to retry, not that the file is gone."""
    exp, store = tree
    fs = _fresh(exp, store, Clock())

    def no_fds(*args):
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(searchslices, "ExportWalk", no_fds)
    assert _status(fs, pack_real(1, 10**9 + 8, 0)) == nfsstat3.NFS3ERR_JUKEBOX
    monkeypatch.undo()
    fs._searches.slice_dirs = 0
    assert _status(fs, pack_real(1, 10**9 + 8, 0)) == nfsstat3.NFS3ERR_STALE  # (walked whole)
    fs.close()


def _pending(fs, fh):
    """The future a call for ``fh`` would be held on (the search goes on)."""
    with pytest.raises(NfsPending) as err:
        fs.node(fh)
    return err.value.ready


def test_a_held_call_is_released_when_a_later_slice_meets_its_inode(tree):
    exp, store = tree
    fh, ino = _moved_deep(exp, store)
    fresh = _fresh(exp, store, Clock())

    async def go():
        ready = _pending(fresh, fh)
        assert not ready.done()
        for _ in range(10_000):
            if ready.done():
                break
            await asyncio.sleep(0)  # background slices, a directory each
        assert ready.result() is True
        assert not fresh._searches._walk.done or fresh._searches._walk.missing == set()
        return fresh.node(fh)  # what the held call, run again, answers
    found = asyncio.run(go())
    assert found.ino == ino and found.name == b"moved"
    assert fresh._searches._waiters == {}
    fresh.close()


def test_a_held_call_for_a_made_up_inode_is_released_when_the_walk_ends_and_is_stale(tree):
    exp, store = tree
    fs = _fresh(exp, store, Clock())
    made_up = pack_real(1, 10**9 + 11, 0)

    async def go():
        ready = _pending(fs, made_up)
        for _ in range(10_000):
            if ready.done():
                break
            await asyncio.sleep(0)
        assert ready.result() is True and fs._searches._walk.done
        return _status(fs, made_up)
    assert asyncio.run(go()) == nfsstat3.NFS3ERR_STALE
    fs.close()


def test_a_call_without_walking_credit_joins_the_walk_at_once_and_is_held(tree):
    """Walks used up their share: the inode asked about is wanted by the walk now (not
    only at the client's retry), and the call is held until the background slices, as
    the gate allows them, meet it."""
    exp, store = tree
    clock = Clock()
    fs = _fresh(exp, store, clock)
    fs._searches.gate.spend(clock.t - 10.0)  # ten seconds of walking: no credit left
    assert not fs._searches.gate.may_walk()
    made_up = 10**9 + 12

    async def go():
        ready = _pending(fs, pack_real(1, made_up, 0))
        w = fs._searches._walk
        assert made_up in w.wanted and made_up in w.missing  # joined at once
        assert w.seen == set()  # nothing walked: no share
        clock.t += 50.0  # credit again (the clock stands still otherwise)
        fs._searches._turn()  # (the turn the gate's wait scheduled, come due)
        for _ in range(10_000):
            if ready.done():
                break
            await asyncio.sleep(0)
        assert ready.result() is True
        return _status(fs, pack_real(1, made_up, 0))
    assert asyncio.run(go()) == nfsstat3.NFS3ERR_STALE
    fs.close()


def test_closing_the_search_lets_held_calls_go_with_jukebox(tree):
    exp, store = tree
    fs = _fresh(exp, store, Clock())
    ready = _pending(fs, pack_real(1, 10**9 + 13, 0))
    fs.close()
    assert ready.result() is False  # (the dispatcher answers it JUKEBOX)


def test_a_slice_leaves_room_for_recording_the_directories_it_met(tree, monkeypatch):
    """The handle-table write of the directories a slice met comes after its walking: the
    walking stops early by the last slice's ratio of the two, so that a slice holds the
    loop about SLICE_SECONDS in all (it held it ~27 ms for 20)."""
    exp, store = tree
    clock = Clock()
    fs = _fresh(exp, store, clock)
    fs._searches.slice_dirs = 0
    budgets = []
    real_step = searchwalk.ExportWalk.step

    def step(self, now, until, max_dirs=0):
        budgets.append(round(until - now(), 6))
        real_step(self, now, until, 1)  # (a directory: the walk must not end here)
        clock.t = until  # as if walking took the whole budget
    monkeypatch.setattr(searchwalk.ExportWalk, "step", step)
    real_repair = fs._searches._repair

    def repair(dirs):
        clock.t += budgets[-1] / 2  # recording takes half the walking time
        real_repair(dirs)
    fs._searches._repair = repair
    for _ in range(3):
        assert _status(fs, pack_real(1, 10**9 + 14, 0)) == nfsstat3.NFS3ERR_JUKEBOX
    s = searchslices.SLICE_SECONDS
    assert budgets == [s, round(s / 1.5, 6), round(s / 1.5, 6)]  # walking + recording = s
    fs.close()
