"""One index writer among several worker processes (``--workers N``).

Only the primary worker scans, applies notes and commits the index; every other worker (a
*follower*) reads the index from LMDB like the ``query`` command does and sends what it
would have noted (``note_entry``, ``note_ino``, ``note_dir``) to the writer.

The channel is one ``AF_UNIX`` ``SOCK_SEQPACKET`` socket pair per follower, created by
the parent before forking and kept open by it, so messages sent while the writer restarts
wait in the socket instead of being lost.  A pair (unlike a datagram socket bound to a
name) is not limited by ``net.unix.max_dgram_qlen`` (10 on this machine), only by its
buffer, and keeps message boundaries.

A follower's query directory fault asks the writer to flush (``F``) and waits for the reply
carrying the new ``version``.  A change a worker acknowledged was sent before its reply, so
its message is already in the writer's socket when any later flush request arrives; the
writer reads *every* follower's socket (and its own queue) before it flushes.  So the next
listing of a query directory in any worker shows every change any worker acknowledged.
"""
from __future__ import annotations

import contextlib
import logging
import mmap
import os
import selectors
import socket
import struct
import threading
import time
from typing import Any, Callable

import lmdb

from .index import CreatedStat, Index, entry_name
from .scanner import ContentPass, ScanStats

log = logging.getLogger("pysfsd.index")

_MSG = struct.Struct(">cHQH")      # kind, export id, inode (or request number), name length; the name
MAX_BATCH = 32 << 10               # bytes of notes a burst sends in one message, at most
_CREATED = struct.Struct(">9q")    # after a ``C`` note's name: the creation's stat (``CreatedStat``'s fields)
_MARK = struct.Struct(">QQ")       # after an ``R`` note's name: the writer's flushes begun, and the time
                                   # (``time.monotonic_ns``), before the removal
_REPLY = struct.Struct(">QQB")     # request number, version, flags
READY, STAT_READY = 1, 2           # reply flags: the writer's scans done / its stat tier done
FLUSH_TIMEOUT = 30.0               # a flush applying many notes extracts their contents
SEND_TIMEOUT = 5.0                 # a writer that does not read for this long: note dropped
SEND_BUFFER = 4 << 20
MAX_SENT_AT = 4096                 # notes a follower remembers as waiting with the writer (``NoteSender``)
INBOX_PAUSE = 0.002                # the writer's inbox thread reads at most this often
_FOLD = -1                         # a ``P`` request among ``NotesInbox``'s flush requests
INBOX_PERIOD = 0.02                # ... and with a wake-up pipe, at least this often (else on a flush request)


