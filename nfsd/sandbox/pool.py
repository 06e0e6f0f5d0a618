"""The server's side of the sandbox: a pool of persistent, confined worker processes.

A call takes an idle worker (starting one if fewer than ``size`` run), sends the request and
waits for the reply at most the transducer timeout plus ``GRACE``.  A worker that overruns,
dies or breaks the protocol is killed and replaced by a fresh one at the next call, so no
transducer can hold the index longer than its timeout, nor leave anything behind.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict
from typing import Any

from .confine import Identity, Limits, landlock_abi
from .wire import FAILED, Reply, WireError, encode_request, read_reply

log = logging.getLogger("pysfsd.sandbox")

GRACE = 0.5  # beyond the timeout, for a worker to report that its transducer timed out


class TransducerFailed(Exception):
    """The transducer failed on this file (the message says how)."""


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc, self.sock = proc, sock

    def kill(self) -> str:
        """Kill it (if it still runs) and everything it started, and say how it ended."""
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        kill_session(self.proc.pid)  # its commands, caught mid-run (it leads their session)
        try:
            status = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return "worker would not die"
        if status < 0 and -status != signal.SIGKILL:
            return f"worker killed by {signal.Signals(-status).name}"
        return f"worker exited with status {status}" if status >= 0 else "worker killed"


def session_members(sid: int) -> list[int]:
    """The processes of session ``sid`` (from /proc: no other interface lists them)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``; again while new ones appear (a process
    may fork between the listing and the kill)."""
    for _ in range(5):
        members = [pid for pid in session_members(sid) if pid != os.getpid()]
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class WorkerPool:
    def __init__(self, limits: Limits, commands: list[list[str]], identity: Identity | None, size: int) -> None:
        self.limits, self.commands, self.identity = limits, commands, identity
        self.size = max(1, size)
        self.workdir = tempfile.mkdtemp(prefix="pysfsd-sandbox-")
        os.chmod(self.workdir, 0o555)  # empty, and nobody may create anything in it
        self._idle: list[Worker] = []
        self._running = 0
        self._cond = threading.Condition()
        self._closed = False
        self.started = 0  # workers started so far (a persistent pool starts few)
        if landlock_abi() == 0:
            log.warning("this kernel has no Landlock: user transducers are kept from writing files only "
                        "by RLIMIT_FSIZE%s", " and the sandbox user" if identity else "")

    def _settings(self) -> str:
        return json.dumps({"limits": asdict(self.limits), "identity": asdict(self.identity) if self.identity else None,
                           "workdir": self.workdir, "commands": self.commands})

    def _spawn(self) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, PYSFSD_SANDBOX=self._settings(), PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        env["PYSFSD_SANDBOX_FD"] = str(theirs.fileno())
        try:
            proc = subprocess.Popen([sys.executable, "-m", "nfsd.sandbox.worker"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                    pass_fds=(theirs.fileno(),), close_fds=True, start_new_session=True)
        finally:
            theirs.close()
        self.started += 1
        return Worker(proc, ours)

    def _acquire(self) -> Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise TransducerFailed("the index is closing")
                if self._idle:
                    return self._idle.pop()
                if self._running < self.size:
                    self._running += 1
                    break
                self._cond.wait()
        try:
            return self._spawn()
        except BaseException:
            self._discard(None)
            raise

    def _release(self, worker: Worker) -> None:
        with self._cond:
            if self._closed:
                worker.kill()
                self._running -= 1
            else:
                self._idle.append(worker)
            self._cond.notify()

    def _discard(self, worker: Worker | None) -> str:
        how = worker.kill() if worker is not None else ""
        with self._cond:
            self._running -= 1
            self._cond.notify()
        return how

    def call(self, kind: int, key: bytes, payload: bytes | memoryview) -> bytes:
        """The transducer's output; TransducerFailed when it failed in any way."""
        worker = self._acquire()
        try:
            worker.sock.settimeout(self.limits.timeout + GRACE)
            parts = encode_request(kind, key, payload)
            if len(payload) < 65536:
                worker.sock.sendall(b"".join(parts))
            else:  # no extra copy of a large file
                for part in parts:
                    worker.sock.sendall(part)
            reply: Reply = read_reply(worker.sock)
        except socket.timeout:
            self._discard(worker)
            raise TransducerFailed(f"timed out after {self.limits.timeout:g} s") from None
        except (WireError, OSError) as exc:
            how = self._discard(worker)
            raise TransducerFailed(f"{how} ({exc})" if how else str(exc)) from None
        self._release(worker)
        if reply.status == FAILED:
            raise TransducerFailed(reply.payload.decode("utf-8", "replace"))
        return reply.payload

    def describe(self, kind: int) -> Any:
        return json.loads(self.call(kind, b"", b""))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._running -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

