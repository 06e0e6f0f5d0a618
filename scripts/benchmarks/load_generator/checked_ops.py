"""Op scripts that decode and check every reply, for the load scripts (scripts/load/):
they yield ``(NFS procedure number, args value)`` over a decoding ``RpcConnection`` and
receive the ``resok`` body.  The benchmark itself (workload.py) sends pre-encoded calls and
never decodes replies, so that the generator is not what it measures.
"""
from __future__ import annotations

import random
from typing import Any, Generator

from protocol import nfs3

from workload import BIG_SIZE, DIR_ENTRIES, KiB, MiB, SMALL_NAME, Handles, Mismatch

__all__ = ["ConnContext", "Mismatch", "OpScript", "KiB", "op_getattr", "op_lookup", "op_readdirplus",
           "op_create_remove"]

Call = tuple[int, Any]
OpScript = Generator[Call, Any, int]


_NO_CHANGE = (nfs3.time_how.DONT_CHANGE, None)


class ConnContext:
    """What the scripts running on one connection share: prebuilt argument parts and
    counters (sequential READ offset, WRITE offset and COMMIT cadence, unique names)."""

    def __init__(self, handles: Handles, proc_index: int, conn_index: int, conns_per_proc: int) -> None:
        self.root = nfs3.nfs_fh3(handles.root)
        self.small = nfs3.nfs_fh3(handles.small)
        self.small_raw = handles.small
        self.big = nfs3.nfs_fh3(handles.big)
        self.dir1000 = nfs3.nfs_fh3(handles.dir1000)
        self.scratch = nfs3.nfs_fh3(handles.scratch)
        global_index = proc_index * conns_per_proc + conn_index
        self.write_file = nfs3.nfs_fh3(handles.writes[global_index])
        self.rng = random.Random(global_index)
        self.read_offset = (global_index * 8 * MiB) % BIG_SIZE  # spread the sequential readers
        self.write_offset = 0
        self.writes = 0
        self.prefix = b"c%d-%d-" % (proc_index, conn_index)
        self.created = 0
        self.create_attrs = nfs3.sattr3(0o644, None, None, None, _NO_CHANGE, _NO_CHANGE)


# -- op scripts ----------------------------------------------------------------------------

def op_getattr(ctx: ConnContext) -> OpScript:
    res = yield 1, nfs3.GETATTR3args(ctx.small)
    if res.obj_attributes.type != nfs3.ftype3.NF3REG:
        raise Mismatch("GETATTR: not a regular file")
    return 0


def op_lookup(ctx: ConnContext) -> OpScript:
    res = yield 3, nfs3.LOOKUP3args(nfs3.diropargs3(ctx.root, SMALL_NAME))
    if res.object.data != ctx.small_raw:
        raise Mismatch("LOOKUP: handle differs from the one found at setup")
    return 0


_DOTS = (b".", b"..")


def op_readdirplus(ctx: ConnContext) -> OpScript:
    """One complete listing of the 1000-entry directory, following cookies."""
    cookie, verf, seen = 0, bytes(8), 0
    while True:
        res = yield 17, nfs3.READDIRPLUS3args(ctx.dir1000, cookie, verf, 8192, 65536)
        entries = res.reply.entries
        seen += len(entries)
        for e in entries:
            if e.name in _DOTS:
                seen -= 1
        if res.reply.eof:
            break
        if not entries:
            raise Mismatch("READDIRPLUS: no entries and no eof")
        cookie, verf = entries[-1].cookie, res.cookieverf
    if seen != DIR_ENTRIES:
        raise Mismatch(f"READDIRPLUS: listed {seen} entries, expected {DIR_ENTRIES}")
    return 0


def op_create_remove(ctx: ConnContext) -> OpScript:
    ctx.created += 1
    where = nfs3.diropargs3(ctx.scratch, ctx.prefix + b"%d" % ctx.created)
    yield 8, nfs3.CREATE3args(where, (nfs3.createmode3.UNCHECKED, ctx.create_attrs))
    yield 12, nfs3.REMOVE3args(where)
    return 0
