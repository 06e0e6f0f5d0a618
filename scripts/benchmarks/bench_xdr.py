"""Micro-benchmark of the XDR hot paths, against hand-written xdrlib3 packing.

Prints per-operation times; the targets are what a server needs to keep directory listings
and attribute replies from dominating CPU time (fattr3 <= 0.5 us, 100-entry READDIRPLUS
<= 100 us).  Not a test: figures depend on the machine.

    python scripts/benchmarks/bench_xdr.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import timeit
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import xdrlib3  # noqa: E402

from protocol import nfs3  # noqa: E402
from xdr import decode, encode  # noqa: E402

MiB = 1 << 20


def sample_fattr3(i: int = 0) -> Any:
    """Attributes shaped like a regular file's on a real export."""
    t = nfs3.nfstime3(1_700_000_000 + i, 123_456_789)
    return nfs3.fattr3(nfs3.ftype3.NF3REG, 0o100644, 1, 1000, 1000, 4096 + i, 8192,
                       nfs3.specdata3(0, 0), 0x1234_5678_9ABC, 1_000_000 + i, t, t, t)


def sample_readdirplus(n: int = 100) -> Any:
    """An NFS3_OK READDIRPLUS reply with ``n`` entries, each with attributes and a handle."""
    entries = [
        nfs3.entryplus3(1_000_000 + i, f"file-{i:05d}-{'x' * (i % 8)}.txt".encode(), i + 1,
                        sample_fattr3(i), nfs3.nfs_fh3(i.to_bytes(16, "big")))
        for i in range(n)
    ]
    resok = nfs3.READDIRPLUS3resok(sample_fattr3(), b"verifier", nfs3.dirlistplus3(entries, True))
    return (nfs3.NFS3_OK, resok)


# --- xdrlib3 hand-packing, the baseline a naive implementation would use ----------------------

def xdrlib_fattr3(p: xdrlib3.Packer, a: Any) -> None:
    p.pack_enum(a.type)
    for x in (a.mode, a.nlink, a.uid, a.gid):
        p.pack_uint(x)
    p.pack_uhyper(a.size)
    p.pack_uhyper(a.used)
    p.pack_uint(a.rdev.specdata1)
    p.pack_uint(a.rdev.specdata2)
    p.pack_uhyper(a.fsid)
    p.pack_uhyper(a.fileid)
    for t in (a.atime, a.mtime, a.ctime):
        p.pack_uint(t.seconds)
        p.pack_uint(t.nseconds)


def xdrlib_post_op_attr(p: xdrlib3.Packer, a: Any) -> None:
    p.pack_bool(a is not None)
    if a is not None:
        xdrlib_fattr3(p, a)


def xdrlib_readdirplus(res: Any) -> bytes:
    p = xdrlib3.Packer()
    status, ok = res
    p.pack_enum(status)
    xdrlib_post_op_attr(p, ok.dir_attributes)
    p.pack_fopaque(8, ok.cookieverf)
    for e in ok.reply.entries:
        p.pack_bool(True)
        p.pack_uhyper(e.fileid)
        p.pack_string(e.name)
        p.pack_uhyper(e.cookie)
        xdrlib_post_op_attr(p, e.name_attributes)
        p.pack_bool(e.name_handle is not None)
        if e.name_handle is not None:
            p.pack_opaque(e.name_handle.data)
    p.pack_bool(False)
    p.pack_bool(ok.reply.eof)
    return p.get_buffer()


def xdrlib_fattr3_bytes(a: Any) -> bytes:
    p = xdrlib3.Packer()
    xdrlib_fattr3(p, a)
    return p.get_buffer()


# --- measurement ----------------------------------------------------------------------------

def per_call(stmt: str, number: int, budget: float, env: dict[str, Any]) -> float:
    """Seconds per run of ``stmt``: the best of as many batches of ``number`` runs as fit in
    ``budget`` seconds (the best, since other processes only ever add time).

    Each batch starts with an empty ``buf``; packing appends to it, as a server appends results
    to its reply buffer.  Batches are small enough that ``buf`` stays around 1 MiB."""
    timer = timeit.Timer(stmt, setup="buf = bytearray()", globals=env)
    once = timer.timeit(number)
    return min(timer.repeat(repeat=max(5, int(budget / max(once, 1e-9))), number=number)) / number


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, noisier figures")
    budget = 0.2 if ap.parse_args().quick else 1.0

    attr = sample_fattr3()
    rdp = sample_readdirplus()
    assert encode(nfs3.fattr3, attr) == xdrlib_fattr3_bytes(attr)
    assert encode(nfs3.READDIRPLUS3res, rdp) == xdrlib_readdirplus(rdp)
    fh = nfs3.nfs_fh3(bytes(16))
    write = encode(nfs3.WRITE3args, nfs3.WRITE3args(fh, 0, MiB, nfs3.stable_how.UNSTABLE, bytes(MiB)))
    read = encode(nfs3.READ3res, (nfs3.NFS3_OK, nfs3.READ3resok(attr, MiB, False, bytes(MiB))))
    write_view, read_view = memoryview(write), memoryview(read)

    env = dict(pack_attr=nfs3.fattr3.pack, pack_rdp=nfs3.READDIRPLUS3res.pack, attr=attr, rdp=rdp,
               xdrlib_fattr3_bytes=xdrlib_fattr3_bytes, xdrlib_readdirplus=xdrlib_readdirplus,
               decode=decode, nfs3=nfs3, write=write, read=read, write_view=write_view, read_view=read_view)
    cases: list[tuple[str, str, int, float | None]] = [
        ("pack fattr3", "pack_attr(buf, attr)", 10_000, 0.5e-6),
        ("pack fattr3 (xdrlib3)", "xdrlib_fattr3_bytes(attr)", 10_000, None),
        ("pack READDIRPLUS3res, 100 entries", "pack_rdp(buf, rdp)", 50, 100e-6),
        ("pack READDIRPLUS3res (xdrlib3)", "xdrlib_readdirplus(rdp)", 50, None),
        ("decode WRITE3args 1 MiB, memoryview", "decode(nfs3.WRITE3args, write_view)", 1000, None),
        ("decode WRITE3args 1 MiB, bytes", "decode(nfs3.WRITE3args, write)", 20, None),
        ("decode READ3res 1 MiB, memoryview", "decode(nfs3.READ3res, read_view)", 20, None),
        ("decode READ3res 1 MiB, bytes", "decode(nfs3.READ3res, read)", 20, None),
    ]
    print(f"{'operation':<40} {'time':>12} {'target':>10}")
    for name, stmt, number, target in cases:
        secs = per_call(stmt, number, budget, env)
        verdict = "" if target is None else f"<= {target * 1e6:g} us " + ("ok" if secs <= target else "MISSED")
        print(f"{name:<40} {secs * 1e6:>9.3f} us  {verdict}")


if __name__ == "__main__":
    main()
