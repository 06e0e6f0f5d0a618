"""Wiring: the LMDB store, the exports, the services, the dispatcher and the listeners."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from protocol.mount3 import MOUNT3
from protocol.nfs3 import NFS3

from .dispatch import Dispatcher
from .drc import DuplicateRequestCache
from .localfs import LocalFS
from .mount_service import MountService
from .nfs3_service import Nfs3Service
from .server import RpcStreamProtocol
from .store import Store
from .trace import trace_level

log = logging.getLogger("pysfsd")

# Procedures that may block on the disk (fsync, large reads, big directories) run in threads.
OFFLOADED = frozenset({"READ", "WRITE", "COMMIT", "READDIR", "READDIRPLUS", "CREATE", "FSSTAT"})


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "pysfsd")


@dataclass
class ServerConfig:
    exports: list[str]
    bind: str = "0.0.0.0"
    port: int = 2049
    state_dir: str = field(default_factory=default_state_dir)
    max_record: int = (1 << 20) + (64 << 10)  # a 1 MiB WRITE plus its headers
    threads: int = 8


class ConfigError(ValueError):
    pass


class NfsServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        roots = [os.path.realpath(e) for e in config.exports]
        state = os.path.realpath(config.state_dir)
        for root in roots:
            if not os.path.isdir(root):
                raise ConfigError(f"export {root} is not a directory")
            if state == root or state.startswith(root.rstrip("/") + "/"):
                raise ConfigError(f"state directory {state} must not be inside export {root}")
        # One LMDB environment per set of exports keeps unrelated servers apart.
        digest = hashlib.sha256("\0".join(sorted(roots)).encode()).hexdigest()[:16]
        self.store = Store(os.path.join(state, digest))
        self.boot = self.store.next_boot()
        self.exports: dict[int, LocalFS] = {}
        for root in roots:
            eid = self.store.export_id(root)
            self.exports[eid] = LocalFS(root, eid, self.store)
        # Fixed per boot, different after a restart: clients resend uncommitted writes.
        self.write_verifier = self.boot.to_bytes(4, "big") + os.urandom(4)
        self.executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="pysfsd-io")
        self.nfs = Nfs3Service(self.exports, self.store, self.write_verifier)
        self.mount = MountService(self.exports)
        self.dispatcher = Dispatcher(self.executor, trace_level(), DuplicateRequestCache())
        self.dispatcher.register(NFS3, self.nfs, OFFLOADED)
        self.dispatcher.register(MOUNT3, self.mount)
        self.connections: set[RpcStreamProtocol] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: RpcStreamProtocol(self.dispatcher, self.connections, self.config.max_record),
            self.config.bind, self.config.port, reuse_address=True)
        self._servers.append(server)
        self._sync_task = loop.create_task(self._sync_periodically())
        host, port = server.sockets[0].getsockname()[:2]
        return host, port

    async def _sync_periodically(self) -> None:
        """The handle table is written without fsync; flush it once a second."""
        while True:
            await asyncio.sleep(1.0)
            await asyncio.get_running_loop().run_in_executor(self.executor, self.store.sync)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, let in-flight calls finish and answer, then close everything."""
        for server in self._servers:
            server.close()
        pending = [t for c in self.connections for t in c.tasks]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._sync_task is not None:
            self._sync_task.cancel()
        self.executor.shutdown(wait=True)
        for fs in self.exports.values():
            fs.close()
        self.store.close()
