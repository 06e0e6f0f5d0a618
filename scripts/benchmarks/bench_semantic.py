#!/usr/bin/env python3
"""Server time to list query directories of known sizes through READDIRPLUS, at scale.

Builds a synthetic export of ``--files`` empty (sparse) files, 1000 per directory, whose
fields give result sets of known sizes: ``ext`` is ``c`` for 10,000 files, ``h`` for 1,000,
``txt`` for the rest; file i has size i (so ``size:/<10000`` has 10,000 results) and a UTC
mtime of day i % 1000 after 2020-01-01.  It starts the server in-process, waits for the
start-up scan, then for each query looks it up and lists it page by page through the NFS
handler (READDIRPLUS, reply encoded as on the wire, no network), timing the first listing
(which takes the directory fault) and a second one, in wall time and in the process's CPU
time of the thread that runs the handlers (the server's own).  Plain, OR, NOT, range and pattern
queries of the same result counts side by side; RSS after each.

Targets (issue 12): a 10,000-result first listing < 50 ms of server time and a 1,000-result
one < 20 ms at 1M files; RSS < 300 MB at 1M files whatever is listed (the peak: VmHWM, printed after each query).

    python3 scripts/benchmarks/bench_semantic.py --files 200000 [--keep DIR] [--big]
"""
from __future__ import annotations

import argparse
import asyncio
import calendar
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nfsd.app import NfsServer, ServerConfig  # noqa: E402
from nfsd.rpc.call import CallContext  # noqa: E402
from protocol import nfs3  # noqa: E402
from protocol.rpc import AUTH_SYS, Credentials  # noqa: E402

CRED = Credentials(AUTH_SYS, 0, 0, (), b"bench")
CTX = CallContext(CRED, ("127.0.0.1", 1))
DAY0 = calendar.timegm((2020, 1, 1, 12, 0, 0))