class NoteCounts:
    """Per worker, in shared memory: how many notes it has sent to the writer (written by
    that worker alone) and how many of them the writer has applied (written by the writer).
    A query directory's attributes in any worker flush first while some worker's notes are
    not applied, so they show a change acknowledged by another worker at once."""

    _CELL = struct.Struct("=Q")
    _FLUSHES = struct.Struct("=QQ")  # after the workers' cells: the writer's flushes begun, ended

    def __init__(self, fd: int, workers: int) -> None:
        self.fd, self.workers = fd, workers
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()
        self._mine = 0
        self._flushes_at = 16 * workers
        self._begun = self._ended = 0
        self._own = threading.local()  # the writer: the number of the flush this thread runs

    @classmethod
    def create(cls, workers: int) -> "NoteCounts":
        fd = os.memfd_create("pysfsd-notes", 0)  # not CLOEXEC: only forks use it
        os.ftruncate(fd, 16 * workers + cls._FLUSHES.size)
        return cls(fd, workers)

    def attach(self, slot: int) -> None:
        self._map = mmap.mmap(self.fd, 16 * self.workers + self._FLUSHES.size, mmap.MAP_SHARED)
        self._mine = self._CELL.unpack_from(self._map, 16 * slot)[0]  # an earlier incarnation's
        if slot == 0:  # a (re)started writer: what the one before had taken in may be lost
            begun, ended = self._FLUSHES.unpack_from(self._map, self._flushes_at)
            self._begun = self._ended = max(begun, ended) + 1  # (one that died mid-flush: ended)
            self._FLUSHES.pack_into(self._map, self._flushes_at, self._begun, self._ended)

    def add(self, slot: int, count: int) -> None:
        """``count`` more notes of ours are with the writer (sent, or in its own queue)."""
        assert self._map is not None
        with self._lock:
            self._mine += count
            self._CELL.pack_into(self._map, 16 * slot, self._mine)

    def snapshot(self) -> list[int]:
        assert self._map is not None
        return [self._CELL.unpack_from(self._map, 16 * i)[0] for i in range(self.workers)]

    def publish(self, noted: list[int]) -> None:
        """The writer: every note counted in ``noted`` (a snapshot taken before the flush
        took them in) is applied."""
        assert self._map is not None
        for i, value in enumerate(noted):
            if value > self._CELL.unpack_from(self._map, 16 * i + 8)[0]:
                self._CELL.pack_into(self._map, 16 * i + 8, value)

    def flush_begun(self) -> None:
        """The writer: a flush begins, which may apply any note sent until now (bumped
        before it takes anything in; ``NoteSender`` sends a note again once it moved)."""
        assert self._map is not None
        with self._lock:
            self._begun += 1
            self._own.number = self._begun
            self._FLUSHES.pack_into(self._map, self._flushes_at, self._begun, self._ended)

    def flush_ended(self) -> None:
        assert self._map is not None
        with self._lock:
            self._ended += 1
            self._own.number = 0
            self._FLUSHES.pack_into(self._map, self._flushes_at, self._begun, self._ended)

    def idle_mark(self) -> int | None:
        """A follower, before a change: the writer's flushes begun if none is running (the
        mark a removal's note carries, ``taken_nothing_since``), else None."""
        begun, ended = self.flushes()
        return begun if begun == ended else None

    def taken_nothing_since(self, mark: int) -> bool:
        """The writer, taking in a note made after ``idle_mark`` gave ``mark``: whether no
        flush has taken its queue since (none has begun; or the one this thread runs, the
        only one begun since, has not taken it yet: its ``drain`` comes first)."""
        begun, _ = self.flushes()
        return begun == mark or begun == mark + 1 == getattr(self._own, "number", 0)

    def flushes(self) -> tuple[int, int]:
        """(flushes begun, flushes ended) by the writer so far."""
        m = self._map
        if m is None:
            return 1, 0  # (never equal: nothing is left out)
        return self._FLUSHES.unpack_from(m, self._flushes_at)

    def pending(self) -> bool:
        m = self._map
        if m is None:
            return False
        cell = self._CELL
        return any(cell.unpack_from(m, 16 * i)[0] > cell.unpack_from(m, 16 * i + 8)[0]
                   for i in range(self.workers))


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(writer end, follower end) of one follower's channel."""
    w, f = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (w, f):
        s.set_inheritable(True)
        for option in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
            try:  # root may exceed net.core.wmem_max: more notes wait while the writer is busy
                s.setsockopt(socket.SOL_SOCKET, option, SEND_BUFFER)
                break
            except OSError:
                continue
    return w, f


