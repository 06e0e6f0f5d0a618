"""A walk of the export that can stop after any directory and go on later: the search for
handles the handle table cannot place (``LocalFS._search``).

Why resumable: run at once, a walk of a big export held the event loop (every other call of
the worker) for seconds, and one cut at a deadline could not tell "absent" from "not reached
yet", so a file that had merely moved was answered STALE.  This walk runs in slices
(``step``) and keeps its state between them:

* a depth-first stack of frames (a directory's inode number and the subdirectories still to
  visit), with at most ``HELD_FDS`` + 2 descriptors open whatever the export's width or
  depth (the top ``HELD_FDS`` frames' directories, and the listing being read): going down
  opens the child by name (checking its inode number); going up to a frame whose descriptor
  was let go opens ``..`` and checks its inode number; a directory moved meanwhile is opened
  again by names from the root, each checked, and one that cannot be is left out (the walk
  is then not ``whole``);
* every inode number met (``seen``); the place (parent, name) of every directory met, of
  every ``wanted`` inode and of the first ``PLACES_MAX`` other entries (``places``), so a
  handle asked about after the walk passed its file is answered from the walk too;
* the directories met since the caller last took them (``take_dirs``: it repairs the handle
  table with them).
"""
from __future__ import annotations

import os
from typing import Callable

from ..index.fsread import open_dir_at, open_listing

PLACES_MAX = 100_000  # places of other entries than directories and wanted ones (~15 MB)
CHECK_EVERY = 256  # entries of one directory listed between two looks at the clock
MAX_DEPTH = 4096
HELD_FDS = 16  # directories held open down the stack; deeper ones are reopened by ``..``
_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class _Frame:
    __slots__ = ("ino", "fd", "subdirs")

    def __init__(self, ino: int, fd: int) -> None:
        self.ino, self.fd = ino, fd  # the directory, listable (-1: let go, below HELD_FDS)
        self.subdirs: list[tuple[str, int]] = []  # (name, inode) still to visit


