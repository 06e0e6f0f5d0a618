"""CPU per CREATE and REMOVE as the server pays it, without the network; prints figures.

    python scripts/benchmarks/bench_namespace.py [--calls N] [--rounds R] [--dir DIR] [--no-watch] [--dirs]

A whole ``NfsServer`` (watcher, directory fsyncs, the handle table's group commit, the index)
runs in this process; encoded CREATE GUARDED records, then REMOVE records of the same names,
go through ``Dispatcher.dispatch`` in bursts of 32 as the event loop serves pipelined calls
(``begin_burst``, the calls, ``end_burst`` and its held fsync); ``--dirs``: MKDIR and RMDIR.  Per round: the process's
CPU (user + system, every thread) per call while the calls come, then per call for the
index flush that applies their notes.  Rounds after the first create on inode numbers the
previous round freed (tombstones in the index), as a CREATE after removals does.

``--dir``: where the export and state go (default /tmp).  On ext4 without a journal (this
machine's root) a create costs the kernel 4-300 µs depending on what was deleted in its
block group within the last minute (docs/design.rst); a journaled file system (a loop
device: ``mkfs.ext4 img; mount -o loop img DIR``) shows the server's own part steadily.
Compare trees by running this script from each (``PYTHONPATH=TREE``), alternated.  Not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import AsyncIterator, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol import nfs3  # noqa: E402
from protocol.nfs3 import NFS3  # noqa: E402
from protocol.rpc import AUTH_SYS, Credentials  # noqa: E402
from nfsd.app import NfsServer, ServerConfig  # noqa: E402
from nfsd.rpc.client import CallEncoder  # noqa: E402

BURST = 32
MARK = 4  # the record mark CallEncoder puts before each call
CRED = Credentials(AUTH_SYS, uid=0, gid=0, gids=(), machinename=b"bench")
NO_CHANGE = (nfs3.time_how.DONT_CHANGE, None)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(server: NfsServer, records: list[bytes]) -> tuple[float, float]:
    """(CPU seconds while the calls are served, CPU seconds of the index flush after)."""
    d = server.dispatcher
    loop = asyncio.get_running_loop()
    start = cpu()
    for i in range(0, len(records), BURST):
        d.begin_burst()
        for record in records[i:i + BURST]:
            reply = d.dispatch(record[MARK:], ("127.0.0.1", 1), MARK)
            if not isinstance(reply, (bytes, bytearray)) and reply is not None:
                await reply
        held = d.end_burst()
        if held is not None:
            await held
        await asyncio.sleep(0)  # the watcher reads its events, as between bursts
    served = cpu()
    await asyncio.sleep(0.05)
    for fs in server.exports.values():
        await loop.run_in_executor(server.executor, fs.index.flush)
    return served - start, cpu() - served


@contextlib.asynccontextmanager
async def scratch_server(where: str, prefix: str, watch: bool = True,
                         fill: Callable[[str], None] | None = None) -> AsyncIterator[NfsServer]:
    """A started and indexed server in this process, exporting a new directory under
    ``where`` that holds ``scratch/`` (``fill``-ed with files first, if given); stopped and
    removed after."""
    base = tempfile.mkdtemp(prefix=prefix, dir=where)
    export = os.path.join(base, "export")
    os.makedirs(os.path.join(export, "scratch"))
    if fill is not None:
        fill(os.path.join(export, "scratch"))
    server = NfsServer(ServerConfig(exports=[f'"{export}" *(rw,no_root_squash,insecure)'],
                                    state_dir=os.path.join(base, "state"), bind="127.0.0.1", port=0,
                                    register=False, locks=False, watch=watch))
    try:
        await server.start()
        await server.indexed.wait()
        yield server
    finally:
        await server.stop()
        shutil.rmtree(base, ignore_errors=True)


def per_call(seconds: tuple[float, float], calls: int) -> tuple[float, float]:
    """``run``'s (calls, index flush) CPU seconds, per call."""
    return seconds[0] / calls, seconds[1] / calls


def report(results: dict[str, list[tuple[float, float]]]) -> None:
    """Per operation, from each round's (calls, index flush) CPU seconds per call: the
    medians in µs."""
    for op, runs in results.items():
        total = [1e6 * (a + b) for a, b in runs]
        print(f"  {op:8s} total median {statistics.median(total):6.1f} min {min(total):6.1f}   "
              f"calls median {statistics.median(1e6 * a for a, _ in runs):5.1f}   "
              f"flush median {statistics.median(1e6 * b for _, b in runs):5.1f}")


async def bench(calls: int, rounds: int, where: str, watch: bool, dirs: bool) -> None:
    async with scratch_server(where, "bench-namespace-", watch) as server:
        fs = next(iter(server.exports.values()))
        export = fs.local.root_path
        scratch = nfs3.nfs_fh3(fs.local.lookup(fs.local.root, b"scratch").fh)
        enc = CallEncoder(NFS3, CRED)
        how = (nfs3.createmode3.GUARDED, nfs3.sattr3(0o644, None, None, None, NO_CHANGE, NO_CHANGE))
        make_op, unmake_op = ("MKDIR", "RMDIR") if dirs else ("CREATE", "REMOVE")
        results: dict[str, list[tuple[float, float]]] = {make_op: [], unmake_op: []}
        for k in range(rounds):
            names = [b"f%d-%d" % (k, i) for i in range(calls)]
            if dirs:
                attrs = nfs3.sattr3(0o755, None, None, None, NO_CHANGE, NO_CHANGE)
                makes = [enc.record(9, nfs3.MKDIR3args(nfs3.diropargs3(scratch, n), attrs)) for n in names]
                unmakes = [enc.record(13, nfs3.RMDIR3args(nfs3.diropargs3(scratch, n))) for n in names]
            else:
                makes = [enc.record(8, nfs3.CREATE3args(nfs3.diropargs3(scratch, n), how)) for n in names]
                unmakes = [enc.record(12, nfs3.REMOVE3args(nfs3.diropargs3(scratch, n))) for n in names]
            results[make_op].append(per_call(await run(server, makes), calls))
            if len(os.listdir(os.path.join(export, "scratch"))) != calls:
                raise SystemExit(f"{make_op} failed: not every name is there")
            results[unmake_op].append(per_call(await run(server, unmakes), calls))
            if os.listdir(os.path.join(export, "scratch")):
                raise SystemExit(f"{unmake_op} failed: names are left")
        print(f"{calls} calls x {rounds} rounds, bursts of {BURST}, export in {where}, watcher "
              f"{'on' if watch else 'off'}; CPU per call (µs): total = calls + index flush")
        report(results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=3000, help="CREATEs (then REMOVEs) per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--dir", default="/tmp", help="where the export and state go")
    p.add_argument("--no-watch", action="store_true", help="without the inotify watcher (its echo's cost)")
    p.add_argument("--dirs", action="store_true", help="MKDIR and RMDIR instead of CREATE and REMOVE")
    args = p.parse_args()
    asyncio.run(bench(args.calls, args.rounds, args.dir, not args.no_watch, args.dirs))


if __name__ == "__main__":
    main()
