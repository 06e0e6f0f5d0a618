"""What the load generator measures: the fixture tree, the handles it needs, and one script
per operation.

An op script is a generator: it yields ``(call record, payload or None)`` for each call
(records are encoded once per connection where the arguments do not change, by the
project's own XDR encoders), receives ``(reply size, reply's last 8 bytes)`` (the driver
has already checked the RPC header and NFS3_OK: replies are never decoded), raises
``Mismatch`` when a reply is wrong and ``Exhausted`` when it has nothing left to do (REMOVE
after every created name is gone), and returns the number of data bytes it moved.  Plain
generators are far cheaper per call than tasks and futures, which keeps the generator from
being the bottleneck, and they let multi-call operations read as straight-line code.
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

Call = tuple[bytes, "bytes | None"]
OpScript = Generator[Call, Any, int]
RENAME_PREFIX = b"r"


class Mismatch(Exception):
    """A successful reply whose content is not what the fixture implies."""


class Exhausted(Exception):
    """The op has nothing left to do on this connection (its slot stops)."""


# -- fixture -------------------------------------------------------------------------------

def write_file_name(index: int) -> bytes:
    return b"w%04d" % index


def rename_name(conn: int, slot: int, side: int) -> bytes:
    return b"%s%d-%d-%d" % (RENAME_PREFIX, conn, slot, side)


def build_fixture(export: Path, write_files: int, depth: int = 0) -> None:
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
        for slot in range(depth):  # RENAME ping-pongs one file per in-flight slot
            (scratch / rename_name(i, slot, 0).decode()).touch()


@dataclass(frozen=True)
class Handles:
    """File handles found by LOOKUP at setup, shared by every generator process."""

    root: bytes
    small: bytes
    big: bytes
    dir1000: bytes
    scratch: bytes
    writes: tuple[bytes, ...]
    listing_bytes: int  # size of the one-reply READDIRPLUS of dir1000 found at setup


# -- per-connection state ------------------------------------------------------------------

@functools.cache
def write_payload() -> bytes:
    """Random (incompressible) WRITE data, made once per process."""
    return os.urandom(MiB)


_NO_CHANGE = (nfs3.time_how.DONT_CHANGE, None)
#: Names CREATE made per (server, connection), in this generator process: REMOVE takes them.
_created: dict[tuple[str, int], int] = {}
_removed: dict[tuple[str, int], int] = {}
#: Which name each RENAME slot's file has now, per (server, connection, slot): a later run
#: (loadgen --rounds) starts from there, not from the fixture's name.
_rename_sides: dict[tuple[str, int, int], int] = {}
LISTING_TAIL = b"\0\0\0\0\0\0\0\1"  # end of the entry list, then eof = TRUE
LISTING_MAX = 1 << 20  # dircount and maxcount of the one-reply listing


def _sattr(mode: int | None) -> Any:
    return nfs3.sattr3(mode, None, None, None, _NO_CHANGE, _NO_CHANGE)


def _fh(raw: bytes) -> Any:
    return nfs3.nfs_fh3(raw)


class ConnContext:
    """What the scripts running on one connection share: pre-encoded calls and counters
    (sequential READ offset, WRITE offset and COMMIT cadence, created names)."""

    def __init__(self, encoder: Any, server: str, handles: Handles, proc_index: int, conn_index: int,
                 conns_per_proc: int, depth: int) -> None:
        enc = encoder.record
        self.encoder = encoder
        self.handles = handles
        self.global_index = g = proc_index * conns_per_proc + conn_index
        self.key = (server, g)
        self.rng = random.Random(g)
        self.read_offset = (g * 8 * MiB) % BIG_SIZE  # spread the sequential readers
        self.write_offset = 0
        self.writes = 0
        self.prefix = b"c%d-" % g
        self.payload = write_payload()
        self.null = enc(0, None)
        self.getattr = enc(1, nfs3.GETATTR3args(_fh(handles.small)))
        self.lookup = enc(3, nfs3.LOOKUP3args(nfs3.diropargs3(_fh(handles.root), SMALL_NAME)))
        self.readdirplus = enc(17, nfs3.READDIRPLUS3args(_fh(handles.dir1000), 0, bytes(8), LISTING_MAX, LISTING_MAX))
        self.commit = enc(21, nfs3.COMMIT3args(_fh(handles.writes[g]), 0, 0))
        self.setattrs = [enc(2, nfs3.SETATTR3args(_fh(handles.writes[g]), _sattr(mode), None))
                         for mode in (0o600, 0o644)]
        # per slot: its key in _rename_sides (which name its file has now), then the records
        # renaming it from name 0 to name 1 and back
        self.renames = [((server, g, k),
                         (enc(14, nfs3.RENAME3args(nfs3.diropargs3(_fh(handles.scratch), rename_name(g, k, 0)),
                                                   nfs3.diropargs3(_fh(handles.scratch), rename_name(g, k, 1)))),
                          enc(14, nfs3.RENAME3args(nfs3.diropargs3(_fh(handles.scratch), rename_name(g, k, 1)),
                                                   nfs3.diropargs3(_fh(handles.scratch), rename_name(g, k, 0))))))
                        for k in range(depth)]
        self.create_how = (nfs3.createmode3.GUARDED, _sattr(0o644))
        self.scratch = _fh(handles.scratch)
        self.big = _fh(handles.big)
        self.write_file = _fh(handles.writes[g])
        # A READ's record differs only in its offset: patch it into a copy of one template.
        self.read4k = enc(6, nfs3.READ3args(self.big, 0, 4 * KiB))
        self.read1m = enc(6, nfs3.READ3args(self.big, 0, MiB))
        self.read_offset_at = len(self.read4k) - 12
        self.settings_depth = depth

    def read_record(self, template: bytes, offset: int) -> bytes:
        rec = bytearray(template)
        rec[self.read_offset_at:self.read_offset_at + 8] = offset.to_bytes(8, "big")
        return bytes(rec)

    def write_record(self, offset: int) -> bytes:
        """WRITE args with an empty data field, then its length set to the payload's."""
        rec = bytearray(self.encoder.record(7, nfs3.WRITE3args(self.write_file, offset, MiB,
                                                               nfs3.stable_how.UNSTABLE, b""), extra=MiB))
        rec[-4:] = MiB.to_bytes(4, "big")
        return bytes(rec)


