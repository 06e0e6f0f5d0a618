"""A throw-away PostgreSQL server for tests (Debian's postgresql package).

``initdb`` into a temporary directory, then ``postgres`` in the foreground as a child of
this process, listening on a unix socket in that directory and, when asked, on one TCP
address (127.0.0.1 on a free port, or a ``netns.Lab`` host's address when run in that host).
Run as root, the server runs as the unprivileged ``postgres`` user (PostgreSQL refuses root);
trust authentication, since only this machine's own processes (or the lab's namespaces)
can reach it.  ``close()`` stops it (fast shutdown, then SIGKILL) and removes the directory.

    with Postgres.started() as pg:
        psycopg.connect(pg.url)

``python scripts/cluster/postgres.py`` starts one, prints how long that took, and stops it.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.cluster.netns import Host, dies_with_parent

USER = "postgres"          # the server's user when started as root


def bin_dir() -> Path | None:
    """The newest installed server's binaries (Debian keeps them off PATH)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if os.access(os.path.join(d, "postgres"), os.X_OK):
            return Path(d)
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One server.  ``tcp``: None (unix socket only), or the address to listen on too."""

    def __init__(self, tcp: str | None = None, port: int | None = None,
                 host: Host | None = None, durable: bool = True) -> None:
        bins = bin_dir()
        if bins is None:
            raise FileNotFoundError("PostgreSQL server binaries not found")
        self.bin = bins
        self.tcp = tcp
        self.port = port or (free_port() if tcp == "127.0.0.1" else 5432)
        self.host = host
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="pysfsd-pg-"))
        self.data = self.dir / "data"
        self._proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    @property
    def socket_dir(self) -> str:
        return str(self.dir)

    @property
    def url(self) -> str:
        """A libpq URL: over TCP when listening there, else through the unix socket."""
        if self.tcp:
            return f"postgresql://{USER}@{self.tcp}:{self.port}/postgres"
        return f"postgresql://{USER}@/postgres?host={self.dir}&port={self.port}"

    def _as_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--", *argv]

    def start(self, timeout: float = 60.0) -> Postgres:
        t0 = time.monotonic()
        if os.geteuid() == 0:
            pw = pwd.getpwnam(USER)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        if not (self.data / "PG_VERSION").exists():   # else a restart (``stop``, ``start``)
            self._initdb(timeout)
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", self.socket_dir, "-c", f"listen_addresses={self.tcp or ''}",
                "-c", "max_connections=50", "-c", "shared_buffers=32MB"]
        if not self.durable:    # for tests that never crash the machine
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        argv = self._as_user(argv)
        log = (self.dir / "postgres.log").open("w")
        kw: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT}
        self._proc = (self.host.popen(argv, **kw) if self.host
                      else subprocess.Popen(dies_with_parent(argv), **kw))
        log.close()
        deadline = t0 + timeout
        ready = [str(self.bin / "pg_isready"), "-q", "-h", self.socket_dir, "-p", str(self.port)]
        while subprocess.run(self.host.command(ready) if self.host else ready, check=False).returncode != 0:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.dir / 'postgres.log').read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError("postgres did not become ready")
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - t0
        return self

    @classmethod
    @contextmanager
    def started(cls, **kw: object) -> Iterator[Postgres]:
        pg = cls(**kw)  # type: ignore[arg-type]
        try:
            pg.start()
            yield pg
        finally:
            pg.close()

    def _initdb(self, timeout: float) -> None:
        subprocess.run(self._as_user([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
                                      "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        if self.host is not None and self.tcp:
            # in a lab host the one directly connected net is the lab's own: let its hosts in
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet trust\n")

    def stop(self) -> None:
        """Stop the server and keep its data: ``start()`` brings the same database back."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)      # "fast" shutdown
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> int:
    with Postgres.started(tcp="127.0.0.1") as pg:
        print(f"postgres ready in {pg.start_seconds:.2f} s at {pg.url}")
        try:
            import psycopg
        except ImportError:
            return 0
        with psycopg.connect(pg.url, autocommit=True) as conn:
            row = conn.execute("select version()").fetchone()
            print(row[0] if row else "?")
        t1 = time.monotonic()
    print(f"stopped in {time.monotonic() - t1:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
