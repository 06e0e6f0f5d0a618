"""What the load generator measures: the fixture tree, the handles it needs, and one script
per operation.

An op script is a generator: it yields ``(NFS procedure number, args value)`` for each call,
receives the decoded ``resok`` body (the driver has already checked NFS3_OK), raises
``Mismatch`` when a reply is wrong, and returns the number of data bytes it moved.  Plain
generators are far cheaper per call than tasks and futures, which keeps the generator from
being the bottleneck, and they let multi-call operations (listing, CREATE+REMOVE, WRITE then
COMMIT) read as straight-line code.
"""
from __future__ import annotations

import functools
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

from protocol import nfs3

KiB, MiB = 1 << 10, 1 << 20
BIG_SIZE = 64 * MiB           # READ target
DIR_ENTRIES = 1000            # READDIRPLUS target
WRITE_SPAN = 16 * MiB         # each connection's WRITE file wraps at this size
COMMIT_EVERY = 16             # 1 MiB UNSTABLE writes per COMMIT, per connection
SMALL_NAME, BIG_NAME, DIR_NAME, SCRATCH_NAME, WRITE_DIR = b"small", b"big", b"dir1000", b"scratch", b"write"

Call = tuple[int, Any]
OpScript = Generator[Call, Any, int]


class Mismatch(Exception):
    """A successful reply whose content is not what the fixture implies."""


# -- fixture -------------------------------------------------------------------------------

def write_file_name(index: int) -> bytes:
    return b"w%04d" % index


def build_fixture(export: Path, write_files: int) -> None:
    """Create the tree both servers export, directly on the host, so the servers start from
    identical content.  The 64 MiB file is kept when already present: rewriting it each run
    would only cost time."""
    export.mkdir(parents=True, exist_ok=True)
    (export / "small").write_bytes(os.urandom(4 * KiB))
    big = export / "big"
    if not big.exists() or big.stat().st_size != BIG_SIZE:
        with open(big, "wb") as f:
            for _ in range(BIG_SIZE // MiB):
                f.write(os.urandom(MiB))
    listing = export / "dir1000"
    listing.mkdir(exist_ok=True)
    wanted = {f"entry-{i:04d}" for i in range(DIR_ENTRIES)}
    for name in set(os.listdir(listing)) - wanted:
        (listing / name).unlink()
    for name in wanted:
        (listing / name).touch()
    scratch = export / "scratch"  # CREATE+REMOVE ground, emptied of leftovers
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    writes = export / "write"
    shutil.rmtree(writes, ignore_errors=True)
    writes.mkdir()
    for i in range(write_files):
        (writes / write_file_name(i).decode()).touch()


@dataclass(frozen=True)
class Handles:
    """File handles found by LOOKUP at setup, shared by every generator process."""

    root: bytes
    small: bytes
    big: bytes
    dir1000: bytes
    scratch: bytes
    writes: tuple[bytes, ...]


# -- per-connection state ------------------------------------------------------------------

@functools.cache
def write_payload() -> bytes:
    """Random (incompressible) WRITE data, made once per process."""
    return os.urandom(MiB)


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
        self.payload = write_payload()
        self.create_attrs = nfs3.sattr3(0o644, None, None, None, _NO_CHANGE, _NO_CHANGE)


# -- op scripts ----------------------------------------------------------------------------

def op_null(ctx: ConnContext) -> OpScript:
    yield 0, None
    return 0


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


def op_read4k(ctx: ConnContext) -> OpScript:
    offset = ctx.rng.randrange(BIG_SIZE // (4 * KiB)) * 4 * KiB
    res = yield 6, nfs3.READ3args(ctx.big, offset, 4 * KiB)
    if res.count != 4 * KiB or len(res.data) != 4 * KiB:
        raise Mismatch(f"READ 4 KiB: short read ({res.count})")
    return 4 * KiB


def op_read1m(ctx: ConnContext) -> OpScript:
    offset = ctx.read_offset
    ctx.read_offset = (offset + MiB) % BIG_SIZE
    res = yield 6, nfs3.READ3args(ctx.big, offset, MiB)
    if res.count != MiB or len(res.data) != MiB:
        raise Mismatch(f"READ 1 MiB: short read ({res.count})")
    return MiB


def op_write1m(ctx: ConnContext) -> OpScript:
    offset = ctx.write_offset
    ctx.write_offset = (offset + MiB) % WRITE_SPAN
    res = yield 7, nfs3.WRITE3args(ctx.write_file, offset, MiB, nfs3.stable_how.UNSTABLE, ctx.payload)
    if res.count != MiB:
        raise Mismatch(f"WRITE 1 MiB: short write ({res.count})")
    ctx.writes += 1
    if ctx.writes % COMMIT_EVERY == 0:
        yield 21, nfs3.COMMIT3args(ctx.write_file, 0, 0)
    return MiB


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


@dataclass(frozen=True)
class OpSpec:
    label: str
    script: Callable[[ConnContext], OpScript]
    target: float  # pysfsd/Ganesha ops/s ratio to reach
    bulk: bool = False  # report MiB/s


OPS: dict[str, OpSpec] = {
    "null": OpSpec("NULL", op_null, 1.0),
    "getattr": OpSpec("GETATTR", op_getattr, 1.0),
    "lookup": OpSpec("LOOKUP", op_lookup, 1.0),
    "read4k": OpSpec("READ 4 KiB", op_read4k, 1.0),
    "read1m": OpSpec("READ 1 MiB", op_read1m, 0.7, bulk=True),
    "write1m": OpSpec(f"WRITE 1 MiB+COMMIT/{COMMIT_EVERY}", op_write1m, 0.7, bulk=True),
    "readdirplus": OpSpec(f"READDIRPLUS {DIR_ENTRIES}", op_readdirplus, 1.0),
    "create_remove": OpSpec("CREATE+REMOVE", op_create_remove, 1.0),
}