class ExportWalk:
    """One walk of the export below ``root_fd`` (see the module)."""

    def __init__(self, root_fd: int, root_ino: int) -> None:
        self.root_fd, self.root_ino = root_fd, root_ino
        self.seen: set[int] = set()
        self.places: dict[int, tuple[int, str]] = {}  # (names as listed: encoded when used)
        self.wanted: set[int] = set()
        self.missing: set[int] = set()  # wanted and not placed yet
        self.whole = True  # no directory left out (unreadable, or moved away mid-walk)
        self.done = False
        self._dirs: list[tuple[int, int, bytes]] = []  # (ino, parent, name) since take_dirs
        fd = open_listing(".", root_fd)
        try:
            self._it: os._ScandirIterator[str] | None = os.scandir(fd)
        except OSError:
            os.close(fd)
            raise
        self._frames = [_Frame(root_ino, fd)]

    def want(self, ino: int) -> None:
        """Look for ``ino`` too (one met before is already placed, or, past PLACES_MAX, not)."""
        if ino not in self.wanted:
            self.wanted.add(ino)
            if ino not in self.places:
                self.missing.add(ino)

    def take_dirs(self) -> list[tuple[int, int, bytes]]:
        """The directories met since the last call: (inode, parent inode, name)."""
        dirs, self._dirs = self._dirs, []
        return dirs

    def step(self, clock: Callable[[], float], until: float, max_dirs: int = 0) -> None:
        """Walk on until ``clock()`` passes ``until``, ``max_dirs`` directories were read
        (0: no such limit), or the walk is done."""
        listed = 0
        while not self.done:
            if self._it is not None:
                if not self._list(clock, until):
                    return  # out of time inside a directory: its listing goes on next time
                listed += 1
                if clock() >= until or listed == max_dirs:
                    return
            else:
                self._move()

    def _list(self, clock: Callable[[], float], until: float) -> bool:
        """Read on in the top frame's directory; whether it was read to its end."""
        it = self._it
        assert it is not None
        frame = self._frames[-1]
        dino, seen, places, missing = frame.ino, self.seen, self.places, self.missing
        room = PLACES_MAX - len(places)
        n = 0
        try:
            for e in it:
                eino = e.inode()
                seen.add(eino)
                if e.is_dir(follow_symlinks=False):
                    name = e.name
                    places[eino] = (dino, name)
                    frame.subdirs.append((name, eino))
                    self._dirs.append((eino, dino, os.fsencode(name)))
                    missing.discard(eino)
                elif room > 0 or eino in missing:
                    places[eino] = (dino, e.name)
                    missing.discard(eino)
                    room -= 1
                n += 1
                if n == CHECK_EVERY:
                    n = 0
                    if clock() >= until:
                        return False
        except OSError:
            self.whole = False
        it.close()
        self._it = None
        return True

    def _move(self) -> None:
        """Down into the top frame's next subdirectory, or up out of a finished frame."""
        frame = self._frames[-1]
        while frame.subdirs:
            name, ino = frame.subdirs.pop()
            if len(self._frames) >= MAX_DEPTH:
                self.whole = False
                continue
            fd = open_dir_at(frame.fd, name, ino)
            if fd is None:
                self.whole = False  # gone, replaced or unreadable since it was listed
                continue
            self._enter(fd, ino)
            return
        self._frames.pop()
        if not self._frames:
            os.close(frame.fd)
            self.done = True
            return
        parent = self._frames[-1]
        if parent.fd < 0:  # (the root's is always held: its ``..`` is never read)
            up = open_dir_at(frame.fd, b"..", parent.ino)
            parent.fd = -1 if up is None else up
        os.close(frame.fd)
        while self._frames and self._frames[-1].fd < 0:
            fd = self._reopen()
            if fd is None:
                self.whole = False  # moved away while the walk was below it: its rest is left out
                self._frames.pop()
            else:
                self._frames[-1].fd = fd
        if not self._frames:
            self.done = True  # (the export root itself could not be opened again)

    def _enter(self, fd: int, ino: int) -> None:
        if len(self._frames) > HELD_FDS:
            parent = self._frames[-1]
            os.close(parent.fd)
            parent.fd = -1
        self._frames.append(_Frame(ino, fd))
        try:
            self._it = os.scandir(fd)
        except OSError:
            self.whole = False

    def _reopen(self) -> int | None:
        """A listable descriptor of the top frame's directory by names from the root, each
        step checked (when ``..`` of the child just walked is another directory)."""
        chain = self._chain(self._frames[-1].ino)
        if chain is None:
            return None
        try:
            fd = open_listing(".", self.root_fd)
        except OSError:
            return None
        for name, ino in chain:
            sub = open_dir_at(fd, name, ino)
            os.close(fd)
            if sub is None:
                return None
            fd = sub
        return fd

    def _chain(self, ino: int) -> list[tuple[str, int]] | None:
        """(name, inode) from the root down to ``ino`` as this walk met them, or None."""
        chain: list[tuple[str, int]] = []
        while ino != self.root_ino:
            place = self.places.get(ino)
            if place is None or len(chain) > MAX_DEPTH:
                return None
            chain.append((place[1], ino))
            ino = place[0]
        chain.reverse()
        return chain

    def open_place(self, ino: int) -> tuple[int, os.stat_result, int, bytes] | None:
        """``ino`` opened (O_PATH) where this walk met it, each step checked: (descriptor,
        its stat, parent inode, name); None if it was not placed or is no longer there."""
        chain = self._chain(ino)
        if not chain:
            return None
        fd = self.root_fd
        try:
            for i, (name, step_ino) in enumerate(chain):
                sub = os.open(name, _O_PATH | (os.O_DIRECTORY if i < len(chain) - 1 else 0), dir_fd=fd)
                if fd != self.root_fd:
                    os.close(fd)
                fd = sub
                st = os.stat(fd)
                if st.st_ino != step_ino:
                    os.close(fd)
                    return None
        except OSError:
            if fd != self.root_fd:
                os.close(fd)
            return None
        return fd, st, chain[-2][1] if len(chain) > 1 else self.root_ino, os.fsencode(chain[-1][0])

    def close(self) -> None:
        """Let go of the descriptors of a walk abandoned (or finished: none are left)."""
        if self._it is not None:
            self._it.close()
            self._it = None
        for frame in self._frames:
            if frame.fd >= 0:
                os.close(frame.fd)
        self._frames = []
