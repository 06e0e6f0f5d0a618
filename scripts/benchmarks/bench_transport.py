"""Micro-benchmark of the TCP transport's per-call CPU, in one process, without a socket.

A whole server (``NfsServer``, as scripts/benchmarks/bench_dispatch.py builds it) is served
through ``RpcStreamProtocol`` with a fake transport: chunks of ``--burst`` marked call records
(as the load generator pipelines them) are written into the protocol's ``get_buffer`` and
announced with ``buffer_updated``, exactly as asyncio's selector transport does, and the
replies are counted from ``write``/``writelines``.  The same records are also handed straight
to ``Dispatcher.dispatch``; the difference is the transport's share (record reader, burst
loop, reply marks and writes), without the kernel's TCP and the event loop.

    python scripts/benchmarks/bench_transport.py [--calls N] [--rounds R] [--ops null,getattr,setattr]

Prints microseconds per call (best of ``--rounds``).  Not a test: figures depend on the
machine.  Run it with ``PYTHONPATH`` set to another checkout to compare trees.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bench_dispatch import CLIENT, bench_server, run, with_xid  # noqa: E402

from nfsd.rpc.server import RpcStreamProtocol  # noqa: E402


class CountingTransport(asyncio.Transport):
    """Takes the replies and counts their bytes; never pauses the protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return CLIENT if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def write(self, data: Any) -> None:
        self.written += len(data)
        self.writes += 1

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.written += len(data)
        self.writes += 1

    def pause_reading(self) -> None:
        raise RuntimeError("the benchmark's protocol paused reading")

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        raise RuntimeError("the benchmark's connection was aborted")


def chunks(records: list[bytes], calls: int, burst: int, first_xid: int) -> list[bytes]:
    """Marked call records, ``burst`` to a chunk, with distinct xids."""
    out = []
    for i in range(0, calls, burst):
        chunk = bytearray()
        for j in range(i, min(i + burst, calls)):
            rec = with_xid(records[j % len(records)], first_xid + j)
            chunk += (0x80000000 | len(rec)).to_bytes(4, "big") + rec
        out.append(bytes(chunk))
    return out


def run_transport(proto: RpcStreamProtocol, todo: list[bytes]) -> float:
    get_buffer, updated = proto.get_buffer, proto.buffer_updated
    start = time.process_time()
    for chunk in todo:
        n = len(chunk)
        get_buffer(-1)[:n] = chunk
        updated(n)
    return time.process_time() - start


async def main_async(args: argparse.Namespace) -> int:
    with bench_server("bench-transport-") as (server, records):
        transport = CountingTransport()
        proto = RpcStreamProtocol(server.dispatcher, set(), 1 << 20, max_inflight=1 << 30)
        proto.connection_made(transport)
        xid = 1
        for op in args.ops.split(","):
            run_transport(proto, chunks(records[op], 2000, args.burst, xid))  # warm up
            xid += 2000
            via, direct = [], []
            for _ in range(args.rounds):
                todo = chunks(records[op], args.calls, args.burst, xid)
                xid += args.calls
                via.append(run_transport(proto, todo) / args.calls * 1e6)
                direct.append(run(server, records[op], args.calls, args.burst, xid) / args.calls * 1e6)
                xid += args.calls
            print(f"{op:10s} transport+dispatch best {min(via):6.2f} us/call (median {statistics.median(via):6.2f})"
                  f"  dispatch alone best {min(direct):6.2f}  transport's share {min(via) - min(direct):5.2f}"
                  f"  ({args.rounds} x {args.calls} calls, chunks of {args.burst})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="null,getattr,setattr")
    p.add_argument("--calls", type=int, default=40000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--burst", type=int, default=8)
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
