#!/usr/bin/env python3
"""Server time to list a value directory of N results through READDIRPLUS.

Builds a synthetic export (N ``.c`` files spread over directories, plus as many others),
starts the server in-process, and sends LOOKUP ``ext:`` / ``c`` and READDIRPLUS pages
through the real dispatcher (records in, reply bytes out: no network), timing the first
listing (which takes the directory fault) and a second one.  Prints figures; target: a
10k-result listing in < 100 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nfsd.app import NfsServer, ServerConfig  # noqa: E402
from protocol import nfs3  # noqa: E402
from protocol.rpc import AUTH_SYS, Credentials, encode_call  # noqa: E402

CRED = Credentials(AUTH_SYS, 0, 0, (), b"bench")


def make_tree(root: Path, results: int, per_dir: int = 1000) -> None:
    for i in range(results):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir()
        (d / f"f{i:06d}.c").write_text("int x;\n")
        (d / f"g{i:06d}.txt").write_text("words\n")


def call(server: NfsServer, proc: int, args: object) -> object:
    buf = encode_call(1, nfs3.NFS_PROGRAM, nfs3.NFS_V3, proc, CRED)
    nfs3.NFS3.procedures[proc].args.pack(buf, args)
    reply = server.dispatcher.dispatch(bytes(buf), ("127.0.0.1", 1), 0)
    assert isinstance(reply, (bytes, bytearray)), "expected an inline reply"
    value, _ = nfs3.NFS3.procedures[proc].res.unpack(reply, 24)
    return value


def lookup(server: NfsServer, d: bytes, name: bytes) -> bytes:
    status, res = call(server, 3, nfs3.LOOKUP3args(nfs3.diropargs3(nfs3.nfs_fh3(d), name)))
    assert status == 0, status
    return res.object.data


def list_all(server: NfsServer, d: bytes, maxcount: int) -> int:
    cookie, verf, count = 0, b"\0" * 8, 0
    while True:
        args = nfs3.READDIRPLUS3args(nfs3.nfs_fh3(d), cookie, verf, maxcount // 8, maxcount)
        # The first page is normally run in a thread; the handler itself is what we time.
        result = server.nfs.READDIRPLUS(None, args)  # type: ignore[arg-type]
        buf = bytearray()
        nfs3.READDIRPLUS3res.pack(buf, result)
        status, res = result
        assert status == 0, status
        count += len(res.reply.entries)
        if res.reply.eof:
            return count
        cookie, verf = res.reply.entries[-1].cookie, res.cookieverf


async def run(results: int, maxcount: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="pysfsd-bench-sem-"))
    try:
        export = work / "export"
        export.mkdir()
        t = time.perf_counter()
        make_tree(export, results)
        print(f"made {2 * results} files in {time.perf_counter() - t:.1f} s")
        server = NfsServer(ServerConfig([str(export)], bind="127.0.0.1", port=0,
                                        state_dir=str(work / "state"), watch=False, progress=False))
        t = time.perf_counter()
        await server.start()
        print(f"start-up scan: {time.perf_counter() - t:.2f} s")
        root = next(iter(server.exports.values())).root.fh
        value_dir = lookup(server, lookup(server, root, b"ext:"), b"c")
        for label in ("first listing (directory fault)", "second listing"):
            t = time.perf_counter()
            n = list_all(server, value_dir, maxcount)
            ms = (time.perf_counter() - t) * 1000
            print(f"{label}: {n} entries in {ms:.1f} ms ({ms * 1000 / n:.1f} us/entry), "
                  f"maxcount {maxcount}")
        await server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=int, default=10_000)
    p.add_argument("--maxcount", type=int, default=1 << 20, help="READDIRPLUS maxcount (Linux: up to 1 MiB)")
    a = p.parse_args()
    asyncio.run(run(a.results, a.maxcount))


if __name__ == "__main__":
    main()
