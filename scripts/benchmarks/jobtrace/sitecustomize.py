"""Times of a pysfsd server's background jobs and of each call it serves, for
``bench_lone_think.py --jobs``: which of the server's own jobs a slow call overlapped.

Python imports this file at start-up when its directory is on PYTHONPATH.  In a server
process (``python -m nfsd``) with PYSFSD_JOBTRACE=DIR set, it wraps the jobs that run beside
the calls -- the periodic index flush (``maintain``), the handle table's sync, the idle-fd
detacher, the watcher's reads, the writer's inbox, garbage collections -- and the transport's
``_serve`` (the calls of one read), and appends one line per run to DIR/jobs-PID.log:
``pid thread kind start end [run delay us | CPU us]`` (wall-clock seconds; a serve's run
delay: how long its thread waited on a run queue since the previous serve ended -- woken by
the call, and serving it -- from its schedstat; a job's CPU: its thread's, ``thread_time``,
so a flush that waited for the GIL or a disk counts only what it computed).  Measurement only:
the wrappers cost a few microseconds a call, and they name methods of the tree they run in.
"""
from __future__ import annotations

import functools
import gc
import os
import sys
import threading
import time
from typing import IO, Any, Callable

DIRECTORY = os.environ.get("PYSFSD_JOBTRACE", "")
# (the threshold keeps the log to what can matter to a call: a look that finds nothing to do
# takes microseconds)
MIN_JOB_SECONDS = 0.0002


def _server() -> bool:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"-m" in argv and argv[argv.index(b"-m") + 1:argv.index(b"-m") + 2] == [b"nfsd"]


class _Log:
    """One file per process (workers are forked: the pid is checked at each write)."""

    def __init__(self) -> None:
        self.pid = 0
        self.file: IO[str] | None = None
        self.pending: list[str] = []

    def write(self, line: str, flush: bool) -> None:
        if self.pid != os.getpid():
            self.pid, self.pending = os.getpid(), []
            self.file = open(os.path.join(DIRECTORY, f"jobs-{self.pid}.log"), "a")
        self.pending.append(line)
        if flush or len(self.pending) >= 200:
            assert self.file is not None
            self.file.write("".join(self.pending))
            self.file.flush()
            self.pending.clear()


_log = _Log()


def emit(kind: str, start: float, end: float, extra: str = "", flush: bool = True) -> None:
    _log.write(f"{os.getpid()} {threading.current_thread().name} {kind} {start:.6f} {end:.6f} {extra}\n",
               flush)


def _timed(cls: type, name: str, kind: str) -> None:
    original: Callable[..., Any] = cls.__dict__[name]

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.time(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            end = time.time()
            if end - start >= MIN_JOB_SECONDS:
                emit(kind, start, end, "%.1f" % ((time.thread_time() - cpu) * 1e6))
    setattr(cls, name, timed)


def _collections() -> None:
    began: dict[int, float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[threading.get_ident()] = time.time()
        elif (start := began.pop(threading.get_ident(), None)) is not None:
            emit(f"gc{info['generation']}", start, time.time())
    gc.callbacks.append(callback)


def _serves(server: Any) -> None:
    """Each ``_serve`` (not flushed per call: the log is written every 200 lines)."""
    schedstat: dict[int, int] = {}
    last = [0]  # the run delay when the previous serve ended

    def run_delay() -> int:
        fd = schedstat.get(threading.get_native_id())
        if fd is None:
            fd = schedstat[threading.get_native_id()] = os.open(
                "/proc/thread-self/schedstat", os.O_RDONLY)
        return int(os.pread(fd, 64, 0).split()[1])
    original = server.RpcStreamProtocol._serve

    def serve(self: Any, records: list[Any]) -> None:
        start = time.time()
        try:
            original(self, records)
        finally:
            if records:
                end, delay = time.time(), run_delay()
                waited, last[0] = (delay - last[0]) // 1000 if last[0] else 0, delay
                emit("serve", start, end, str(waited), flush=False)
    server.RpcStreamProtocol._serve = serve


def install() -> None:
    sys.path.insert(0, os.getcwd())  # the tree the server runs from (``python -m nfsd``)
    from nfsd.fs import localfs, watch
    from nfsd.index import index, writer_channel
    from nfsd.rpc import server
    from nfsd.state import store
    _timed(index.Index, "maintain", "flush")
    _timed(writer_channel.FollowerIndex, "maintain", "flush")
    _timed(store.Store, "sync", "store-sync")
    _timed(localfs.LocalFS, "detach_idle", "idle-fds")
    _timed(watch.TreeWatcher, "_read_pending", "watcher")
    _timed(writer_channel.NotesInbox, "drain", "inbox")
    _collections()
    _serves(server)


if DIRECTORY and _server():
    try:
        install()
    except Exception as exc:  # a tree without one of these: say so, serve anyway
        sys.stderr.write(f"jobtrace: not tracing: {exc!r}\n")
