"""rpcbind versions 3 and 4 (RFC 1833, program 100000): the procedures a server uses to
register itself with the system's rpcbind, and universal addresses (RFC 5665)."""
from __future__ import annotations

import ipaddress

from xdr import List, String, Struct, boolean, uint32, void

from .program import Procedure, Program

RPCB_PROGRAM, RPCBVERS3, RPCBVERS4 = 100000, 3, 4

rpcb = Struct("rpcb", [("r_prog", uint32), ("r_vers", uint32), ("r_netid", String()),
                       ("r_addr", String()), ("r_owner", String())])
rpcblist = List(rpcb, "rpcblist")

_PROCEDURES = [
    Procedure(0, "NULL", void, void),
    Procedure(1, "SET", rpcb, boolean, idempotent=False),
    Procedure(2, "UNSET", rpcb, boolean, idempotent=False),
    Procedure(3, "GETADDR", rpcb, String()),
    Procedure(4, "DUMP", void, rpcblist),
]
# Only the registration procedures (no CALLIT, GETTIME, GETVERSADDR...): used as a client.
RPCBIND3 = Program.of(RPCB_PROGRAM, RPCBVERS3, "RPCBIND3", _PROCEDURES)
RPCBIND4 = Program.of(RPCB_PROGRAM, RPCBVERS4, "RPCBIND4", _PROCEDURES)


def uaddr(host: str, port: int) -> str:
    """The universal address of an IPv4 or IPv6 host and port: ``h1.h2.h3.h4.p1.p2``."""
    return f"{ipaddress.ip_address(host).compressed}.{port >> 8}.{port & 0xFF}"


def uaddr_split(addr: str) -> tuple[str, int] | None:
    """(host, port) of a universal address, None when it is not an IP one."""
    host, _, rest = addr.rpartition(".")
    host, _, high = host.rpartition(".")
    try:
        port = (int(high) << 8) | int(rest)
        return ipaddress.ip_address(host).compressed, port
    except ValueError:
        return None