# -- op scripts ----------------------------------------------------------------------------

def op_null(ctx: ConnContext) -> OpScript:
    yield ctx.null, None
    return 0


def op_getattr(ctx: ConnContext) -> OpScript:
    yield ctx.getattr, None
    return 0


def op_lookup(ctx: ConnContext) -> OpScript:
    yield ctx.lookup, None
    return 0


def op_read4k(ctx: ConnContext) -> OpScript:
    offset = ctx.rng.randrange(BIG_SIZE // (4 * KiB)) * 4 * KiB
    size, _ = yield ctx.read_record(ctx.read4k, offset), None
    if size < 4 * KiB + 100:
        raise Mismatch(f"READ 4 KiB: reply of {size} bytes is short")
    return 4 * KiB


def op_read1m(ctx: ConnContext) -> OpScript:
    offset = ctx.read_offset
    ctx.read_offset = (offset + MiB) % BIG_SIZE
    size, _ = yield ctx.read_record(ctx.read1m, offset), None
    if size < MiB + 100:
        raise Mismatch(f"READ 1 MiB: reply of {size} bytes is short")
    return MiB


def op_write1m(ctx: ConnContext) -> OpScript:
    offset = ctx.write_offset
    ctx.write_offset = (offset + MiB) % WRITE_SPAN
    yield ctx.write_record(offset), ctx.payload
    ctx.writes += 1
    if ctx.writes % COMMIT_EVERY == 0:
        yield ctx.commit, None
    return MiB


def op_readdirplus(ctx: ConnContext) -> OpScript:
    """One complete listing of the 1000-entry directory in one reply (setup checked that
    one reply holds all of it, and its size: a reply of that size ending the list with eof
    holds the same entries)."""
    size, tail = yield ctx.readdirplus, None
    if tail != LISTING_TAIL or size != ctx.handles.listing_bytes:
        eof = tail == LISTING_TAIL
        raise Mismatch(f"READDIRPLUS: reply of {size} bytes (expected {ctx.handles.listing_bytes}), eof {eof}")
    return 0


def op_create(ctx: ConnContext) -> OpScript:
    number = _created[ctx.key] = _created.get(ctx.key, 0) + 1
    where = nfs3.diropargs3(ctx.scratch, ctx.prefix + b"%d" % number)
    yield ctx.encoder.record(8, nfs3.CREATE3args(where, ctx.create_how)), None
    return 0


def op_remove(ctx: ConnContext) -> OpScript:
    number = _removed[ctx.key] = _removed.get(ctx.key, 0) + 1
    if number > _created.get(ctx.key, 0):
        raise Exhausted
    where = nfs3.diropargs3(ctx.scratch, ctx.prefix + b"%d" % number)
    yield ctx.encoder.record(12, nfs3.REMOVE3args(where)), None
    return 0


def op_rename(ctx: ConnContext) -> OpScript:
    """Each in-flight slot renames its own file back and forth."""
    slot = ctx.renames.pop()
    side = _rename_sides.get(slot[0], 0)
    try:
        yield slot[1][side], None
        _rename_sides[slot[0]] = 1 - side
    finally:
        ctx.renames.append(slot)
    return 0


def op_setattr(ctx: ConnContext) -> OpScript:
    ctx.writes += 1
    yield ctx.setattrs[ctx.writes & 1], None
    return 0


@dataclass(frozen=True)
class OpSpec:
    label: str
    script: Callable[[ConnContext], OpScript]
    target: float  # pysfsd/Ganesha ops/s ratio to reach
    bulk: bool = False  # report MiB/s
    entries: int = 0  # directory entries per op (entries/s)
    finite: bool = False  # runs out of work (REMOVE of what CREATE made): counted from the start


OPS: dict[str, OpSpec] = {
    "null": OpSpec("NULL", op_null, 1.0),
    "getattr": OpSpec("GETATTR", op_getattr, 1.0),
    "lookup": OpSpec("LOOKUP", op_lookup, 1.0),
    "read4k": OpSpec("READ 4 KiB", op_read4k, 1.0),
    "read1m": OpSpec("READ 1 MiB", op_read1m, 0.7, bulk=True),
    "write1m": OpSpec(f"WRITE 1 MiB+COMMIT/{COMMIT_EVERY}", op_write1m, 1.0, bulk=True),
    "readdirplus": OpSpec(f"READDIRPLUS {DIR_ENTRIES}", op_readdirplus, 1.0, entries=DIR_ENTRIES),
    "create": OpSpec("CREATE GUARDED", op_create, 1.0),
    "remove": OpSpec("REMOVE", op_remove, 1.0, finite=True),
    "rename": OpSpec("RENAME", op_rename, 1.0),
    "setattr": OpSpec("SETATTR mode", op_setattr, 1.0),
}