class NoteSender:
    """A follower's end of its channel: notes from any thread; flushes one at a time."""

    def __init__(self, sock: socket.socket, counts: NoteCounts | None = None, slot: int = 0,
                 wake: int = -1) -> None:
        self.sock = sock
        self.counts, self.slot = counts, slot
        self.wake = wake  # the writer's wake-up pipe (``NotesInbox``): written after a flush request
        sock.settimeout(SEND_TIMEOUT)  # makes the descriptor non-blocking (``_send``)
        self._fd = sock.fileno()
        self._flush_lock = threading.Lock()
        self._request = int.from_bytes(os.urandom(7), "big")  # never met by an earlier incarnation's
        self._dropped_logged = 0.0
        # Notes made by the event loop while it serves a burst of calls wait here and leave
        # in one message before the burst's replies (``end_burst``), like the handle table's
        # group commit; any other thread sends at once.
        self._burst_thread = 0
        # (a dict as an ordered set: a burst's identical notes, e.g. a SETATTR or WRITE
        # load on one file, leave once; the writer would only have merged them)
        self._batch: dict[bytes, None] = {}
        self._batched = 0
        self.sent = 0  # notes sent so far (a batch: once sent); see ``FollowerIndex.has_notes``
        # A note sent while the writer was not flushing, and no flush begun since: not
        # applied yet, so the same note again would only be merged with it (the writer reads
        # the file when it applies them, after both changes).  note -> the writer's flushes
        # begun when it was sent: a SETATTR or WRITE load on one file sends its note once per
        # writer flush instead of once per burst (a write(2) here, a recv and the GIL
        # hand-overs of the writer's inbox thread there).
        self._sent_at: dict[bytes, int] = {}
        # when this burst began: ``NoteCounts.idle_mark`` and the time (or None)
        self._mark: tuple[int, int] | None = None

    def begin_burst(self) -> None:
        self._burst_thread = threading.get_ident()
        if self.counts is not None:
            mark = self.counts.idle_mark()
            self._mark = None if mark is None else (mark, time.monotonic_ns())

    def removal_mark(self) -> tuple[int, int] | None:
        """For a removal just made in this thread: the writer's mark and the time, taken
        before it (at the start of this thread's burst), or None (no burst, or the writer
        was flushing)."""
        return self._mark if self._burst_thread == threading.get_ident() else None

    def end_burst(self) -> None:
        self._burst_thread = 0
        self._send_batch()

    def _send_batch(self) -> None:
        if self._batch:
            batch, self._batch, self._batched = self._batch, {}, 0
            self._send_new(list(batch))

    def send(self, kind: bytes, export_id: int, number: int, name: bytes = b"") -> None:
        note = _MSG.pack(kind, export_id, number, len(name)) + name
        if self._burst_thread == threading.get_ident():
            if note in self._batch:
                return
            self._batch[note] = None
            self._batched += len(note)
            if self._batched >= MAX_BATCH:
                self._send_batch()
            return
        self._send_new([note])

    def _send_new(self, notes: list[bytes]) -> None:
        """Send those of ``notes`` the writer has not got waiting already (``_sent_at``)."""
        counts, sent_at = self.counts, self._sent_at
        if counts is None:
            begun, idle = -1, False
        else:
            # read before the send: a flush begun after this read bumps ``begun``
            begun, ended = counts.flushes()
            idle = begun == ended
            if idle:
                notes = [note for note in notes if sent_at.get(note) != begun]
                if not notes:
                    return
        if not self._send(b"".join(notes) if len(notes) > 1 else notes[0]):
            return
        self._sent(len(notes))
        if idle:
            if len(sent_at) + len(notes) > MAX_SENT_AT:
                sent_at.clear()
            for note in notes:
                sent_at[note] = begun

    def _sent(self, count: int) -> None:
        self.sent += count
        if self.counts is not None:
            self.counts.add(self.slot, count)

    def _send(self, data: bytes) -> bool:
        try:
            try:
                # write(2) first: a socket with a timeout polls before every send (two
                # system calls per burst); the descriptor is non-blocking, so a full
                # channel says so and the timed send below waits for room
                os.write(self._fd, data)
                return True
            except BlockingIOError:
                pass
            self.sock.send(data)
            return True
        except OSError as exc:
            now = time.monotonic()
            if now - self._dropped_logged > 10:
                self._dropped_logged = now
                log.warning("index note not sent to the writer (%s): the writer's next scan finds the change", exc)
            return False

    def flush(self, export_id: int, timeout: float = FLUSH_TIMEOUT, kind: bytes = b"F") -> tuple[int, int] | None:
        """Have the writer apply every note queued anywhere; (version, flags), or None if it
        did not answer in time.  ``kind`` ``P``: have it fold its handle-table journal
        instead (nfsd/state/journal_flag.py)."""
        if self._burst_thread == threading.get_ident():
            self._send_batch()  # this burst's own notes first
        with self._flush_lock:
            self._request += 1
            request = self._request
            deadline = time.monotonic() + timeout
            try:
                self.sock.send(_MSG.pack(kind, export_id, request, 0))
                if self.wake >= 0:
                    try:
                        os.write(self.wake, b"F")
                    except BlockingIOError:
                        pass  # full: the writer has a wake-up pending anyway
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.sock.settimeout(left)
                    data = self.sock.recv(64)
                    if len(data) == _REPLY.size:
                        number, version, flags = _REPLY.unpack(data)
                        if number == request:
                            return version, flags
            except OSError as exc:
                log.warning("index flush request to the writer failed: %s", exc)
                return None
            finally:
                self.sock.settimeout(SEND_TIMEOUT)


