"""A transducer worker: a long-lived, confined process that runs user transducers.

Started by ``pool.WorkerPool`` as ``python -m nfsd.sandbox.worker`` with its settings in the
environment (``PYSFSD_SANDBOX``, JSON) and the descriptor of its socket in ``PYSFSD_SANDBOX_FD``.  It confines itself
(``confine``), imports the entry-point transducers, drops to the sandbox user, then serves
requests one at a time:

* a command transducer runs as a child (its own process group, so a timeout kills all it
  started; still in the worker's session, so the server finds it if it must kill the worker),
  the file's content written to its standard input, at most ``MAX_OUTPUT`` bytes of its
  standard output kept; the worker enforces the wall-clock timeout and the CPU limit;
* an entry-point transducer is called in this process: no fork per file.  Its pairs travel
  length-prefixed; a timeout interrupts it, and the server kills the whole worker if that
  does not suffice (or if it crashes it).

Nothing here validates output: the server does, before anything reaches the index.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Iterable

from .confine import Identity, Limits, become, confine
from .wire import (DESCRIBE, FAILED, MAX_OUTPUT, OK, RUN_COMMAND, RUN_ENTRY_POINT, WireError,
                   encode_reply, read_request)

ENTRY_POINT_GROUP = "pysfsd.transducers"
STDERR_KEPT = 2048
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
PAIR = struct.Struct(">II")
MAX_PAIRS_SENT = 1001  # one more than the contract allows: the server then rejects the file


class Failure(Exception):
    """A transducer failed on this file: the reason goes back to the server."""


def pack_pairs(pairs: Iterable[tuple[Any, Any]]) -> bytes:
    """Length-prefixed (field, value) pairs, bounded like a command's output."""
    out = bytearray()
    for n, pair in enumerate(pairs):
        if n >= MAX_PAIRS_SENT:
            break
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise Failure(f"yielded {type(pair).__name__}, not a (field, value) pair")
        field, value = (_as_bytes(x) for x in pair)
        out += PAIR.pack(len(field), len(value)) + field + value
        if len(out) > MAX_OUTPUT:
            raise Failure(f"output over {MAX_OUTPUT} bytes")
    return bytes(out)


def _as_bytes(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8", "surrogateescape")  # a lone surrogate stays invalid UTF-8
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x).encode()
    raise Failure(f"a field or value of type {type(x).__name__}")