def make_tree(root: Path, files: int, per_dir: int = 1000) -> None:
    c_every, h_every = max(files // 10_000, 1), max(files // 1_000, 1)
    for i in range(files):
        if i % per_dir == 0:
            d = root / f"d{i // per_dir:04d}"
            d.mkdir()
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        ext = "c" if i % c_every == 0 else "h" if i % h_every == 1 else "txt"
        fd = os.open(f"f{i:07d}.{ext}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd)
        os.ftruncate(fd, i)
        when = DAY0 + (i % 1000) * 86400
        os.utime(fd, (when, when))
        os.close(fd)
        if i % per_dir == per_dir - 1 or i == files - 1:
            os.close(dfd)


def lookup(server: NfsServer, d: bytes, name: bytes) -> bytes:
    status, res = server.nfs.LOOKUP(CTX, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(nfs3.nfs_fh3.cls(d), name)))
    assert status == 0, (name, status)
    return res.object.data


PEAK = [0.0, 0.0]  # the largest RssAnon and RssFile seen between pages of a listing (MB)


def list_all(server: NfsServer, d: bytes, maxcount: int, watch: bool = False) -> tuple[int, int, float, float]:
    """(entries, pages, wall s, server CPU s) of a whole listing, each page encoded as for
    the wire (the times are those of the handler and the encoding: the checks below decode
    the reply, as the client would, and are not counted).  Cookies must only grow (a page
    resumes exactly after the last one); with ``watch``, the RSS is sampled after every page
    (``PEAK``): a listing streams in bounded memory."""
    cookie, verf, count, pages, wall, spent = 0, b"\0" * 8, 0, 0, 0.0, 0.0
    while True:
        args = nfs3.READDIRPLUS3args.cls(nfs3.nfs_fh3.cls(d), cookie, verf, maxcount, maxcount)
        t, c = time.perf_counter(), server_cpu()
        result = server.nfs.READDIRPLUS(CTX, args)
        buf = bytearray()
        nfs3.READDIRPLUS3res.pack(buf, result)
        wall, spent = wall + time.perf_counter() - t, spent + server_cpu() - c
        status, res = nfs3.READDIRPLUS3res.unpack(bytes(buf))[0]
        assert status == 0, status
        assert len(buf) <= maxcount, (len(buf), maxcount)
        entries = res.reply.entries
        assert all(a.cookie < b.cookie for a, b in zip(entries, entries[1:])) and entries[0].cookie > cookie
        count += len(entries)
        pages += 1
        if watch:
            rss = rss_mb()
            PEAK[0], PEAK[1] = max(PEAK[0], rss.anon), max(PEAK[1], rss.file)
        if res.reply.eof:
            return count - 2, pages, wall, spent  # "." and ".."
        cookie, verf = entries[-1].cookie, res.cookieverf


class Rss(float):
    """Resident MB, shown with its anonymous part (the heap) and its file part (LMDB's
    memory-mapped pages, which the kernel may drop at will)."""

    anon: float
    file: float
    hwm: float  # the process's peak RSS so far (VmHWM): the server's, which runs in-process

    def __format__(self, spec: str) -> str:
        return f"{float(self):{spec}} MB (anon {self.anon:.0f}, file {self.file:.0f})"


def rss_mb() -> Rss:
    got: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                got[key] = int(rest.split()[0]) / 1024
    rss = Rss(got.get("VmRSS", 0.0))
    rss.anon, rss.file = got.get("RssAnon", 0.0), got.get("RssFile", 0.0)
    rss.hwm = got.get("VmHWM", 0.0)
    return rss


def cpu() -> float:
    """The process's CPU time (utime + stime, as /proc has it, at ns resolution)."""
    return time.process_time()


def server_cpu() -> float:
    """CPU time of this thread, which runs the NFS handlers of the listing: the server's own
    time for it, even while the content scan runs in other threads."""
    return time.thread_time()


QUERIES = [  # label, path below the export root
    ("plain 10k", [b"ext:", b"c"]),
    ("OR    11k", [b"ext:", b"c|h"]),
    ("range 10k", [b"size:", b"<10000"]),
    ("plain  1k", [b"ext:", b"h"]),
    ("range  1k", [b"size:", b"1000..1999"]),
    ("glob   1k", [b"name:", b"f0001*"]),
    ("NOT   11k", [b"ext:", b"!txt"]),
    ("NOT+AND 1k", [b"ext:", b"!c", b"size:", b"1000..1999"]),
    ("date range", [b"mtime:", b"2020-01..2020-03"]),
    ("facets", [b"ext:"]),
]


async def run(files: int, maxcount: int, keep: Path | None, big: bool, profile: str | None, early: bool) -> None:
    work = keep or Path(tempfile.mkdtemp(prefix="pysfsd-bench-sem-"))
    export = work / "export"
    try:
        if not export.exists():
            export.mkdir(parents=True)
            t = time.perf_counter()
            make_tree(export, files)
            print(f"made {files} files in {time.perf_counter() - t:.1f} s")
        server = NfsServer(ServerConfig([str(export)], bind="127.0.0.1", port=0,
                                        state_dir=str(work / "state"), watch=False, progress=False))
        t, c = time.perf_counter(), cpu()
        await server.start()
        fs = next(iter(server.exports.values()))
        while not fs.stat_ready.is_set() and not server.indexed.is_set():
            await asyncio.sleep(0.01)
        if not server.indexed.is_set():  # a first index: the stat pass is done
            wall = time.perf_counter() - t
            print(f"stat pass (name, ext, owner, group, size, mtime answer): {wall:.1f} s wall, "
                  f"{cpu() - c:.1f} s CPU ({files / wall:.0f} files/s, {files / (cpu() - c):.0f} per CPU s); "
                  f"RSS {rss_mb():.0f}", flush=True)
        if early:
            print("querying now, while the content tier is extracted in the background", flush=True)
            await query_all(server, fs, maxcount, big, profile, files)
        await server.indexed.wait()  # content query directories answer JUKEBOX until then
        wall = time.perf_counter() - t
        print(f"start-up scan: {wall:.1f} s wall, {cpu() - c:.1f} s CPU ({files / wall:.0f} files/s); "
              f"RSS {rss_mb():.0f}", flush=True)
        if early:
            print("querying again, the index complete", flush=True)
        await query_all(server, fs, maxcount, big, profile, files)
        await asyncio.sleep(1.5)  # the periodic flush keeps LMDB's mapped pages in bounds
        rss = rss_mb()
        print(f"RSS after listing, 1.5 s later: {rss:.0f}; peak (VmHWM) {rss.hwm:.0f} MB", flush=True)
        await server.stop()
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def big_queries(files: int) -> list[tuple[str, list[bytes]]]:
    """Three directories of a fifth of the files each (200,000 at 1M files: file i has size
    i), then one of every file, and the two of nearly every file."""
    fifth = files // 5
    return [(f"range 1/5 #{k + 1}", [b"size:", b"%d..%d" % (k * fifth, (k + 1) * fifth - 1)]) for k in range(3)] + [
        ("range all", [b"size:", b">=0"]),
        ("plain all-but-11k", [b"ext:", b"txt"]), ("NOT all-but-10k", [b"ext:", b"!c"])]


async def query_all(server: NfsServer, fs: object, maxcount: int, big: bool, profile: str | None,
                    files: int = 0) -> None:
    """Look up and list each query twice: the first listing takes the directory fault."""
    root = fs.root.fh  # type: ignore[attr-defined]
    idle = rss_mb()
    print(f"RSS before listing: {idle:.0f}", flush=True)
    for label, path in QUERIES + (big_queries(files) if big else []):
        d = root
        for name in path:
            d = lookup(server, d, name)
        line = f"{label:<18} {'/'.join(p.decode() for p in path):<32}"
        for which in ("first", "second"):
            prof = None
            if profile and label.startswith(profile) and which == "first":
                import cProfile
                prof = cProfile.Profile()
                prof.enable()
            PEAK[:] = [0.0, 0.0]
            n, pages, wall, spent = list_all(server, d, maxcount, watch=big)
            if prof is not None:
                prof.disable()
                import pstats
                pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            ms, cpu_ms = wall * 1000, spent * 1000
            line += f" {which} {ms:7.1f} ms ({cpu_ms:7.1f} CPU)"
        peak = f" (peak between pages: anon {PEAK[0]:.0f}, file {PEAK[1]:.0f})" if big else ""
        rss = rss_mb()
        print(f"{line}  {n:>7} entries, {pages} pages; RSS {rss:.0f}{peak}; VmHWM {rss.hwm:.0f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--maxcount", type=int, default=1 << 20, help="READDIRPLUS maxcount (Linux: up to 1 MiB)")
    p.add_argument("--keep", type=Path, help="build the tree and state here once and reuse them")
    p.add_argument("--big", action="store_true", help="also list directories of nearly every file")
    p.add_argument("--early", action="store_true",
                   help="query right after the stat pass of a first index, while content is extracted"
                        " (and again once it is)")
    p.add_argument("--profile", metavar="LABEL", help="profile the first listing of this query (cProfile)")
    a = p.parse_args()
    asyncio.run(run(a.files, a.maxcount, a.keep, a.big, a.profile, a.early))


if __name__ == "__main__":
    main()