class FollowerIndex(Index):
    """An export's index in a follower: reads as ``Index`` does, writes nothing; notes go
    to the writer, ``version`` is read from LMDB (the writer's last commit)."""

    def __init__(self, env: lmdb.Environment, export_root: str, export_id: int, sender: NoteSender,
                 **kwargs: object) -> None:
        self._sender = sender
        self._export_id = export_id
        self.writer_flags = 0
        self._flushed_at = 0  # ``sender.sent`` when the last flush was asked for
        super().__init__(env, export_root, export_id, **kwargs)  # type: ignore[arg-type]

    def _committed_version(self) -> int:
        with self._tables.env.begin() as txn:
            return self._tables.version(txn)

    def _catch_up(self) -> None:
        """Some worker's notes are not applied yet: have the writer apply them before an
        answer is read (see ``NoteCounts``)."""
        counts = self._sender.counts
        if counts is not None and counts.pending():
            self.flush()

    @property
    def version(self) -> int:
        self._catch_up()
        return self._committed_version()

    @version.setter
    def version(self, value: int) -> None:
        pass  # only the writer publishes versions (in LMDB)

    @property
    def stat_version(self) -> int:
        self._catch_up()
        return super().stat_version

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        if entry_name(name):
            self._sender.send(b"E", self._export_id, dir_ino, name)

    def note_ino(self, ino: int, force: bool = False) -> None:
        self._sender.send(b"J" if force else b"I", self._export_id, ino)

    def note_created(self, dir_ino: int, name: bytes, st: os.stat_result) -> None:
        """With the creation's stat, so the writer adds the file from it (no ``lstat``, no
        ``getxattr``), as for its own creations (``Index.note_created``)."""
        if entry_name(name):
            self._sender.send(b"C", self._export_id, dir_ino, name + _CREATED.pack(*CreatedStat.of(st)))

    def note_dir(self, dir_ino: int) -> None:
        self._sender.send(b"D", self._export_id, dir_ino)

    def note_removed(self, dir_ino: int, name: bytes) -> None:
        """With the writer's mark and the time taken before the removal (``R``), so the
        writer takes the name for gone without an ``lstat`` if no flush of its took the
        queue since and no note of the name came since (``NotesInbox._apply_one``,
        ``Index.queue_removed``); else (no mark) a plain note."""
        if not entry_name(name):
            return
        mark = self._sender.removal_mark()
        if mark is None:
            self._sender.send(b"E", self._export_id, dir_ino, name)
        else:
            self._sender.send(b"R", self._export_id, dir_ino, name + _MARK.pack(*mark))

    def has_notes(self) -> bool:
        """Whether this worker noted changes since its last flush (those made through other
        workers are not known here: the writer's periodic flush, every 0.5 s, moves
        ``version`` for them)."""
        return self._sender.sent != self._flushed_at

    def flush(self) -> bool:
        self._flushed_at = self._sender.sent
        before = self._committed_version()
        answer = self._sender.flush(self._export_id)
        if answer is None:
            log.warning("the index writer did not answer a flush: answering from the index as it is")
            return False
        self.writer_flags = answer[1]
        return answer[0] != before

    def maintain(self) -> bool:
        return False

    def scan(self, progress: bool | None = None, stat_only: bool = False, total: int | None = None,
             part: ContentPass | None = None) -> ScanStats:
        return ScanStats(0, 0, 0, 0, 0, 0, 0.0)  # the writer scans (content fields: ready
        # in a follower pass by pass as the writer's flags say, nfsd/app.py _follow_index)


