"""Registration with the system's rpcbind (or a classic portmap daemon).

At start the server maps NFS v3 and MOUNT v3, over TCP and UDP, to its port; at stop it
removes exactly the mappings it made and that still point at it.  Only local endpoints are
ever contacted:

* rpcbind's AF_UNIX socket (``/run/rpcbind.sock``), rpcbind protocol v3.  This is the way
  that works with a stock rpcbind: it refuses SET and UNSET arriving over IP, even from
  127.0.0.1, unless it was started with ``-L`` (old-style local registration);
* else the portmapper at 127.0.0.1:111, portmap v2 over TCP (a classic portmap daemon, or
  ``rpcbind -L``).

Mappings already held by another server are left alone: a mapping of one of our programs to
another port is replaced only when nothing answers RPC on that port any more (a server that
died without unregistering); a live one is kept and reported.  All calls are synchronous
with short timeouts: run them in a thread.
"""
from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterable

from protocol import portmap, rpcbind
from protocol.program import Program
from protocol.record import RecordReader, frame
from protocol.rpc import auth_stat, decode_reply, encode_call, reject_stat

log = logging.getLogger("pysfsd.rpcbind")

LOCAL_SOCKETS = ("/run/rpcbind.sock", "/var/run/rpcbind.sock")
LOOPBACK = "127.0.0.1"
TIMEOUT = 2.0
PROBE_TIMEOUT = 1.0
_PROTOCOLS = {"tcp": portmap.IPPROTO_TCP, "udp": portmap.IPPROTO_UDP}
_xids = itertools.count(int.from_bytes(os.urandom(3), "big") << 8)


@dataclass(frozen=True)
class Mapping:
    """One registration: program, version, transport ("tcp" or "udp") and port."""

    prog: int
    vers: int
    proto: str
    port: int


@dataclass(frozen=True)
class Entry:
    """A mapping as the portmapper lists it (``host`` is None for portmap v2, which has none)."""

    prog: int
    vers: int
    netid: str
    host: str | None
    port: int


class RpcbindError(Exception):
    """The portmapper refused or failed a call."""


def _check_reply(reply: bytes, xid: int) -> int:
    """Offset of the results of a SUCCESS reply to ``xid``; raises RpcbindError otherwise."""
    rxid, body, off = decode_reply(reply)
    if rxid != xid:
        raise RpcbindError(f"reply xid {rxid:#x} for call {xid:#x}")
    stat, detail = body
    if stat != 0:  # MSG_DENIED
        kind, why = detail
        if kind == reject_stat.AUTH_ERROR:
            raise RpcbindError(f"refused: {auth_stat.values(why).name}")
        raise RpcbindError("refused: RPC version mismatch")
    accepted = detail.reply_data[0]
    if accepted != 0:
        raise RpcbindError(f"call failed: accept_stat {accepted}")
    return off


