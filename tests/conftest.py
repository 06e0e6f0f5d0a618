"""Fixtures: a pysfsd server process on a free loopback port with a fresh export."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.rpc_client import RpcClient

REPO = Path(__file__).resolve().parent.parent


# Hypothesis, for every property test that does not say otherwise: the same examples every
# run (derandomize: a CI run is no lottery; a long fuzzing run by hand still explores, see
# test_fuzz_decoders), and no wall-clock judgement (its default 200 ms deadline per example
# and its too_slow health check fail a correct test on a loaded machine).
settings.register_profile("pysfsd", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pysfsd")


def pytest_configure(config: pytest.Config) -> None:
    """The trees the tests build take their modes from the umask where no test chmods (files
    other users read, directories they search): a host's umask of 077 failed 11 tests of
    test_caller_identity, test_tags and test_exports.  Debian's default, whatever the host's:
    the servers the tests start inherit it too."""
    os.umask(0o022)
_LISTENING = re.compile(r"pysfsd: listening on ([\d.]+):(\d+) export (.+)")


@contextmanager
def start_indexing(export: Path, base: Path, *args: str,
                   env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """A server of ``export`` with state and stderr under ``base`` (``--no-register``; ``env``
    added to the environment), given as soon as it listens, its start-up scan still
    running: (process, port).  Stopped at the end, and it must not have logged a Traceback."""
    cmd = [sys.executable, "-m", "nfsd", "--export", f'"{export}" *(rw,no_root_squash,insecure)', "--bind",
           "127.0.0.1", "--port", "0", "--no-register", "--state-dir", str(base / "state"), *args]
    with open(base / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                text=True, env={**os.environ, **(env or {})})
    try:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline().split()[3].rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in (base / "stderr").read_text()


@dataclass
class ServerProcess:
    """A running server; ``restart()`` keeps the export and state directory."""

    export: Path
    state_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    env: dict | None = None
    args: tuple[str, ...] = ()  # extra command-line options
    # How the fixture exports ``export``: the tests act as root and create files as root, so
    # root is not squashed here (the squashing default has tests of its own, in
    # test_exports.py).  None: a bare ``--export DIR``.  With ``--exports FILE`` in ``args``
    # the file alone says what is exported.
    export_options: str | None = "*(rw,no_root_squash,insecure)"
    # Tests leave the host's rpcbind alone (--no-register): a test server must not take over
    # the mappings of a real one.  Discovery tests set this.
    register: bool = False

    @property
    def export_b(self) -> bytes:
        return os.fsencode(str(self.export))

    @property
    def log_path(self) -> Path:
        """The server's stderr (a file, so a chatty server never blocks on a full pipe)."""
        return self.state_dir.parent / "pysfsd.stderr"

    def start(self, port: int = 0) -> "ServerProcess":
        if "--exports" in self.args:
            export: list[str] = []
        elif self.export_options is None:
            export = ["--export", str(self.export)]
        else:
            export = ["--export", f'"{self.export}" {self.export_options}']
        cmd = [sys.executable, "-m", "nfsd", *export, "--bind", "127.0.0.1",
               "--port", str(port or self.port), "--state-dir", str(self.state_dir),
               *(() if self.register else ("--no-register",)), *self.args]
        env = dict(os.environ, **(self.env or {}))
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env)
        out = self.proc.stdout
        assert out is not None
        line = out.readline()
        m = _LISTENING.match(line)
        if not m:
            self._abandon()
            raise RuntimeError(f"server did not start: {line!r} {self.log_path.read_text()}")
        self.port = int(m.group(2))
        # Query directories answer JUKEBOX until the start-up scan is done: wait for it.
        ready = out.readline()
        while ready.startswith("pysfsd:    ") and " export " in ready:  # further exports
            ready = out.readline()
        if not ready.startswith("pysfsd: index ready"):
            self._abandon()
            raise RuntimeError(f"server did not finish indexing: {ready!r} {self.log_path.read_text()}")
        threading.Thread(target=out.read, daemon=True).start()  # drain the rest
        return self

    def _abandon(self) -> None:
        """A start that went wrong: never leave the process running behind the test."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self._log.close()

    def pids(self) -> list[int]:
        """The server's processes: the one started and, with several workers (by default one
        per core), its workers, so a figure read from /proc covers the whole server."""
        assert self.proc is not None
        children: list[int] = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            with suppress(OSError):
                children += [int(c) for c in Path(f"/proc/{self.proc.pid}/task/{task}/children").read_text().split()]
        return [self.proc.pid, *sorted(children)]

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop the server; returns what it wrote on stderr during this run."""
        if self.proc is None:
            return ""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._log.close()
        return self.log_path.read_text(errors="replace")

    def restart(self, sig: int = signal.SIGTERM) -> "ServerProcess":
        """Stop and start again on the same port (kill -9 with sig=SIGKILL)."""
        port = self.port
        self.stop(sig)
        return self.start(port)

    def url(self, path: str = "", **params: object) -> str:
        """A libnfs URL for a path inside the export."""
        q = "&".join(["version=3", f"nfsport={self.port}", f"mountport={self.port}"]
                     + [f"{k}={v}" for k, v in params.items()])
        return f"nfs://127.0.0.1{self.export}{('/' + path.lstrip('/')) if path else ''}?{q}"


@contextmanager
def serving(base: Path, check_log: bool = True) -> Iterator[ServerProcess]:
    """A server exporting ``base/export`` (created if missing) with its state in
    ``base/state``; with ``check_log``, its stderr must hold no traceback at the end."""
    (base / "export").mkdir(exist_ok=True)
    srv = ServerProcess(base / "export", base / "state").start()
    try:
        yield srv
    finally:
        err = srv.stop()
    if check_log:
        assert "Traceback" not in err, err[-4000:]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with serving(tmp_path, check_log=False) as srv:
        yield srv


@pytest.fixture
def rpc(server: ServerProcess) -> Iterator["RpcClient"]:
    from tests.rpc_client import RpcClient
    with RpcClient(server.port) as client:
        yield client