class CommandRunner:
    def __init__(self, commands: list[list[str]], limits: Limits, workdir: str) -> None:
        self.commands, self.limits, self.workdir = commands, limits, workdir
        self.env = {"PATH": CLEAN_PATH, "HOME": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                    "PYTHONDONTWRITEBYTECODE": "1"}

    def run(self, index: int, content: bytes) -> bytes:
        if not 0 <= index < len(self.commands):
            raise Failure(f"no command {index}")
        try:
            proc = subprocess.Popen(self.commands[index], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self.env, cwd=self.workdir, close_fds=True,
                                    process_group=0)
        except OSError as exc:
            raise Failure(f"cannot run: {exc.strerror or exc}") from None
        cpu = self.limits.cpu_seconds
        try:
            resource.prlimit(proc.pid, resource.RLIMIT_CPU, (cpu, cpu + 1))
        except OSError:
            pass  # it already ended
        try:
            out, err, status = self._communicate(proc, content)
        finally:
            _kill_group(proc)
        if status == 0:
            return out
        if status < 0:
            name = signal.Signals(-status).name if -status in signal.Signals._value2member_map_ else str(-status)
            raise Failure(f"killed by {name}" + (" (CPU limit)" if name == "SIGXCPU" else ""))
        detail = err.decode("utf-8", "replace").strip().splitlines()
        raise Failure(f"exited with status {status}" + (f": {detail[-1][:200]}" if detail else ""))

    def _communicate(self, proc: subprocess.Popen[bytes], content: bytes) -> tuple[bytes, bytes, int]:
        """Feed stdin, drain stdout and stderr, within the deadline and the output bound."""
        deadline = time.monotonic() + self.limits.timeout
        assert proc.stdin and proc.stdout and proc.stderr
        sel = selectors.DefaultSelector()
        view, sent = memoryview(content), 0
        if content:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        out, err = bytearray(), bytearray()
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"timed out after {self.limits.timeout:g} s")
                for key, _ in sel.select(left):
                    if key.fileobj is proc.stdin:
                        try:
                            sent += os.write(proc.stdin.fileno(), view[sent:sent + (1 << 16)])
                        except (BrokenPipeError, BlockingIOError) as exc:
                            if isinstance(exc, BlockingIOError):
                                continue
                            sent = len(view)  # it stopped reading: fine, it has what it wanted
                        if sent >= len(view):
                            sel.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    if key.fileobj is proc.stdout:
                        out += chunk
                        if len(out) > MAX_OUTPUT:
                            raise Failure(f"printed more than {MAX_OUTPUT} bytes")
                    elif len(err) < STDERR_KEPT:
                        err += chunk[:STDERR_KEPT - len(err)]
            try:
                status = proc.wait(max(deadline - time.monotonic(), 0.001))
            except subprocess.TimeoutExpired:
                raise Failure(f"timed out after {self.limits.timeout:g} s") from None
        finally:
            sel.close()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        return bytes(out), bytes(err), status


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The command and everything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class EntryPoints:
    """Entry-point transducers, imported once, called in this process."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.loaded: dict[str, Callable[[bytes], Iterable[tuple[Any, Any]]]] = {}
        self.described: list[dict[str, Any]] = []

    def load(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            info: dict[str, Any] = {"name": ep.name, "globs": ["*"], "version": 1, "error": None}
            try:
                obj = ep.load()
                fn = getattr(obj, "extract", obj)
                if not callable(fn):
                    raise TypeError(f"{ep.value} is not callable")
                globs = getattr(obj, "globs", ["*"])
                info["globs"] = [globs] if isinstance(globs, str) else [str(g) for g in globs]
                info["version"] = int(getattr(obj, "version", 1))
                self.loaded[ep.name] = fn
            except BaseException as exc:  # its import ran user code: anything may come out
                info["error"] = f"{type(exc).__name__}: {exc}"[:500]
            self.described.append(info)

    def run(self, name: str, content: bytes) -> bytes:
        fn = self.loaded.get(name)
        if fn is None:
            raise Failure(f"no entry point {name!r}")
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = int(used.ru_utime + used.ru_stime) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (spent + self.limits.cpu_seconds, resource.RLIM_INFINITY))
        signal.setitimer(signal.ITIMER_REAL, self.limits.timeout)
        try:
            return pack_pairs(fn(content))
        except Failure:
            raise
        except _Timeout:
            raise Failure(f"timed out after {self.limits.timeout:g} s") from None
        except MemoryError:
            raise Failure("out of memory") from None
        except BaseException as exc:
            raise Failure(f"{type(exc).__name__}: {exc}"[:500]) from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


class _Timeout(BaseException):
    """Raised into a transducer that overran its time (BaseException: harder to swallow)."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def serve(sock: socket.socket, commands: CommandRunner, entry_points: EntryPoints) -> None:
    while True:
        try:
            request = read_request(sock)
        except WireError:
            return
        if request is None:
            return
        try:
            if request.kind == DESCRIBE:
                reply = encode_reply(OK, json.dumps(entry_points.described).encode())
            elif request.kind == RUN_COMMAND:
                reply = encode_reply(OK, commands.run(int(request.key), request.payload))
            elif request.kind == RUN_ENTRY_POINT:
                reply = encode_reply(OK, entry_points.run(request.key.decode(), request.payload))
            else:
                reply = encode_reply(FAILED, b"unknown request")
        except Failure as exc:
            reply = encode_reply(FAILED, str(exc).encode("utf-8", "replace")[:1000])
        except Exception:
            reply = encode_reply(FAILED, traceback.format_exc(limit=3).encode("utf-8", "replace")[-1000:])
        sock.sendall(reply)


def main() -> int:
    settings = json.loads(os.environ.pop("PYSFSD_SANDBOX"))
    limits = Limits(**settings["limits"])
    identity = Identity(**settings["identity"]) if settings["identity"] else None
    sock = socket.socket(fileno=int(os.environ.pop("PYSFSD_SANDBOX_FD")))
    missing = confine(limits, identity, settings["workdir"])
    signal.signal(signal.SIGALRM, _alarm)
    entry_points = EntryPoints(limits)
    entry_points.load()  # before the user switch: the interpreter's own files may be private
    if identity is not None:
        become(identity)
    if missing:
        print("pysfsd transducer worker: not confined by " + ", ".join(missing), file=sys.stderr, flush=True)
    serve(sock, CommandRunner(settings["commands"], limits, settings["workdir"]), entry_points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