class Portmapper:
    """One stream connection to the local portmapper; ``version`` 3 (rpcbind over its
    AF_UNIX socket) or 2 (portmap over TCP to 127.0.0.1:111)."""

    def __init__(self, sock: socket.socket, version: int, where: str) -> None:
        self.sock = sock
        self.version = version
        self.where = where
        self.reader = RecordReader(1 << 20)

    @classmethod
    def connect(cls, sockets: Iterable[str] = LOCAL_SOCKETS, port: int = portmap.PMAP_PORT,
                timeout: float = TIMEOUT) -> "Portmapper | None":
        """The local portmapper, or None when none answers (a stale socket file does not)."""
        for path in sockets:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                continue
            return cls(sock, rpcbind.RPCBVERS3, path)
        try:
            sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        except OSError:
            return None
        return cls(sock, portmap.PMAP_V2, f"{LOOPBACK}:{port}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Portmapper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, program: Program, proc: int, args: Any) -> Any:
        p = program.procedures[proc]
        xid = next(_xids) & 0xFFFFFFFF
        buf = encode_call(xid, program.number, program.version, proc)
        p.args.pack(buf, args)
        self.sock.sendall(frame(buf))
        records: list[bytes] = []
        while not records:
            data = self.sock.recv(65536)
            if not data:
                raise RpcbindError("the portmapper closed the connection")
            records = [bytes(r) for r in self.reader.feed(data)]  # a few small replies, once
        off = _check_reply(records[0], xid)
        value, _ = p.res.unpack(records[0], off)
        return value

    @property
    def _program(self) -> Program:
        return rpcbind.RPCBIND3 if self.version == rpcbind.RPCBVERS3 else portmap.PORTMAP2

    def dump(self) -> list[Entry]:
        entries = []
        for e in self.call(self._program, 4, None):
            if self.version == portmap.PMAP_V2:
                netid = {v: k for k, v in _PROTOCOLS.items()}.get(e.prot, str(e.prot))
                entries.append(Entry(e.prog, e.vers, netid, None, e.port))
            else:
                where = rpcbind.uaddr_split(e.r_addr.decode(errors="replace"))
                if where is not None:
                    entries.append(Entry(e.r_prog, e.r_vers, e.r_netid.decode(errors="replace"), *where))
        return entries

    def set(self, m: Mapping, host: str) -> bool:
        if self.version == portmap.PMAP_V2:
            return bool(self.call(portmap.PORTMAP2, 1, portmap.mapping(m.prog, m.vers, _PROTOCOLS[m.proto], m.port)))
        return bool(self.call(rpcbind.RPCBIND3, 1, self._rpcb(m, host)))

    def unset(self, m: Mapping, host: str) -> bool:
        """Remove the mapping of (prog, vers) for this transport (portmap v2: for all)."""
        if self.version == portmap.PMAP_V2:
            return bool(self.call(portmap.PORTMAP2, 2, portmap.mapping(m.prog, m.vers, 0, 0)))
        return bool(self.call(rpcbind.RPCBIND3, 2, self._rpcb(m, host)))

    @staticmethod
    def _rpcb(m: Mapping, host: str) -> Any:
        owner = "superuser" if os.geteuid() == 0 else str(os.geteuid())  # rpcbind uses the socket's
        return rpcbind.rpcb(m.prog, m.vers, netid(m.proto, host).encode(),
                            rpcbind.uaddr(host, m.port).encode(), owner.encode())


def netid(proto: str, host: str) -> str:
    """The rpcbind network id of a transport on an address family: tcp, udp, tcp6, udp6."""
    return proto + ("6" if ipaddress.ip_address(host).version == 6 else "")


def may_be_alive(prog: int, vers: int, proto: str, port: int, host: str = LOOPBACK,
                 timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a server may still live at host:port, erring on the side of yes: over TCP,
    anything accepting connections; over UDP, anything but a refusal (ICMP port
    unreachable) to an RPC NULL call for (prog, vers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if proto == "tcp":
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:  # refused, or timed out: nobody there
            return False
    xid = next(_xids) & 0xFFFFFFFF
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.send(bytes(encode_call(xid, prog, vers, 0)))
            sock.recv(65536)
        except socket.timeout:
            return True  # silent, not refused: something holds the port
        except OSError:
            return False
        return True


class Registration:
    """Our mappings in the local portmapper: ``register()`` at start, ``unregister()`` at stop."""

    def __init__(self, host: str, mappings: list[Mapping], sockets: Iterable[str] = LOCAL_SOCKETS,
                 port: int = portmap.PMAP_PORT) -> None:
        # The address we listen on goes into rpcbind's universal addresses (a wildcard is
        # replaced by the address each client asked on).
        self.host = host
        self.mappings = mappings
        self._connect = lambda: Portmapper.connect(tuple(sockets), port)
        self.registered: list[Mapping] = []
        self.where = ""

    def _ours(self, e: Entry, m: Mapping) -> bool:
        return e.port == m.port and (e.host is None or e.host == ipaddress.ip_address(self.host).compressed)

    def register(self) -> str:
        """Register what we can; returns a one-line account (never raises)."""
        try:
            pm = self._connect()
        except OSError as exc:
            return f"not registered: {exc}"
        if pm is None:
            return "not registered: no rpcbind or portmapper running on this host"
        self.where = pm.where
        skipped: list[str] = []
        try:
            with pm:
                mappings = self.mappings
                if pm.version == portmap.PMAP_V2 and ipaddress.ip_address(self.host).version == 6:
                    return f"not registered: the portmapper at {pm.where} speaks only portmap v2 (IPv4)"
                entries = pm.dump()
                for prog, vers in dict.fromkeys((m.prog, m.vers) for m in mappings):
                    group = [m for m in mappings if (m.prog, m.vers) == (prog, vers)]
                    if not self._register_program(pm, entries, group):
                        skipped.append(f"{prog}/{vers}")
        except (OSError, RpcbindError, ValueError) as exc:
            log.warning("registering with the portmapper at %s failed: %s", self.where, exc)
            return f"registration with {self.where} failed: {exc}"
        done = ", ".join(f"{m.prog}/{m.vers}/{m.proto}" for m in self.registered)
        if skipped:
            return f"registered with {pm.where}: {done or 'nothing'}; left {', '.join(skipped)} to the server holding it"
        return f"registered with {pm.where}: {done}"

    def _register_program(self, pm: Portmapper, entries: list[Entry], group: list[Mapping]) -> bool:
        prog, vers = group[0].prog, group[0].vers
        wanted = {netid(m.proto, self.host): m for m in group}
        found = [e for e in entries if (e.prog, e.vers) == (prog, vers) and e.netid in wanted]
        stale = [e for e in found if not self._ours(e, wanted[e.netid])]
        for e in stale:
            # Never take over a mapping of another live server (nor one we cannot check
            # without leaving this host); a server that died without unregistering is gone.
            # (A mapping to our own port is a leftover of ours: we hold that port now.)
            if e.port != group[0].port and (not _local_or_any(e.host)
                                            or may_be_alive(prog, vers, e.netid[:3], e.port, _probe_host(e))):
                log.warning("program %d v%d is registered at %s port %d by a running server; not "
                            "registering it", prog, vers, e.netid, e.port)
                return False
        for e in stale:
            log.info("removing stale mapping %d v%d %s port %d", prog, vers, e.netid, e.port)
            pm.unset(wanted[e.netid], self.host)
        present = {e.netid for e in found if e not in stale}
        if pm.version == portmap.PMAP_V2 and stale:
            present = set()  # portmap v2 UNSET removed every transport of (prog, vers)
        for nid, m in wanted.items():
            if nid in present or pm.set(m, self.host):
                self.registered.append(m)
            else:
                log.warning("the portmapper at %s refused %d v%d %s port %d", pm.where, prog, vers, nid, m.port)
        return True

    def unregister(self) -> None:
        """Remove our mappings that still point at us (never raises)."""
        if not self.registered:
            return
        mine, self.registered = self.registered, []
        try:
            pm = self._connect()
            if pm is None:
                log.info("the portmapper went away; nothing to unregister")
                return
            with pm:
                entries = pm.dump()
                for prog, vers in dict.fromkeys((m.prog, m.vers) for m in mine):
                    group = [m for m in mine if (m.prog, m.vers) == (prog, vers)]
                    wanted = {netid(m.proto, self.host): m for m in group}
                    current = [e for e in entries if (e.prog, e.vers) == (prog, vers) and e.netid in wanted]
                    ours = [e for e in current if self._ours(e, wanted[e.netid])]
                    if pm.version == portmap.PMAP_V2:
                        # v2 UNSET drops every transport: only when all are still ours.
                        if ours and len(ours) == len(current):
                            pm.unset(group[0], self.host)
                        continue
                    for e in ours:
                        pm.unset(wanted[e.netid], self.host)
        except (OSError, RpcbindError, ValueError) as exc:
            log.warning("unregistering from the portmapper failed: %s", exc)


def _local_or_any(host: str | None) -> bool:
    if host is None:
        return True
    addr = ipaddress.ip_address(host)
    return addr.is_loopback or addr.is_unspecified


def _probe_host(e: Entry) -> str:
    """Probe loopback only: the wildcard's or loopback's address family."""
    return "::1" if e.netid.endswith("6") else LOOPBACK


def our_mappings(port: int, locks: bool = False, lock_port: int | None = None) -> list[Mapping]:
    """NFS v3 and MOUNT v3 (and with ``locks`` NLM v4 and NSM v1) over TCP and UDP on ``port``
    (NLM and NSM on ``lock_port`` if given: ``--workers``, where one process serves them)."""
    from protocol.mount3 import MOUNT_PROGRAM, MOUNT_V3
    from protocol.nfs3 import NFS_PROGRAM, NFS_V3
    from protocol.nlm4 import NLM_PROGRAM, NLM_V4
    from protocol.nsm import SM_PROGRAM, SM_VERS
    programs = [(NFS_PROGRAM, NFS_V3, port), (MOUNT_PROGRAM, MOUNT_V3, port)]
    if locks:
        at = port if lock_port is None else lock_port
        programs += [(NLM_PROGRAM, NLM_V4, at), (SM_PROGRAM, SM_VERS, at)]
    return [Mapping(prog, vers, proto, at) for prog, vers, at in programs for proto in ("tcp", "udp")]