class Uncounted:
    """An index as the directory watcher sees it: changes behind the server's back are
    acknowledged to nobody, so they are not counted (``WriterIndex``).

    An echo it drops (``is_fresh``: a creation queued with its stat) is still ``forget``-ed
    by the entry caches of every worker (the watcher publishes what it forgets, and the
    followers' caches learn only from it).  The echo of a follower's creation that comes
    before the follower's note is noted with ``note_create_event``: the note keeps its
    stat when it comes (the watcher used to take the followers' notes in first, a
    ``recv`` every 2 ms under a follower's CREATE load, and still missed most)."""

    def __init__(self, index: Any, forget: Callable[[int, bytes], None] | None = None) -> None:
        # (an Index, or a wrapper with its methods: a cluster head's PublishingIndex)
        self._index = index
        self._forget = forget
        # Where the notes go: a writer's own methods count, so Index's (``super``: the class
        # after WriterIndex, bound to it); any other index's are its own: a cluster head's
        # ``PublishingIndex`` publishes what the watcher finds to the other heads (Index's
        # methods called on the wrapper noted into the wrapped index and published nothing)
        self._via: Any = super(WriterIndex, index) if isinstance(index, WriterIndex) else index

    def is_fresh(self, dir_ino: int, name: bytes) -> bool:
        fresh = self._index.is_fresh(dir_ino, name)
        if fresh and self._forget is not None:
            self._forget(dir_ino, name)
        return fresh

    def is_removed(self, dir_ino: int, name: bytes) -> bool:
        removed = self._index.is_removed(dir_ino, name)
        if removed and self._forget is not None:
            self._forget(dir_ino, name)
        return removed

    def note_create_event(self, dir_ino: int, name: bytes) -> None:
        self._via.note_create_event(dir_ino, name)

    def note_delete_event(self, dir_ino: int, name: bytes) -> None:
        self._via.note_delete_event(dir_ino, name)

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        self._via.note_entry(dir_ino, name)

    def note_dir(self, dir_ino: int) -> None:
        self._via.note_dir(dir_ino)

    def note_ino(self, ino: int, force: bool = False) -> None:
        self._via.note_ino(ino, force)

    def __getattr__(self, item: str) -> object:
        return getattr(self._index, item)


class WriterIndex(Index):
    """An export's index in the primary (the writer) of several workers: its own notes are
    counted too, and what a flush took in is published as applied (``NoteCounts``); while
    another worker's notes wait, reading ``version`` flushes first."""

    note_counts: NoteCounts | None = None
    siblings: "list[Index]" = []  # every index of the writer (a publish needs all queues empty)

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        super().note_entry(dir_ino, name)
        if self.note_counts is not None:
            self.note_counts.add(0, 1)

    def note_ino(self, ino: int, force: bool = False) -> None:
        if not force and ino in self._inos:
            # queued already (and counted): the flush that takes it reads the file after
            # this change, and some count stays unapplied until that flush is done (no lock,
            # as ``Index.note_entry``'s test: a SETATTR or WRITE load on one file)
            return
        super().note_ino(ino, force)
        if self.note_counts is not None:
            self.note_counts.add(0, 1)

    def note_dir(self, dir_ino: int) -> None:
        super().note_dir(dir_ino)
        if self.note_counts is not None:
            self.note_counts.add(0, 1)

    def note_created(self, dir_ino: int, name: bytes, st: os.stat_result) -> None:
        self.queue_created(dir_ino, name, st)
        if self.note_counts is not None:
            self.note_counts.add(0, 1)

    def note_removed(self, dir_ino: int, name: bytes) -> None:
        if entry_name(name):
            self._queue_entry((dir_ino, name), None, removed=True)
        if self.note_counts is not None:
            self.note_counts.add(0, 1)

    def has_notes(self) -> bool:
        return super().has_notes() or (self.note_counts is not None and self.note_counts.pending())

    def flush(self) -> bool:
        counts = self.note_counts
        if counts is None:
            return super().flush()
        local = self.__dict__.setdefault("_flushing", threading.local())
        local.on = True
        counts.flush_begun()  # before anything is taken in (see ``NoteSender._sent_at``)
        try:
            noted = counts.snapshot()  # before the drain in Index.flush: all of it is taken in
            changed = super().flush()
            if not any(Index.has_notes(ix) for ix in (self.siblings or [self])):
                counts.publish(noted)
            return changed
        finally:
            counts.flush_ended()
            local.on = False

    def _catch_up(self) -> None:
        local = self.__dict__.get("_flushing")
        if self.note_counts is not None and not (local is not None and getattr(local, "on", False)) \
                and self.note_counts.pending():
            self.flush()

    @property
    def version(self) -> int:
        self._catch_up()
        return self.__dict__.get("_version", 0)

    @version.setter
    def version(self, value: int) -> None:
        self.__dict__["_version"] = value

    @property
    def stat_version(self) -> int:
        self._catch_up()
        return super().stat_version


