"""The operations of the mixed load: which calls, how often, and how each reply is checked.

Scripts have the shape of ``scripts/benchmarks/load_generator/workload.py``'s (a generator yielding
``(procedure, args)``, receiving the ``resok`` body, raising ``Mismatch``, returning bytes
moved); GETATTR, LOOKUP, READDIRPLUS and CREATE+REMOVE are that module's own.  The ones here
check more than a status, so a load run also proves no data was lost: READs compare the
bytes with the file on the host, WRITEs are COMMITted and read back, RENAMEs are followed by
a LOOKUP of the new name, SETATTRs by the mode they report.

Every in-flight position (slot) owns its own file region and its own files, so checks never
race with another slot's writes.
"""
from __future__ import annotations

import collections
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from protocol import nfs3
from checked_ops import (KiB, ConnContext, Mismatch, OpScript, op_create_remove, op_getattr, op_lookup,
                      op_readdirplus)

MIX_DIR = b"mix"                # one file per slot, renamed back and forth and chmod'ed
REGION = 64 * KiB               # each slot's part of its connection's WRITE file
CHURN_WINDOW = 8                # files a churn slot keeps in existence at once
_NO_CHANGE = (nfs3.time_how.DONT_CHANGE, None)
_ACCESS_ASKED = nfs3.ACCESS3_READ | nfs3.ACCESS3_MODIFY | nfs3.ACCESS3_EXTEND
_MODES = (0o600, 0o640, 0o644, 0o664, 0o666)


def slot_file_name(conn: int, slot: int, renamed: bool) -> bytes:
    return b"c%d-s%d.%s" % (conn, slot, b"b" if renamed else b"a")


def build_mix_fixture(export: Path, clients: int, depth: int) -> None:
    """EXPORT/mix with one file per slot under its first name (leftovers of an earlier run,
    possibly under the second name, are removed)."""
    mix = export / os.fsdecode(MIX_DIR)
    shutil.rmtree(mix, ignore_errors=True)
    mix.mkdir()
    for conn in range(clients):
        for slot in range(depth):
            fd = os.open(mix / os.fsdecode(slot_file_name(conn, slot, False)), os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)


@dataclass(frozen=True)
class MixHandles:
    """Handles the mixed ops need beyond the bench fixture's (found at setup)."""

    mix_dir: bytes
    slot_files: dict[tuple[int, int], bytes]   # (connection, slot) -> handle


class SlotContext:
    """One slot's state: its connection's shared context, its own random stream, WRITE
    region, renamable file and churn names; ``big`` is the READ file's content on the host."""

    def __init__(self, conn_ctx: ConnContext | None, conn: int, slot: int, *,
                 big: bytes = b"", mix: MixHandles | None = None,
                 churn_dir: bytes | None = None) -> None:
        self.conn = conn_ctx
        self.rng = random.Random(conn << 16 | slot)
        self.big = big
        self.region = slot * REGION
        self.conn_index, self.slot_index = conn, slot
        if mix is not None:
            self.mix_dir = nfs3.nfs_fh3(mix.mix_dir)
            self.file_raw = mix.slot_files[(conn, slot)]
            self.file = nfs3.nfs_fh3(self.file_raw)
        self.renamed = False
        self.churn_dir = nfs3.nfs_fh3(churn_dir) if churn_dir is not None else None
        self.churn_prefix = b"churn-c%d-s%d-" % (conn, slot)
        self.churn_next = 0
        self.churn_live: collections.deque[bytes] = collections.deque()

    @property
    def connection(self) -> ConnContext:
        """The connection's context: every op that needs one runs on a slot that has one."""
        assert self.conn is not None
        return self.conn


# -- op scripts ----------------------------------------------------------------------------

def op_access(s: SlotContext) -> OpScript:
    res = yield 4, nfs3.ACCESS3args(s.connection.small, _ACCESS_ASKED)
    if res.access & _ACCESS_ASKED != _ACCESS_ASKED:
        raise Mismatch(f"ACCESS: granted {res.access:#x} of {_ACCESS_ASKED:#x} on a 0644 file of the caller")
    return 0


