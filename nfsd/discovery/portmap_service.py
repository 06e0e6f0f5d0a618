"""Discovery: how clients find the server's port.

Either the system's rpcbind knows our programs (``rpcbind_client.Registration``), or, with
``--portmap`` when no portmapper runs, the server is its own portmapper: an embedded
portmap v2 (RFC 1833) on port 111, TCP and UDP, whose table is pre-filled with our
programs.  ``rpcinfo -p``, ``showmount -e`` and the kernel's plain ``mount -t nfs`` (which
asks portmap v2 GETPORT for NFS and MOUNT) then work without port options.

The embedded portmapper serves NULL, SET, UNSET, GETPORT and DUMP.  SET and UNSET are
accepted only from loopback clients (127.0.0.0/8, ::1), like rpcbind.  CALLIT is not
served (PROC_UNAVAIL): an indirect call forwarded on behalf of anyone is the classic
portmapper reflection/amplification vector, and nothing we serve needs it.  Over UDP, DUMP
is not served either (PROC_UNAVAIL, 24 bytes): its reply grows with the table while the
call stays 40 bytes; ``rpcinfo -p`` uses TCP anyway.  The other UDP replies are no larger
than their calls.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from typing import Any, Iterable

from protocol import portmap
from protocol.portmap import IPPROTO_TCP, IPPROTO_UDP, PMAP_PORT, PMAP_PROGRAM, PMAP_V2, PORTMAP2
from protocol.program import Program

from ..rpc.dispatch import Dispatcher
from ..rpc.drc import DuplicateRequestCache
from ..rpc.call import CallContext
from .rpcbind_client import Mapping, Registration, our_mappings
from ..rpc.server import (ConnectionLimits, RpcDatagramProtocol, RpcStreamProtocol, listen_rpc,
                          reap_connections)

log = logging.getLogger("pysfsd.portmap")

MAX_ENTRIES = 256   # SET beyond this fails: a local client cannot grow the table without bound
MAX_RECORD = 4096   # the largest portmap call (SET) is under 100 bytes
_PROTO = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

PORTMAP2_TCP = Program.of(PMAP_PROGRAM, PMAP_V2, "PORTMAP2",
                          [p for p in PORTMAP2.procedures.values() if p.name != "CALLIT"])
PORTMAP2_UDP = Program.of(PMAP_PROGRAM, PMAP_V2, "PORTMAP2",
                          [p for p in PORTMAP2.procedures.values() if p.name not in ("CALLIT", "DUMP")])


def is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class PortmapService:
    """The portmap v2 procedures over an in-memory table (prog, vers, prot) -> port."""

    def __init__(self, mappings: Iterable[Mapping] = ()) -> None:
        self.table: dict[tuple[int, int, int], int] = {}
        for m in mappings:
            self.table[(m.prog, m.vers, _PROTO[m.proto])] = m.port

    def NULL(self, ctx: CallContext, a: None) -> None:
        return None

    def SET(self, ctx: CallContext, m: Any) -> bool:
        """Map (prog, vers, prot) to port, unless already mapped (RFC 1833)."""
        key = (m.prog, m.vers, m.prot)
        if not is_loopback(ctx.client[0]):
            log.info("refused SET %d v%d from %s (not loopback)", m.prog, m.vers, ctx.client[0])
            return False
        if key in self.table or m.prot not in (IPPROTO_TCP, IPPROTO_UDP) or len(self.table) >= MAX_ENTRIES:
            return False
        if not 0 < m.port < 65536:
            return False
        self.table[key] = m.port
        return True

    def UNSET(self, ctx: CallContext, m: Any) -> bool:
        """Remove every mapping of (prog, vers); prot and port are ignored (RFC 1833)."""
        if not is_loopback(ctx.client[0]):
            log.info("refused UNSET %d v%d from %s (not loopback)", m.prog, m.vers, ctx.client[0])
            return False
        keys = [k for k in self.table if k[:2] == (m.prog, m.vers)]
        for k in keys:
            del self.table[k]
        return bool(keys)

    def GETPORT(self, ctx: CallContext, m: Any) -> int:
        return self.table.get((m.prog, m.vers, m.prot), 0)

    def DUMP(self, ctx: CallContext, a: None) -> list[Any]:
        return [portmap.mapping(prog, vers, prot, port)
                for (prog, vers, prot), port in sorted(self.table.items())]


class EmbeddedPortmapper:
    """PORTMAP2 on TCP and UDP at one port, with its own dispatchers (nothing else is
    served there)."""

    def __init__(self, mappings: list[Mapping], trace_level: int = 0) -> None:
        self.service = PortmapService(mappings)
        drc = DuplicateRequestCache(256)
        self.tcp = Dispatcher(None, trace_level, drc)
        self.tcp.register(PORTMAP2_TCP, self.service)
        self.udp = Dispatcher(None, trace_level, drc)
        self.udp.register(PORTMAP2_UDP, self.service)
        self.connections: set[Any] = set()
        self.server: asyncio.base_events.Server | None = None
        self.reaper: asyncio.Task[None] | None = None  # closes idle and stalled connections

    async def start(self, host: str, port: int) -> int:
        self.server, _, port = await listen_rpc(
            host, port,
            lambda: RpcStreamProtocol(self.tcp, self.connections, MAX_RECORD, max_inflight=4),
            lambda: RpcDatagramProtocol(self.udp, self.connections))
        self.reaper = asyncio.get_running_loop().create_task(reap_connections(self.connections, ConnectionLimits()))
        for proto, number in _PROTO.items():
            self.service.table[(PMAP_PROGRAM, PMAP_V2, number)] = port
        return port

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


class Discovery:
    """What makes the server findable, started after it listens and stopped first."""

    def __init__(self) -> None:
        self.portmapper: EmbeddedPortmapper | None = None
        self.registration: Registration | None = None
        self.status = "not started"

    async def start(self, host: str, port: int, embedded: bool, portmap_port: int = PMAP_PORT,
                    trace_level: int = 0, register: bool = True, locks: bool = False,
                    lock_port: int | None = None) -> str:
        """Serve the embedded portmapper when asked to and its port is free; otherwise
        register with the system's portmapper if one runs (and ``register``: a test or
        private instance must not take over the real server's mappings); ``locks`` adds NLM
        and NSM to our mappings.  Returns ``status``; the embedded portmapper's port refused
        (not root) raises OSError."""
        mappings = our_mappings(port, locks, lock_port)
        if embedded:
            pm = EmbeddedPortmapper(mappings, trace_level)
            try:
                where = await pm.start(host, portmap_port)
            except OSError as exc:
                pm.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                log.info("port %d is taken (a portmapper runs?): registering with it instead", portmap_port)
            else:
                self.portmapper = pm
                self.status = f"serving portmap v2 on {host}:{where} (tcp, udp)"
                return self.status
        if not register:
            self.status = "not registered (--no-register): mount with the port in the options"
            return self.status
        self.registration = Registration(host, mappings)
        loop = asyncio.get_running_loop()
        self.status = await loop.run_in_executor(None, self.registration.register)
        return self.status

    async def stop(self) -> None:
        if self.registration is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.registration.unregister)
            self.registration = None
        if self.portmapper is not None:
            self.portmapper.close()
            self.portmapper = None