def _hung_up(end: socket.socket) -> bool:
    """Whether the other end of channel ``end`` is closed (nothing left to read from it)."""
    try:
        return end.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class NotesInbox:
    """The writer's side: a thread reading every follower's channel, applying notes to the
    indexes and answering flush requests; ``drain`` (every ``Index.flush`` of the writer
    calls it first) takes in whatever is waiting."""

    def __init__(self, indexes: dict[int, Index], ends: list[socket.socket],
                 flags: Callable[[int], int], wake: int = -1, fold: Callable[[], None] | None = None) -> None:
        self.indexes, self.ends, self.flags = indexes, ends, flags
        self.fold = fold  # a ``P`` request: the store's lone-burst journal into LMDB
        self._targets: dict[int, Uncounted | Index] = {}  # what a note of each export goes to
        # With ``wake`` (a pipe every follower writes to after a flush request), the thread
        # does not wake for every burst's notes: it takes them in every INBOX_PERIOD, or at
        # once for a flush request.  (Woken per note message, with a 2 ms pause, the writer
        # made about 2,000 futex calls a second under a follower's SETATTR load: GIL
        # hand-overs between the inbox thread and the event loop.)  A period that takes in
        # nothing ends the polling: the thread then sleeps on the channels too (``quiet``) and
        # is woken by the first note that comes, so an idle writer is not woken 50 times a
        # second (85 us of CPU each, cold: two thirds of an idle server's CPU).
        self.wake = wake
        self.quiet = False    # the thread sleeps until a note or a request comes
        self.taken = 0        # note messages ``drain`` has read (any thread)
        self.wakeups = 0      # times the thread woke (tests: none while quiet and nothing comes)
        self._gone: set[socket.socket] = set()  # channels whose follower end is closed
        self._lock = threading.Lock()
        self._requests: list[tuple[socket.socket, int, int]] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="pysfsd-index-inbox", daemon=True)
        self._stopping = False
        for index in indexes.values():
            index.before_flush = self.drain

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=FLUSH_TIMEOUT)
        self.drain()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def drain(self) -> None:
        """Apply every note waiting in any channel; flush requests are kept for the thread
        (woken if another thread took them in: it would not see them otherwise)."""
        with self._lock:
            waiting = len(self._requests)
            for end in self.ends:
                while True:
                    try:
                        data = end.recv(65536, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    if len(data) < _MSG.size:
                        break  # the pair's other end is closed for good (or garbage)
                    self.taken += 1
                    self._apply(end, data)
            if len(self._requests) > waiting and threading.current_thread() is not self._thread:
                os.write(self._wake_w, b"r")

    def _quieten(self, sel: selectors.BaseSelector, quiet: bool) -> None:
        """Sleep on the channels too (``quiet``: a period took in nothing), or poll them by
        period again (a note came: more may follow, each a wake-up otherwise).  A channel
        that became readable meanwhile is reported by the next ``select`` at once."""
        for end in self.ends:
            if end in self._gone:
                continue
            with contextlib.suppress(KeyError, ValueError, OSError):  # a closed channel
                if quiet:
                    sel.register(end, selectors.EVENT_READ)
                else:
                    sel.unregister(end)
        self.quiet = quiet

    def _apply(self, end: socket.socket, data: bytes) -> None:
        at = 0
        while at + _MSG.size <= len(data):
            kind, export_id, number, length = _MSG.unpack_from(data, at)
            at += _MSG.size
            name = data[at:at + length]
            at += length
            self._apply_one(end, kind, export_id, number, name)

    def _apply_one(self, end: socket.socket, kind: bytes, export_id: int, number: int, name: bytes) -> None:
        if kind == b"P":
            self._requests.append((end, _FOLD, number))
            return
        index = self.indexes.get(export_id)
        if index is None:
            return
        # (Index's own methods: a follower's notes are counted by the follower, not again;
        # one wrapper per export, not one per note)
        target = self._targets.get(export_id)
        if target is None:
            target = self._targets[export_id] = Uncounted(index) if isinstance(index, Index) else index
        if kind == b"E":
            target.note_entry(number, name)
        elif kind == b"I":
            target.note_ino(number)
        elif kind == b"J":
            target.note_ino(number, force=True)
        elif kind == b"D":
            target.note_dir(number)
        elif kind == b"C":  # a follower created it: queued with its stat unless noted since
            name, fields = name[:-_CREATED.size], name[-_CREATED.size:]
            if isinstance(index, Index):
                index.queue_created(number, name, tuple.__new__(CreatedStat, _CREATED.unpack(fields)), late=True)
            else:
                target.note_entry(number, name)
        elif kind == b"R":  # a follower removed it (``FollowerIndex.note_removed``)
            name, (mark, at) = name[:-_MARK.size], _MARK.unpack(name[-_MARK.size:])
            counts = getattr(index, "note_counts", None)
            if isinstance(index, Index) and counts is not None and counts.taken_nothing_since(mark):
                index.queue_removed(number, name, at)
            else:
                target.note_entry(number, name)
        elif kind == b"F":
            self._requests.append((end, export_id, number))

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        if self.wake >= 0:
            sel.register(self.wake, selectors.EVENT_READ)
        else:
            for end in self.ends:
                sel.register(end, selectors.EVENT_READ)
        try:
            while True:
                taken = self.taken
                ready = sel.select(INBOX_PERIOD if self.wake >= 0 and not self.quiet else None)
                self.wakeups += 1
                for key, _ in ready:
                    if key.fileobj == self._wake_r or key.fileobj == self.wake:
                        try:
                            os.read(key.fd, 4096)
                        except BlockingIOError:
                            pass  # another incarnation's thread, or a race: nothing to read
                    elif self.quiet and _hung_up(key.fileobj):  # type: ignore[arg-type]
                        sel.unregister(key.fileobj)  # (its end of file would wake us forever)
                        self._gone.add(key.fileobj)  # type: ignore[arg-type]
                if self._stopping:
                    return
                if self.wake < 0:
                    time.sleep(INBOX_PAUSE)  # let notes gather: one wake-up (a GIL hand-over) per batch
                self.drain()
                with self._lock:
                    requests, self._requests = self._requests, []
                for export_id in {r[1] for r in requests}:
                    try:
                        if export_id != _FOLD:
                            self.indexes[export_id].flush()
                        elif self.fold is not None:
                            self.fold()
                    except Exception:
                        log.exception("index flush (or journal fold) for a follower failed")
                for end, export_id, number in requests:
                    reply = (_REPLY.pack(number, 0, 0) if export_id == _FOLD else
                             _REPLY.pack(number, self.indexes[export_id].version, self.flags(export_id)))
                    try:
                        end.send(reply, socket.MSG_DONTWAIT)
                    except OSError:
                        pass  # that follower is gone, or not reading: it times out
                if self.wake >= 0 and self.quiet != (self.taken == taken):
                    self._quieten(sel, not self.quiet)
        finally:
            sel.close()
