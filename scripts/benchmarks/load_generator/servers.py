"""Starting the servers under test on 127.0.0.1: pysfsd (``python -m nfsd``) and NFS-Ganesha
(through scripts/vm/ganesha.py, which writes its config; the benchmarks run it in a private
network namespace with an rpcbind of its own, so the host's rpcbind is left alone)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, TracebackType
from typing import ContextManager, Iterator

REPO = HERE = Path(__file__).resolve().parents[3]
_LISTENING = re.compile(rb"pysfsd: listening on 127\.0\.0\.1:(\d+) export")
_READY = b"pysfsd: index ready"


@contextlib.contextmanager
def from_tree(tree: Path | None) -> Iterator[None]:
    """pysfsd started from ``tree`` (None: this checkout): ``Pysfsd`` runs ``python -m nfsd``
    in ``REPO``, so pointing it at another checkout (``git worktree add``) runs that code, with
    that checkout's own ``.venv/bin/python`` if it has one (``server_python``)."""
    global REPO
    # (None sets this checkout too: a server started while another tree's block is still
    # open, as ``bench_lone_think.py --blocks`` keeps every server's, ran that tree's code)
    saved, REPO = REPO, tree or HERE
    try:
        yield
    finally:
        REPO = saved


def server_python() -> str:
    """The interpreter ``Pysfsd`` runs: another tree's own ``.venv`` when it has one, else this
    one.  A server's CPU per call is largely its interpreter's (docs/running.rst, "Which
    Python"): an A/B of two trees must say which interpreter each ran, and may compare
    interpreters on purpose (a base tree whose venv another Python made)."""
    python = sys.executable
    if REPO != HERE:
        venv_python = REPO / ".venv" / "bin" / "python"
        if venv_python.exists():
            python = str(venv_python)
    if (REPO, python) not in _SAID:
        _SAID.add((REPO, python))
        print(f"pysfsd from {REPO} runs {python} ({os.path.realpath(python)})", file=sys.stderr)
    return python


_SAID: set[tuple[Path, str]] = set()


def free_port() -> int:
    """A TCP port nothing listens on now (Ganesha needs fixed ports in its config)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pysfsd:
    """pysfsd on an ephemeral port: its first stdout line says which.  Output goes to a log
    file (never a pipe nobody drains), which is polled for that line."""

    def __init__(self, export: Path, work_dir: Path, start_timeout: float = 600.0,
                 args: tuple[str, ...] = (), workers: int | None = None,
                 options: str = "rw,no_root_squash,insecure") -> None:
        self.export, self.work_dir, self.start_timeout = export, work_dir, start_timeout
        self.options = options  # the export's exports(5) options (scripts/vm/compare_bench.py: async)
        self.args = args  # more options (scripts/cluster/shared_bench.py: --shared-state URL)
        # --workers N; None: the server's own default (one per usable core, or PYSFSD_WORKERS).
        # Its CPU: driver.server_cpu_seconds counts the children.
        self.workers = workers
        self.log_path = work_dir / "pysfsd.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Pysfsd:
        shutil.rmtree(self.work_dir, ignore_errors=True)
        state = self.work_dir / "state"
        state.mkdir(parents=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [server_python(), "-m", "nfsd", "--port", "0",
                 # like the Ganesha configuration compared against (Squash = No_Root_Squash)
                 "--export", f'"{self.export}" *({self.options})',
                 "--bind", "127.0.0.1", "--state-dir", str(state),
                 # the host's rpcbind is left alone: a benchmark's server must not take over
                 # the mappings of a real one (nor of a test's: test_discovery skips then)
                 "--no-register",
                 *(("--workers", str(self.workers)) if self.workers is not None else ()), *self.args],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + self.start_timeout
        while True:
            log_text = self.log_path.read_bytes()
            found = _LISTENING.search(log_text)
            # Measure the steady state: wait until the start-up index scan is done too.
            if found and _READY in log_text:
                self.port = int(found[1])
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state_text = (f"exited with status {self.proc.returncode}" if self.proc.poll() is not None
                              else f"did not report a port within {self.start_timeout:g} s")
                self.stop()
                raise RuntimeError(f"pysfsd {state_text}; log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, count: int = 20) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-count:]) or "(empty log)"


def ganesha_module() -> ModuleType:
    """scripts/vm/ganesha.py, loaded by path (scripts/ is not a package)."""
    path = REPO / "scripts" / "vm" / "ganesha.py"
    spec = importlib.util.spec_from_file_location("vm_ganesha", path)
    if spec is None or spec.loader is None or not path.exists():
        raise RuntimeError(f"{path} is missing: it starts NFS-Ganesha")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ganesha_pid(work_dir: Path) -> int | None:
    """ganesha.nfsd writes its pid file at start (``-p``)."""
    try:
        return int((work_dir / "ganesha.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def network_namespace(pid: int | None) -> ContextManager[None]:
    """Where a server listens: the private network namespace of process ``pid`` (a private
    Ganesha's ``namespace_pid``), or with None this process's own.  Sockets opened in the
    block stay there."""
    return contextlib.nullcontext() if pid is None else ganesha_module().network_namespace(pid)
