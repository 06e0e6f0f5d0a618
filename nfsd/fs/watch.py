"""Changes made behind the server's back (an editor, cp, rm) reach the index through inotify.

Every directory of the export is watched (asyncinotify: small, asyncio-native, the fastest we
measured).  An event only *notes* the entry it names; the index re-reads it itself, safely,
on its next flush (the server flushes twice a second and before every query), so a burst of
writes costs one re-extraction.  New directories are watched as they appear; a queue
overflow falls back to an incremental rescan of the whole export.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import struct
import threading
from typing import Any, Callable, Iterator

from asyncinotify import Inotify, Mask

from ..index.fsread import open_listing

log = logging.getLogger("pysfsd.watch")

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_READ_SIZE = 64 * 1024
_MAX_EVENT = _HEADER.size + 256  # an event with the longest name (NAME_MAX, padded)
_Q_OVERFLOW, _IGNORED, _ISDIR = int(Mask.Q_OVERFLOW), int(Mask.IGNORED), int(Mask.ISDIR)
_NEW_NAME = int(Mask.CREATE | Mask.MOVED_TO)
_CREATE = int(Mask.CREATE)
_DELETE = int(Mask.DELETE)
_NOT_MERGED = _Q_OVERFLOW | _IGNORED | _CREATE  # (and a directory's MOVED_TO: ``_handle_all``)

EVENTS = (Mask.CREATE | Mask.DELETE | Mask.MOVED_FROM | Mask.MOVED_TO | Mask.CLOSE_WRITE
          | Mask.ATTRIB | Mask.MODIFY | Mask.ONLYDIR | Mask.DONT_FOLLOW)


class TreeWatcher:
    def __init__(self, root: str, index: Any, rescan: Callable[[], None], gather: float = 0.0,
                 late: float | None = None) -> None:
        self.root = os.fsencode(os.path.realpath(root))
        # > 0: read events at most this often, letting them gather in between (see
        # ``_read_gathered``)
        self.gather = gather
        # with ``gather``: how long gathered events wait for a timer's read when no call's
        # burst reads them first (``on_burst``); at least ``gather``
        self.late = gather if late is None else max(late, gather)
        self._due = 0.0  # (loop time) gathering: a burst from then on reads the events
        self._poll: Callable[[], None] | None = None  # the gathering read (``_read_gathered``)
        self.index = index
        # whether an entry is queued as created by the server itself (``Index.is_fresh``)
        self._is_fresh: Callable[[int, bytes], bool] | None = getattr(index, "is_fresh", None)
        # whether an entry is queued as removed by the server itself (``Index.is_removed``)
        self._is_removed: Callable[[int, bytes], bool] | None = getattr(index, "is_removed", None)
        # how it notes another process's creation of a file (``Index.note_create_event``)
        self._note_created: Callable[[int, bytes], None] = getattr(index, "note_create_event", index.note_entry)
        # ... and its removal (``Index.note_delete_event``)
        self._note_deleted: Callable[[int, bytes], None] = getattr(index, "note_delete_event", index.note_entry)
        self.rescan = rescan
        self._dir_of: dict[int, int] = {}  # watch descriptor -> directory inode
        self._inotify: Inotify | None = None
        self.ready = asyncio.Event()
        self._fd = -1  # the inotify descriptor while events are read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._tasks: set[asyncio.Task[None]] = set()  # new directories being watched (``catch_up``)

    async def run(self) -> None:
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        with Inotify() as inotify:
            self._inotify = inotify
            try:
                await self._watch_tree(self.root)
                self.ready.set()
                os.set_blocking(inotify.fd, False)  # (see ``_read_events``)
                self._fd = inotify.fd
                await self._read_events(inotify.fd)
            finally:
                self._fd = -1  # (on the loop, as ``catch_up``'s reads: none after this)

    def catch_up(self, timeout: float = 0.5) -> None:
        """Note every event waiting now, from any thread (with ``gather``, before a flush
        that answers a query: what changed behind the server's back before the query
        came shows in it, as when every event is read at once).  Another thread waits for
        the event loop to do it, at most ``timeout`` seconds."""
        loop = self._loop
        if self._fd < 0 or loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._read_pending()
            return
        done = threading.Event()

        def read() -> None:
            try:
                self._read_pending()
            finally:
                done.set()
        try:
            loop.call_soon_threadsafe(read)
        except RuntimeError:
            return  # the loop is closed
        done.wait(timeout)

    def on_burst(self) -> None:
        """A burst of calls starts on the event loop (``Dispatcher.burst_starts``): while events
        gather, read them in this loop turn once ``gather`` has passed, instead of on a
        timer of their own.  Under a lone client's changes (the kernel client: a call, then
        the guest thinks) the timer mostly fell due while the loop slept, and woke it for
        nothing else; a burst is a turn the loop takes anyway.  The read is made after the
        burst (``call_soon``: once its replies are written, before the loop sleeps), not
        before its calls, whose latency it would add to.  The timer (``late``) still reads
        what no call comes to read."""
        due = self._due
        if due and self._poll is not None and self._loop is not None and self._loop.time() >= due:
            self._due = 0.0  # (once: the read sets the next period)
            self._loop.call_soon(self._poll)

    def _read_pending(self) -> bool:
        """On the loop: read and note what the descriptor holds now (new directories are
        watched by a task of their own); whether there was anything.  A read that does not
        fill the buffer took everything queued then: no second read to hear EAGAIN."""
        found = False
        while self._fd >= 0:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return found
            found = True
            for new_dir in self._handle_all(data):
                task = asyncio.get_running_loop().create_task(self._watch_new_dir(*new_dir))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if len(data) < _READ_SIZE - _MAX_EVENT:
                return True
        return found

    async def _read_events(self, fd: int) -> None:
        """Read and parse the raw events ourselves: asyncinotify builds a ``Path``, a ``Mask``
        and an ``Event`` per event, about 5 % of the server's CPU under CREATE, where every
        event is the echo of the server's own change (already noted, so the index drops it
        cheaply).  asyncinotify still adds and owns the watches."""
        # asyncinotify's InitFlags.NONBLOCK is O_CLOEXEC (a bug in 4.x): the descriptor
        # blocks, and a read after a spurious wake-up would stop the event loop
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        if self.gather > 0:
            await self._read_gathered(fd, loop)
            return
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                for new_dir in self._handle_all(data):
                    await self._watch_new_dir(*new_dir)
        finally:
            loop.remove_reader(fd)

    async def _read_gathered(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        """Read events at most every ``gather`` seconds.  The primary of --workers watches
        the other workers' changes too and is often idle when they come: woken for each, it
        read them one at a time, and the kernel merged none (a follower's SETATTR load cost
        each chmod a wake-up of the primary); with one worker, each of a lone client's
        changes woke the loop once more for its own echo.  So an event after a quiet spell
        is read at once; then the descriptor is not watched, and a timer reads what queued
        meanwhile (identical events merged) every ``gather`` seconds, until a read finds
        nothing and the descriptor is watched again.  While calls come, a burst makes that
        read in its loop turn, after its replies, once the period has passed (``on_burst``),
        and the timer, ``late``, only reads what no call came to read.  One ``read`` per
        period while changes keep coming: no wake-up per event, and no ``epoll_ctl`` per
        period (uvloop's ``remove_reader`` and ``add_reader`` cost four system calls
        together)."""
        stopped: asyncio.Future[None] = loop.create_future()
        timer: asyncio.TimerHandle | None = None

        def poll() -> None:
            nonlocal timer
            if timer is not None:  # (a burst's read comes first: ``on_burst``)
                timer.cancel()
                timer = None
            self._due = 0.0
            try:
                if self._read_pending():
                    self._due = loop.time() + self.gather
                    timer = loop.call_later(self.late, poll)
                else:
                    loop.add_reader(fd, readable)
            except Exception as exc:  # the descriptor failed: the watcher stops, as run() says
                if not stopped.done():
                    stopped.set_exception(exc)

        def readable() -> None:
            loop.remove_reader(fd)
            poll()

        loop.add_reader(fd, readable)
        self._poll = poll
        try:
            await stopped
        finally:
            self._poll, self._due = None, 0.0
            if timer is not None:
                timer.cancel()
            loop.remove_reader(fd)

    async def _watch_tree(self, top: bytes, new: list[int] | None = None) -> None:
        """Watch ``top`` and every directory below it (never through symlinks); the inodes
        of those not watched yet go to ``new``."""
        stack = [top]
        added = 0
        while stack:
            path = stack.pop()
            if not self._add(path, new):
                continue
            added += 1
            try:
                fd = open_listing(path, flags=os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    with os.scandir(fd) as it:
                        for e in it:
                            if e.is_dir(follow_symlinks=False):
                                stack.append(os.path.join(path, os.fsencode(e.name)))
                finally:
                    os.close(fd)
            except OSError:
                continue
            if added % 1000 == 0:
                await asyncio.sleep(0)  # let calls be served while a big tree is watched
        log.info("watching %d directories under %s", added, os.fsdecode(top))

    def _add(self, path: bytes, new: list[int] | None) -> bool:
        """Watch one directory; its inode goes to ``new`` unless this watch had it already."""
        assert self._inotify is not None
        try:
            st = os.stat(path, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                return False
            watch = self._inotify.add_watch(path, EVENTS)
        except OSError as exc:
            log.warning("cannot watch %s: %s", os.fsdecode(path), exc)
            return False
        if self._dir_of.get(watch.wd) != st.st_ino:
            self._dir_of[watch.wd] = st.st_ino
            if new is not None:
                new.append(st.st_ino)
        return True

    def _handle_all(self, data: bytes) -> list[tuple[int, bytes]]:
        """Note the events of one read; the directories that appeared, to be watched.

        An entry noted once is not noted again for a later event of the same read (but a
        creation or a new directory is handled as always): both changes happened before
        the read, so the one note (the index reads the entry at its next flush, the entry
        caches forget it now) covers both.  A SETATTR or RENAME load on a few files (the
        server's own or another worker's) has many events of each name per read, which
        the kernel merges only when they follow each other: each cost a note, an entry
        cache's ``changed`` and a slot in the followers' ring."""
        new_dirs: list[tuple[int, bytes]] = []
        noted: set[tuple[int, bytes]] = set()
        for wd, mask, name in _parse(data):
            merged = not mask & _NOT_MERGED and not (mask & _ISDIR and mask & _NEW_NAME)
            if merged and (wd, name) in noted:
                continue
            if not merged:  # a change after a creation is noted again: the creation may have
                noted.discard((wd, name))  # been taken for an echo (``is_fresh``)
            try:
                new_dir = self._handle(wd, mask, name)
            except Exception:  # a watcher must outlive any one odd event
                log.exception("inotify event wd=%d mask=%#x name=%r", wd, mask, name)
                continue
            if new_dir is not None:
                new_dirs.append(new_dir)
            elif merged and name:
                noted.add((wd, name))
        return new_dirs

    def _handle(self, wd: int, mask: int, name: bytes) -> tuple[int, bytes] | None:
        """Note one event's entry; returns (parent inode, name) of a directory that
        appeared, to be watched (a plain call per event: most are echoes of the server's
        own changes, whose note is already queued, see ``Index.note_entry``)."""
        if mask & _Q_OVERFLOW:
            log.warning("inotify queue overflowed: rescanning the export")
            self.rescan()
            return None
        if mask & _IGNORED:
            self._dir_of.pop(wd, None)
            if self._inotify is not None:
                self._inotify._watches.pop(wd, None)  # the library's own map of live watches
            return None
        dir_ino = self._dir_of.get(wd)
        if dir_ino is None or not name:
            return None
        if mask & _DELETE:
            if self._is_removed is not None and self._is_removed(dir_ino, name):
                # the echo of the server's own REMOVE, queued as gone and forgotten by the entry
                # cache already (an IN_DELETE after another event of the name is noted)
                return None
            if not mask & _ISDIR:  # maybe another worker's, whose note comes after it
                self._note_deleted(dir_ino, name)
                return None
        if mask & _CREATE and self._is_fresh is not None:
            if self._is_fresh(dir_ino, name):
                # the echo of the server's own CREATE, queued with its creation's stat and
                # forgotten by the entry cache already: noting it would have the index read it
                # again (any other event of it, or another CREATE after a DELETE, is noted)
                return None
            if not mask & _ISDIR:  # maybe another worker's, whose note comes after it
                self._note_created(dir_ino, name)
                return None
        self.index.note_entry(dir_ino, name)
        if mask & _ISDIR and mask & _NEW_NAME:
            return dir_ino, name
        return None

    def _path_of_dir(self, ino: int) -> bytes | None:
        """A watched directory's path below the root: the index's, if it still leads to that
        directory, else the index's after applying its queue (on the event loop: only when
        a move the index has not applied yet may have changed it)."""
        path = self.index.path_of(ino)
        if path is not None:
            try:
                if os.stat(os.path.join(self.root, path) if path else self.root,
                           follow_symlinks=False).st_ino == ino:
                    return path
            except OSError:
                pass
        self.index.flush()
        return self.index.path_of(ino)

    async def _watch_new_dir(self, parent_ino: int, name: bytes) -> None:
        """A directory appeared: watch it and its subtree, and note what it already holds
        (files created before the watch existed raise no events)."""
        parent = self._path_of_dir(parent_ino)
        if parent is None:
            return
        path = os.path.join(self.root, parent, name) if parent else os.path.join(self.root, name)
        # (the directories this added, not a difference of two sets of every watched one:
        # that made each new directory cost in proportion to all the export's directories)
        new: list[int] = []
        await self._watch_tree(path, new)
        for ino in new:
            self.index.note_dir(ino)


def _parse(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(watch descriptor, mask, name) of each raw inotify event in ``data``."""
    offset, end = 0, len(data)
    while offset < end:
        wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        yield wd, mask, data[offset:offset + length].rstrip(b"\0")
        offset += length
