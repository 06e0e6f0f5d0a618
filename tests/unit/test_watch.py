"""The inotify watcher (nfsd/fs/watch.py) reads and parses the raw events itself."""
from __future__ import annotations

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
                          text=True, timeout=30)
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


def test_a_new_directory_costs_its_own_subtree_not_every_watch(tmp_path: Path) -> None:
    run_in_a_child(SCRIPT_NEW_DIR_COST, tmp_path)
