#!/usr/bin/env python3
"""The MIME sniff of plain text: CPU per sniff with libmagic's full database against the one
narrowed to the buffer's first byte (nfsd/index/transducers/magicdb.py), alternated in one
process, and whether both answer every plain-text buffer of a corpus the same.

    python scripts/benchmarks/bench_sniff.py [--calls 2000] [--rounds 2] [--check]
        [--roots /etc,/usr/include,...] [--random 5000]

Prints figures; with ``--check`` also every buffer the two databases answer differently
(there should be none) and exits 1 if there is one.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import magic  # noqa: E402

from nfsd.index.transducers import magicdb  # noqa: E402
from nfsd.index.transducers.interface import Sniffer  # noqa: E402

ROOTS = "/etc,/usr/share/doc,/usr/share/perl,/usr/share/misc,/usr/share/man,/usr/lib/python3.11,/usr/include"


def plain_heads(roots: list[str], limit: int | None = None) -> list[bytes]:
    """The first 16 KiB of every plain-text file under ``roots`` (at most ``limit`` files)."""
    found: list[bytes] = []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                try:
                    if os.path.islink(path) or not os.path.isfile(path):
                        continue
                    with open(path, "rb") as f:
                        data = f.read(16 << 10)
                except OSError:
                    continue
                if magicdb.is_plain(data):
                    found.append(data)
                    if limit is not None and len(found) >= limit:
                        return found
    return found


def check(roots: list[str], randoms: int) -> int:
    rng = random.Random(2)
    heads = plain_heads(roots)
    buffers = heads + [h[:rng.randint(2, 100)] for h in heads[::3]] + [h[:rng.randint(2, magicdb.SHORT)] for h in heads[1::3]]
    buffers += [bytes(rng.choice(magicdb.PLAIN) for _ in range(rng.randint(2, 80))) for _ in range(randoms)]
    buffers += [bytes(rng.choice(magicdb.PLAIN) for _ in range(rng.randint(2, magicdb.SHORT))) for _ in range(randoms)]
    full = magic.Magic(mime=True)
    narrow = magicdb.NarrowDatabases(limit=256)
    handles: dict[str, Any] = {}  # per narrowed database (first byte, and short buffers apart)
    differ = 0
    try:
        for data in buffers:
            path = narrow.path(data[0], len(data))
            assert path is not None
            if path not in handles:
                handles[path] = magic.Magic(mime=True, magic_file=path)
            want, got = full.from_buffer(data), handles[path].from_buffer(data)
            if want != got:
                differ += 1
                print(f"DIFFER {want} / {got}: {data[:60]!r}")
    finally:
        narrow.close()
    print(f"{len(heads)} plain file heads, {len(buffers)} buffers over {len(handles)} narrowed databases: "
          f"{differ} answered differently")
    return differ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="compare both databases over a corpus")
    ap.add_argument("--roots", default=ROOTS, help="comma list of directories for --check")
    ap.add_argument("--random", type=int, default=5000, help="random plain strings for --check")
    args = ap.parse_args()
    sniffers = {"full": Sniffer(narrow=False), "narrowed": Sniffer(narrow_after=0)}
    for name, s in sniffers.items():
        s.mime(b"line 0\n")  # load the handle (and write the narrowed database) first
    for r in range(args.rounds):
        for name, s in sniffers.items():
            cpu = time.thread_time()
            for k in range(args.calls):
                s.mime(b"line %d\n" % k)
            print(f"round {r + 1} {name:9} CPU {(time.thread_time() - cpu) / args.calls * 1e6:7.1f} us per sniff")
    for s in sniffers.values():
        s.release()
    if args.check and check(args.roots.split(","), args.random):
        sys.exit(1)


if __name__ == "__main__":
    main()