def _read_verified(s: SlotContext, size: int) -> OpScript:
    offset = s.rng.randrange((len(s.big) - size) // (4 * KiB) + 1) * 4 * KiB
    res = yield 6, nfs3.READ3args(s.connection.big, offset, size)
    if res.count != size or res.data != s.big[offset:offset + size]:
        raise Mismatch(f"READ {size // KiB} KiB at {offset}: {res.count} bytes, not the file's content")
    return size


def op_read4k(s: SlotContext) -> OpScript:
    return (yield from _read_verified(s, 4 * KiB))


def op_read64k(s: SlotContext) -> OpScript:
    return (yield from _read_verified(s, 64 * KiB))


def op_write_verify(s: SlotContext) -> OpScript:
    """WRITE (UNSTABLE, or FILE_SYNC one time in four) into the slot's region, COMMIT,
    READ back: the bytes and the write verifier must survive."""
    size = s.rng.choice((4 * KiB, 16 * KiB, 64 * KiB))
    offset = s.region + s.rng.randrange((REGION - size) // (4 * KiB) + 1) * 4 * KiB
    data = s.rng.randbytes(size)
    stable = nfs3.stable_how.FILE_SYNC if s.rng.random() < 0.25 else nfs3.stable_how.UNSTABLE
    wrote = yield 7, nfs3.WRITE3args(s.connection.write_file, offset, size, stable, data)
    if wrote.count != size:
        raise Mismatch(f"WRITE: short write ({wrote.count} of {size})")
    if stable == nfs3.stable_how.FILE_SYNC and wrote.committed != nfs3.stable_how.FILE_SYNC:
        raise Mismatch(f"WRITE FILE_SYNC answered committed={wrote.committed}")
    committed = yield 21, nfs3.COMMIT3args(s.connection.write_file, offset, size)
    if committed.verf != wrote.verf:
        raise Mismatch("COMMIT verifier differs from WRITE's: the server lost uncommitted data")
    back = yield 6, nfs3.READ3args(s.connection.write_file, offset, size)
    if back.data != data:
        raise Mismatch(f"READ after WRITE+COMMIT at {offset}: content differs")
    return 2 * size


def op_setattr(s: SlotContext) -> OpScript:
    mode = s.rng.choice(_MODES)
    attrs = nfs3.sattr3(mode, None, None, None, _NO_CHANGE, _NO_CHANGE)
    res = yield 2, nfs3.SETATTR3args(s.file, attrs, None)
    after = res.obj_wcc.after
    if after is None or after.mode & 0o7777 != mode:
        raise Mismatch(f"SETATTR mode {mode:o}: reported {None if after is None else oct(after.mode)}")
    return 0


def op_rename(s: SlotContext) -> OpScript:
    """RENAME the slot's file to its other name, then LOOKUP that name: same handle."""
    old = slot_file_name(s.conn_index, s.slot_index, s.renamed)
    new = slot_file_name(s.conn_index, s.slot_index, not s.renamed)
    yield 14, nfs3.RENAME3args(nfs3.diropargs3(s.mix_dir, old), nfs3.diropargs3(s.mix_dir, new))
    s.renamed = not s.renamed
    found = yield 3, nfs3.LOOKUP3args(nfs3.diropargs3(s.mix_dir, new))
    if found.object.data != s.file_raw:
        raise Mismatch(f"LOOKUP {new.decode()} after RENAME: another handle")
    return 0


def op_churn(s: SlotContext) -> OpScript:
    """CREATE a new name in the churn directory and REMOVE the one made CHURN_WINDOW ops
    ago: the directory keeps changing while a few of this slot's files exist at any time."""
    name = s.churn_prefix + b"%d" % s.churn_next
    s.churn_next += 1
    yield 8, nfs3.CREATE3args(nfs3.diropargs3(s.churn_dir, name),
                              (nfs3.createmode3.GUARDED, nfs3.sattr3(0o644, None, None, None, _NO_CHANGE, _NO_CHANGE)))
    s.churn_live.append(name)
    if len(s.churn_live) > CHURN_WINDOW:
        yield 12, nfs3.REMOVE3args(nfs3.diropargs3(s.churn_dir, s.churn_live.popleft()))
    return 0


# -- the mix -------------------------------------------------------------------------------

@dataclass(frozen=True)
class MixOp:
    label: str                                  # column heading
    kind: str                                   # "metadata" or "data"
    script: Callable[[SlotContext], OpScript]
    weight: int                                 # default share of the mix


def _on_conn(script: Callable[[ConnContext], OpScript]) -> Callable[[SlotContext], OpScript]:
    """A workload.py script, run with the slot's connection context."""
    return lambda s: script(s.connection)


# A 1000-entry READDIRPLUS listing costs client and server some 200 GETATTRs' worth of
# decoding and encoding: at weight 1 in ~235 it is a quarter of the generator's CPU.
MIX_OPS: dict[str, MixOp] = {
    "getattr": MixOp("getattr", "metadata", _on_conn(op_getattr), 48),
    "lookup": MixOp("lookup", "metadata", _on_conn(op_lookup), 36),
    "access": MixOp("access", "metadata", op_access, 24),
    "readdirplus": MixOp("rdplus", "metadata", _on_conn(op_readdirplus), 1),
    "create_remove": MixOp("cr+rm", "metadata", _on_conn(op_create_remove), 18),
    "setattr": MixOp("setattr", "metadata", op_setattr, 18),
    "rename": MixOp("rename", "metadata", op_rename, 18),
    "read4k": MixOp("rd4k", "data", op_read4k, 36),
    "read64k": MixOp("rd64k", "data", op_read64k, 18),
    "write_verify": MixOp("wr+cm+rd", "data", op_write_verify, 18),
    "churn": MixOp("churn", "metadata", op_churn, 0),     # bigdir.py's directory churn only
}


def parse_mix(text: str) -> dict[str, int]:
    """``getattr=16,read4k=4`` (or ``default``) -> weights; unknown names raise ValueError."""
    if text == "default":
        return {name: op.weight for name, op in MIX_OPS.items() if op.weight}
    weights = {}
    for item in text.split(","):
        name, _, weight = item.partition("=")
        if name not in MIX_OPS:
            raise ValueError(f"unknown op {name!r}; choose from {', '.join(MIX_OPS)}")
        weights[name] = int(weight or 1)
    if not any(weights.values()):
        raise ValueError("the mix has no op with a positive weight")
    return {name: w for name, w in weights.items() if w > 0}
