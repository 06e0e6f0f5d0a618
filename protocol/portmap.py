"""Portmapper version 2 (RFC 1833, program 100000)."""
from __future__ import annotations

from xdr import List, Opaque, Struct, boolean, uint32, void

from .program import Procedure, Program

PMAP_PROGRAM, PMAP_V2, PMAP_PORT = 100000, 2, 111
IPPROTO_TCP, IPPROTO_UDP = 6, 17

mapping = Struct("mapping", [("prog", uint32), ("vers", uint32), ("prot", uint32), ("port", uint32)])
pmaplist = List(mapping, "pmaplist")
call_args = Struct("call_args", [("prog", uint32), ("vers", uint32), ("proc", uint32), ("args", Opaque())])
call_result = Struct("call_result", [("port", uint32), ("res", Opaque())])

PORTMAP2 = Program.of(PMAP_PROGRAM, PMAP_V2, "PORTMAP2", [
    Procedure(0, "NULL", void, void),
    Procedure(1, "SET", mapping, boolean, idempotent=False),
    Procedure(2, "UNSET", mapping, boolean, idempotent=False),
    Procedure(3, "GETPORT", mapping, uint32),
    Procedure(4, "DUMP", void, pmaplist),
    Procedure(5, "CALLIT", call_args, call_result),
])
