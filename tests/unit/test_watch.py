"""The inotify watcher (nfsd/fs/watch.py) reads and parses the raw events itself."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run in a child: a watcher that blocked the event loop would hang the test, not fail it.
SCRIPT = r'''
import asyncio, os, sys
from nfsd.fs.watch import TreeWatcher

class Index:
    def __init__(self): self.notes, self.dirs = [], []
    def note_entry(self, d, n): self.notes.append((d, n))
    def note_dir(self, d): self.dirs.append(d)
    def flush(self): pass
    def path_of(self, ino): return b""

async def main(root):
    index = Index()
    w = TreeWatcher(root, index, lambda: None)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    os.mkdir(os.path.join(root, "sub"))
    await asyncio.sleep(0.2)
    sub = os.stat(os.path.join(root, "sub")).st_ino
    open(os.path.join(root, "sub", "f\u00e9"), "w").close()
    for _ in range(20):  # the loop keeps turning with no further event
        await asyncio.sleep(0.01)
    assert (os.stat(root).st_ino, b"sub") in index.notes, index.notes
    assert (sub, "f\u00e9".encode()) in index.notes, index.notes
    assert len(w._dir_of) == 2
    os.unlink(os.path.join(root, "sub", "f\u00e9"))
    os.rmdir(os.path.join(root, "sub"))
    await asyncio.sleep(0.2)
    assert len(w._dir_of) == 1  # the removed directory's watch is forgotten
    task.cancel()
    print("ok")

asyncio.run(main(sys.argv[1]))
'''


def run_in_a_child(script: str, tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    done = subprocess.run([sys.executable, "-c", script, str(root)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_events_are_noted_and_the_loop_keeps_turning(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT, tmp_path)


# A new directory is watched under the path the index knows for its parent when that path
# still leads there; the queue is applied first (on the event loop) only when it does not.
SCRIPT_NEW_DIR = r'''
import asyncio, os, sys
from nfsd.fs.watch import TreeWatcher

class Index:
    def __init__(self): self.paths, self.flushes, self.after_flush = {}, 0, {}
    def note_entry(self, d, n): pass
    def note_dir(self, d): pass
    def flush(self):
        self.flushes += 1
        self.paths.update(self.after_flush)
    def path_of(self, ino): return self.paths.get(ino)

async def main(root):
    index = Index()
    os.mkdir(os.path.join(root, "a"))
    a = os.stat(os.path.join(root, "a")).st_ino
    index.paths = {os.stat(root).st_ino: b"", a: b"a"}
    w = TreeWatcher(root, index, lambda: None)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    os.mkdir(os.path.join(root, "a", "b"))
    await asyncio.sleep(0.3)
    assert index.flushes == 0, index.flushes
    assert len(w._dir_of) == 3, w._dir_of
    os.rename(os.path.join(root, "a"), os.path.join(root, "c"))  # the index has not seen it yet
    index.after_flush = {a: b"c"}
    await asyncio.sleep(0.3)
    os.mkdir(os.path.join(root, "c", "d"))
    await asyncio.sleep(0.3)
    assert index.flushes == 1, index.flushes
    assert len(w._dir_of) == 4, w._dir_of
    task.cancel()
    print("ok")

asyncio.run(main(sys.argv[1]))
'''


def test_a_new_directory_is_watched_without_applying_the_queue_when_its_parents_path_holds(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_NEW_DIR, tmp_path)


# A new directory costs the watcher its own subtree, not a pass over every watched directory
# (it once built two sets of all of them per new directory to find the ones it had added: an
# export of 100,000 directories paid that for each MKDIR).  The watches of a large export are
# stood in for by entries that never match a real watch descriptor.
SCRIPT_NEW_DIR_COST = r'''
import asyncio, os, sys
from nfsd.fs.watch import TreeWatcher

class Watches(dict):
    """``_dir_of``: counts the entries read by going over all of them."""
    read = 0
    def values(self):
        Watches.read += len(self)
        return super().values()
    def items(self):
        Watches.read += len(self)
        return super().items()
    def __iter__(self):
        Watches.read += len(self)
        return super().__iter__()

class Index:
    def __init__(self): self.dirs = []
    def note_entry(self, d, n): pass
    def note_dir(self, d): self.dirs.append(d)
    def flush(self): pass
    def path_of(self, ino): return b"" if ino == ROOT else None

async def main(root):
    global ROOT
    ROOT = os.stat(root).st_ino
    index = Index()
    w = TreeWatcher(root, index, lambda: None)
    w._dir_of = Watches({-k: 10**12 + k for k in range(1, 50_001)})  # 50,000 other directories
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    Watches.read = 0
    made = []
    for k in range(20):
        os.makedirs(os.path.join(root, "new%d" % k, "inner"))
        made += [os.stat(os.path.join(root, "new%d" % k)).st_ino,
                 os.stat(os.path.join(root, "new%d" % k, "inner")).st_ino]
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert sorted(index.dirs) == sorted(made), (index.dirs, made)  # each new directory noted once
    assert Watches.read < 50_000, Watches.read  # never a pass over all the watches
    task.cancel()
    print("ok")

asyncio.run(main(sys.argv[1]))
'''


# With ``gather`` (the primary of --workers), another process's changes wake the watcher once
# per period, not once per change: the events wait in the kernel's queue, identical ones
# merge there, and one read takes them in.  Here another process changes one file's mode
# 200 times, 1 ms apart: read as they come (gather 0) that is one note per wake-up, dozens;
# gathering for 0.5 s, the first change (after a quiet spell: read at once) and one merged
# event for the rest.
GATHER_SCRIPT = r'''
import asyncio, os, subprocess, sys, time
from nfsd.fs.watch import TreeWatcher

class Index:
    def __init__(self): self.notes = []
    def note_entry(self, d, n): self.notes.append((d, n))
    def note_dir(self, d): pass
    def flush(self): pass
    def path_of(self, ino): return b""

async def main(root, gather):
    path = os.path.join(root, "f")
    open(path, "w").close()
    index = Index()
    w = TreeWatcher(root, index, lambda: None, gather)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    began = time.monotonic()
    changer = await asyncio.create_subprocess_exec(sys.executable, "-c",
        "import os, sys, time\nfor i in range(200):\n    os.chmod(sys.argv[1], 0o600 | (i & 1) << 6)\n    time.sleep(0.001)",
        path)
    await changer.wait()
    span = time.monotonic() - began  # at least as long as the changes took
    await asyncio.sleep(max(0.2, 2 * gather))
    task.cancel()
    print(len(index.notes), span)

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
'''


def notes_seen(tmp_path: Path, gather: float) -> tuple[int, float]:
    """(notes, seconds the changes took at most)."""
    root = tmp_path / f"export-{gather}"
    root.mkdir()
    done = subprocess.run([sys.executable, "-c", GATHER_SCRIPT, str(root), str(gather)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    notes, span = done.stdout.split()
    return int(notes), float(span)


def test_with_gather_another_processes_changes_cost_one_wake_up_per_period(tmp_path: Path) -> None:
    gathered, span = notes_seen(tmp_path, 0.5)
    # One read at once, then one per period while changes come, and the period's last read.
    # Bounded by how long the changes really took (0.2 s idle; a loaded machine stretches
    # the changer's 1 ms sleeps, and a fixed bound of 4 then failed by chance).
    assert 1 <= gathered <= max(4, 2 + math.ceil(span / 0.5)), (gathered, span)
    assert notes_seen(tmp_path, 0.0)[0] > 2 * gathered  # the same changes, read as they come


# ``catch_up`` (called before a flush that answers a query): a change the gathering watcher
# has not read yet is noted at once, asked from another thread (the writer's inbox thread)
# or from the loop itself, so a query right after a change behind the server's back sees it.
CATCH_UP_SCRIPT = r'''
import asyncio, os, sys, threading
from nfsd.fs.watch import TreeWatcher

class Index:
    def __init__(self): self.notes = []
    def note_entry(self, d, n): self.notes.append(n)
    def note_dir(self, d): pass
    def flush(self): pass
    def path_of(self, ino): return b""

async def main(root):
    index = Index()
    w = TreeWatcher(root, index, lambda: None, 30.0)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    open(os.path.join(root, "first"), "w").close()   # after a quiet spell: read at once
    for _ in range(100):
        if b"first" in index.notes:
            break
        await asyncio.sleep(0.01)
    assert set(index.notes) == {b"first"}, index.notes  # (created, closed)
    open(os.path.join(root, "second"), "w").close()  # within the 30 s: waits
    await asyncio.sleep(0.2)
    assert b"second" not in index.notes, index.notes
    asker = threading.Thread(target=w.catch_up)
    asker.start()
    while asker.is_alive():
        await asyncio.sleep(0.01)
    assert b"second" in index.notes, index.notes
    open(os.path.join(root, "third"), "w").close()
    w.catch_up()                                    # on the loop itself
    assert b"third" in index.notes, index.notes
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    w.catch_up()                                    # stopped: nothing to read, no error
    print("ok")

asyncio.run(main(sys.argv[1]))
'''


# Gathering (``TreeWatcher._read_gathered``): the first event after a quiet spell is read at
# once; those within ``gather`` of it wait for the timer's read; once a timer's read finds
# nothing the descriptor is watched again, so the next change after that quiet spell is read
# at once too, not a period later.
REARM_SCRIPT = CATCH_UP_SCRIPT[:CATCH_UP_SCRIPT.index("async def main")] + r'''
import time


async def noted(index, name, within):
    deadline = time.monotonic() + within
    while name not in index.notes:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True

async def main(root):
    index = Index()
    gather = 4.0
    w = TreeWatcher(root, index, lambda: None, gather)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    os.mkfifo(os.path.join(root, "first"))           # one event: IN_CREATE
    assert await noted(index, b"first", 1.0), index.notes      # after a quiet spell: at once
    began = time.monotonic()
    os.mkfifo(os.path.join(root, "second"))          # within the period: the timer reads it
    assert not await noted(index, b"second", 0.5), index.notes
    assert await noted(index, b"second", 2 * gather), index.notes
    assert time.monotonic() - began > 0.5 * gather
    await asyncio.sleep(1.25 * gather)               # the next read finds nothing: watched again
    os.mkfifo(os.path.join(root, "third"))
    assert await noted(index, b"third", 0.1 * gather), index.notes  # at once, not a period later
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    print("ok")

asyncio.run(main(sys.argv[1]))
'''


def test_a_gathering_watcher_reads_at_once_again_after_a_quiet_spell(tmp_path: Path) -> None:
    run_in_a_child(REARM_SCRIPT, tmp_path)


# A burst of calls reads the gathered events (``TreeWatcher.on_burst``): not before the
# period has passed since the last read, then in the burst's loop turn (after the burst:
# the loop's next step takes it), without waiting for the timer (``late``), which reads
# what no burst came for; a burst with nothing gathered reads nothing.
BURST_SCRIPT = REARM_SCRIPT[:REARM_SCRIPT.index("async def main")] + r'''
async def main(root):
    index = Index()
    gather, late = 0.5, 60.0
    w = TreeWatcher(root, index, lambda: None, gather, late)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    w.on_burst()                                     # nothing gathered: nothing to do
    os.mkfifo(os.path.join(root, "first"))
    assert await noted(index, b"first", 1.0), index.notes      # after a quiet spell: at once
    os.mkfifo(os.path.join(root, "second"))
    w.on_burst()                                     # within the period: left to gather
    assert not await noted(index, b"second", 0.1), index.notes
    await asyncio.sleep(gather)
    assert b"second" not in index.notes              # no timer's read within ``late``
    w.on_burst()                                     # the period has passed: read in this turn
    await asyncio.sleep(0)
    assert b"second" in index.notes, index.notes
    await asyncio.sleep(gather)
    w.on_burst()                                     # nothing came: watched again...
    await asyncio.sleep(0)
    os.mkfifo(os.path.join(root, "third"))
    assert await noted(index, b"third", 0.2 * gather), index.notes  # ...so read at once
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    w.on_burst()                                     # stopped: nothing to read, no error
    print("ok")

asyncio.run(main(sys.argv[1]))
'''


def test_a_burst_reads_what_a_gathering_watcher_holds_once_the_period_passed(tmp_path: Path) -> None:
    run_in_a_child(BURST_SCRIPT, tmp_path)


def test_a_new_directory_costs_its_own_subtree_not_every_watch(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_NEW_DIR_COST, tmp_path)


def test_catch_up_notes_what_a_gathering_watcher_has_not_read(tmp_path: Path) -> None:
    run_in_a_child(CATCH_UP_SCRIPT, tmp_path)


# How each script below starts: a watcher over its own ``Index`` class, and the export
# root's inode (``top``).
WATCHER_MAIN = r'''
async def main(root):
    index = Index()
    w = TreeWatcher(root, index, lambda: None)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.ready.wait(), 10)
    top = os.stat(root).st_ino
'''


# An index that records its notes, knowing the entries queued as the server's own creations
# (``fresh``) and removals (``removed``); a note of an entry takes it out of both.
EPILOGUE = r'''
    task.cancel()
    print("ok")

asyncio.run(main(sys.argv[1]))
'''
ECHO_INDEX = r'''
import asyncio, os, sys
from nfsd.fs.watch import TreeWatcher

async def settle():  # the watcher's turns: it reads what the kernel queued meanwhile
    for _ in range(20):
        await asyncio.sleep(0.01)

class Index:
    def __init__(self): self.notes, self.fresh, self.removed = [], set(), set()
    def note_entry(self, d, n):
        self.notes.append((d, n))
        self.fresh.discard((d, n))
        self.removed.discard((d, n))
    def note_create_event(self, d, n): self.note_entry(d, n)
    def note_dir(self, d): pass
    def is_fresh(self, d, n): return (d, n) in self.fresh
    def is_removed(self, d, n): return (d, n) in self.removed
    def flush(self): pass
    def path_of(self, ino): return b""

'''
# The IN_CREATE echo of a file the server just created (queued with its creation's stat,
# ``Index.is_fresh``) is dropped; any other event of it, and other files' creations, are noted.
SCRIPT_ECHO = ECHO_INDEX + WATCHER_MAIN + r'''    index.fresh.add((top, b"mine"))
    os.close(os.open(os.path.join(root, "mine"), os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    os.close(os.open(os.path.join(root, "theirs"), os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert index.notes == [(top, b"theirs")], index.notes
    assert (top, b"mine") in index.fresh
    with open(os.path.join(root, "mine"), "ab") as f:  # changed since: noted
        f.write(b"x")
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert (top, b"mine") in index.notes, index.notes
    assert (top, b"mine") not in index.fresh
    task.cancel()
    print("ok")

asyncio.run(main(sys.argv[1]))
'''


def test_the_echo_of_the_servers_own_create_is_dropped(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_ECHO, tmp_path)


# The IN_DELETE echo of a file the server just removed (queued as gone, ``Index.is_removed``)
# is dropped; another process's removal, and a later event of the name, are noted.
SCRIPT_REMOVE_ECHO = ECHO_INDEX + WATCHER_MAIN + r"""    for name in ("mine", "theirs"):
        os.close(os.open(os.path.join(root, name), os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    await settle()
    index.notes.clear()
    os.unlink(os.path.join(root, "mine"))
    index.removed.add((top, b"mine"))
    os.unlink(os.path.join(root, "theirs"))
    await settle()
    assert index.notes == [(top, b"theirs")], index.notes
    assert (top, b"mine") in index.removed
    os.close(os.open(os.path.join(root, "mine"), os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    os.unlink(os.path.join(root, "mine"))  # made and removed again behind the server: noted
    await settle()
    assert index.notes == [(top, b"theirs"), (top, b"mine"), (top, b"mine")], index.notes
    assert (top, b"mine") not in index.removed
""" + EPILOGUE


def test_the_echo_of_the_servers_own_remove_is_dropped(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_REMOVE_ECHO, tmp_path)


# A watcher over an index that records its notes and the creations it was told of
# (``note_create_event``); the script after it goes on inside ``main``.
CREATE_EVENT_PRELUDE = r'''
import asyncio, os, sys
from nfsd.fs.watch import TreeWatcher

class Index:
    def __init__(self): self.notes, self.created = [], []
    def note_entry(self, d, n): self.notes.append((d, n))
    def note_create_event(self, d, n): self.created.append((d, n))
    def note_dir(self, d): pass
    def is_fresh(self, d, n): return False
    def flush(self): pass
    def path_of(self, ino): return b""

async def settle():  # the watcher's turns: it reads what the kernel queued meanwhile
    for _ in range(20):
        await asyncio.sleep(0.01)

''' + WATCHER_MAIN
CREATE_EVENT_EPILOGUE = EPILOGUE


# Another process's creation of a file (not the server's own, not a directory) is noted with
# ``note_create_event``, where the index has it: it may be the echo of another worker's
# creation, whose note comes later (``Index.note_create_event``); every other event, and a
# new directory (which must be watched), with ``note_entry``.
SCRIPT_CREATE_EVENT = CREATE_EVENT_PRELUDE + r'''
    os.close(os.open(os.path.join(root, "f"), os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    os.mkdir(os.path.join(root, "d"))
    await settle()
    assert index.created == [(top, b"f")], index.created
    assert index.notes == [(top, b"d")], index.notes
    os.chmod(os.path.join(root, "f"), 0o600)
    await settle()
    assert index.notes == [(top, b"d"), (top, b"f")], index.notes
''' + CREATE_EVENT_EPILOGUE


def test_another_processes_creation_of_a_file_is_noted_as_such(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_CREATE_EVENT, tmp_path)


# The events of one read: an entry noted once is not noted again for a later event of the
# same name (a SETATTR load on a few files, whose events the kernel merges only when they
# follow each other), but a creation after it is still handled as one.
SCRIPT_MERGED = CREATE_EVENT_PRELUDE + r'''
    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    for p in (a, b):
        os.close(os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    await settle()
    assert sorted(index.created) == [(top, b"a"), (top, b"b")], index.created
    for i in range(10):  # the loop does not turn meanwhile: one read takes them all
        os.chmod(a, 0o600 | i)
        os.chmod(b, 0o600 | i)
    os.unlink(a)
    os.close(os.open(a, os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    await settle()
    assert index.notes == [(top, b"a"), (top, b"b")], index.notes
    assert index.created[2:] == [(top, b"a")], index.created
''' + CREATE_EVENT_EPILOGUE


def test_an_entry_is_noted_once_per_read(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_MERGED, tmp_path)


# ... and a change after that creation, in the same read, is noted again: the creation may
# be taken for the echo of the server's own (queued with its creation's stat, which the
# change made stale), so it must not hide what came after it.
SCRIPT_CHANGED_AFTER_CREATION = CREATE_EVENT_PRELUDE + r'''
    a = os.path.join(root, "a")
    os.close(os.open(a, os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    await settle()
    os.chmod(a, 0o600)    # the loop does not turn meanwhile: one read takes them all
    os.unlink(a)
    os.close(os.open(a, os.O_RDONLY | os.O_CREAT | os.O_EXCL))
    os.chmod(a, 0o640)
    await settle()
    assert index.notes == [(top, b"a"), (top, b"a")], index.notes
    assert index.created == [(top, b"a"), (top, b"a")], index.created
''' + CREATE_EVENT_EPILOGUE


def test_a_change_after_a_creation_in_the_same_read_is_noted(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_CHANGED_AFTER_CREATION, tmp_path)
