"""Directory fsyncs without a Python thread: Linux AIO's ``IOCB_CMD_FSYNC``.

A directory fsync job in the thread pool passes the GIL back and forth with the busy event
loop: the job's start (a queue's semaphore, then the GIL taken from the loop), the GIL taken
back after the fsync, the completion's ``call_soon_threadsafe`` through the self-pipe: 14
futex calls per job measured, and keeping descriptors open (one GIL release a directory
instead of three) saved no CPU per call (docs/design.rst, branch ``fsync2``).  Submitted
here instead, the fsync runs in the kernel's own worker (Linux >= 4.18 does any file
system's fsync that way), and its end arrives as an eventfd the loop watches like a socket:
one ``io_submit`` on the loop, one ``read`` and ``io_getevents`` when it is done.

``io_setup``, ``io_submit`` and ``io_getevents`` through ``ctypes`` (the x86-64 and arm64
numbers below): no maintained binding on PyPI does only this.  Called keeping the GIL
(``ctypes.PyDLL``): neither waits (an fsync's ``io_submit`` only queues it to the kernel's
worker, ``io_getevents`` asks for at least none), and a ``CDLL`` call gives the GIL up
around it, so in the primary, whose index thread is busy under a namespace load, the loop
waited up to a switch interval to take it back, twice per fsync job.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import platform
from typing import Callable

_libc = ctypes.PyDLL(None, use_errno=True)  # the GIL kept: the calls made here never block
_NUMBERS = {"x86_64": (206, 209, 208), "aarch64": (0, 2, 4)}  # io_setup, io_submit, io_getevents
_IOCB_CMD_FSYNC = 2
_IOCB_FLAG_RESFD = 1
#: fsyncs in flight at once (one per directory of a job); more: the pool
SLOTS = 256

Done = Callable[[BaseException | None], None]


class _Iocb(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("key", ctypes.c_uint32), ("rw_flags", ctypes.c_int32),
                ("lio_opcode", ctypes.c_uint16), ("reqprio", ctypes.c_int16), ("fildes", ctypes.c_uint32),
                ("buf", ctypes.c_uint64), ("nbytes", ctypes.c_uint64), ("offset", ctypes.c_int64),
                ("reserved2", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("resfd", ctypes.c_uint32)]


class _Event(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


class _Job:
    __slots__ = ("fds", "left", "done", "failure", "iocbs")

    def __init__(self, fds: list[int], done: Done, iocbs: object) -> None:
        self.fds, self.left, self.done, self.iocbs = fds, len(fds), done, iocbs
        self.failure: BaseException | None = None


class AioFsync:
    """fsyncs submitted from the event loop ``loop``, finished on it (``submit``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        numbers = _NUMBERS.get(platform.machine())
        if numbers is None:
            raise OSError(0, "no AIO system call numbers for this machine")
        self._setup, self._submit, self._getevents = numbers
        self._ctx = ctypes.c_ulong(0)
        if _libc.syscall(self._setup, SLOTS, ctypes.byref(self._ctx)) != 0:
            raise OSError(ctypes.get_errno(), "io_setup")
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._jobs: dict[int, _Job] = {}
        self._in_flight = 0
        self._next = 1
        self._events = (_Event * SLOTS)()
        loop.add_reader(self._efd, self._complete)

    def submit(self, fds: list[int], done: Done) -> None:
        """fsync every descriptor in ``fds`` (they are closed after); then ``done(failure)``
        on the loop.  OSError if they could not all be submitted (then none is waited for,
        and the caller closes ``fds`` and fsyncs another way)."""
        if self._in_flight + len(fds) > SLOTS:
            raise OSError(11, "AIO slots in use")
        tag = self._next
        self._next += 1
        iocbs = [_Iocb(data=tag, lio_opcode=_IOCB_CMD_FSYNC, fildes=fd, flags=_IOCB_FLAG_RESFD,
                       resfd=self._efd) for fd in fds]
        pointers = (ctypes.POINTER(_Iocb) * len(iocbs))(*[ctypes.pointer(c) for c in iocbs])
        submitted = _libc.syscall(self._submit, self._ctx, len(iocbs), pointers)
        if submitted != len(iocbs):
            # the kernel holds the files of those it took: closing the descriptors is safe
            raise OSError(ctypes.get_errno() if submitted < 0 else 11, "io_submit")
        self._jobs[tag] = _Job(fds, done, (iocbs, pointers))  # alive until their completion
        self._in_flight += len(fds)

    def _complete(self) -> None:
        try:
            os.read(self._efd, 8)
        except BlockingIOError:
            return
        count = _libc.syscall(self._getevents, self._ctx, 0, SLOTS, self._events, None)
        for i in range(max(count, 0)):
            event = self._events[i]
            job = self._jobs.get(event.data)
            if job is None:
                continue
            self._in_flight -= 1
            if event.res < 0 and job.failure is None:
                job.failure = OSError(-event.res, os.strerror(-event.res))
            job.left -= 1
            if not job.left:
                del self._jobs[event.data]
                for fd in job.fds:
                    os.close(fd)
                job.done(job.failure)
