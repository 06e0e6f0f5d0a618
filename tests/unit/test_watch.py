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


def test_events_are_noted_and_the_loop_keeps_turning(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
