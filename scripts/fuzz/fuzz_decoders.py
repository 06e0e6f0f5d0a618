#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of everything that decodes network bytes.

One entry point: the first input byte selects the target, the rest is its input:

* the record-marking reader (``RecordReader``), fed in chunks, with a small bound;
* the RPC call header and credentials (``parse_call``);
* the embedded portmapper's dispatcher, a whole call record in, a reply (or nothing) out;
* the decoder of every distinct argument and result type of NFSv3, MOUNT v3, portmap v2
  and rpcbind v3/v4.

Each may only raise its documented error (``RecordTooLarge``; ``CallRejected``,
``NotACall``, ``XdrError``; ``XdrError``), and what a decoder accepts must encode again and
decode to the same value.  Anything else is a crash: libFuzzer stops and saves the input as
``crash-*``.  The generated XDR decoders are instrumented too (they are compiled at run time,
so ``instrument_imports`` alone would not see them).

    pip install -e '.[fuzz,test]'
    python scripts/fuzz/fuzz_decoders.py --seeds corpus/          # valid encodings to start from
    python scripts/fuzz/fuzz_decoders.py -max_total_time=300 -rss_limit_mb=1024 corpus/
    python scripts/fuzz/fuzz_decoders.py --list                   # the targets, by selector byte

``tests/unit/test_fuzz_decoders.py`` holds the property-based (hypothesis) counterparts run in CI.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["xdr", "protocol"]):
    from protocol import mount3, nfs3, portmap, rpcbind
    from protocol.record import RecordReader, RecordTooLarge
    from protocol.rpc import CallRejected, NotACall, decode_reply, parse_call
    from xdr import XdrError, XdrType, decode, encode


def _types() -> list[tuple[str, XdrType]]:
    seen: set[int] = set()
    out = []
    for program in (nfs3.NFS3, mount3.MOUNT3, portmap.PORTMAP2, rpcbind.RPCBIND3, rpcbind.RPCBIND4):
        for proc in program.procedures.values():
            for role, t in (("args", proc.args), ("res", proc.res)):
                if id(t) not in seen:
                    seen.add(id(t))
                    _pack, unpack = t.compiled()
                    atheris.instrument_func(unpack)
                    out.append((f"{program.name}.{proc.name}.{role}", t))
    return out


def record_reader(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    bound = fdp.ConsumeIntInRange(0, 512)
    reader = RecordReader(bound)
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
        try:
            records = reader.feed(chunk)
        except RecordTooLarge:
            return
        assert reader.buffered <= bound + 4, (reader.buffered, bound)
        assert all(len(r) <= bound for r in records)


def call_header(data: bytes) -> None:
    try:
        call = parse_call(data)
    except CallRejected as rej:
        xid, _body, off = decode_reply(rej.reply)
        assert xid == int.from_bytes(data[:4], "big") and off == len(rej.reply)
    except (NotACall, XdrError):
        pass
    else:
        assert 0 < call.args_offset <= len(data)


def _portmap_dispatcher() -> Callable[[bytes], None]:
    with atheris.instrument_imports(include=["nfsd"]):
        from nfsd.rpc.dispatch import Dispatcher
        from nfsd.discovery.portmap_service import PORTMAP2_TCP, PortmapService
    dispatcher = Dispatcher()
    dispatcher.register(PORTMAP2_TCP, PortmapService())

    def portmap_dispatch(data: bytes) -> None:
        reply = dispatcher.dispatch(data, ("127.0.0.1", 700), 0)
        assert reply is None or isinstance(reply, (bytes, bytearray)), reply
        if reply is not None:
            decode_reply(bytes(reply))
    return portmap_dispatch


def decoder(t: XdrType) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        try:
            value, end = t.unpack(memoryview(data), 0)
        except XdrError:
            return
        assert 0 <= end <= len(data)
        assert decode(t, encode(t, value)) == value
    return target


TYPES = _types()
TARGETS: list[tuple[str, Callable[[bytes], None]]] = (
    [("record-reader", record_reader), ("call-header", call_header), ("portmap-dispatch", _portmap_dispatcher())]
    + [(name, decoder(t)) for name, t in TYPES])


def one_input(data: bytes) -> None:
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)][1](data[1:])


def write_seeds(directory: Path) -> int:
    """Valid inputs for every target: libFuzzer mutates them rather than finding the
    structure from nothing."""
    from hypothesis import HealthCheck, given, settings
    from tests.xdr_strategies import values_of
    from protocol.record import frame
    from protocol.rpc import encode_call
    from tests.rpc_client import ROOT
    directory.mkdir(parents=True, exist_ok=True)
    count = 0

    def save(selector: int, payload: bytes) -> None:
        nonlocal count
        (directory / f"seed-{selector:03d}-{count:05d}").write_bytes(bytes([selector]) + payload)
        count += 1
    call = bytes(encode_call(1, 100000, 2, 3, ROOT)) + encode(portmap.mapping, portmap.mapping(100003, 3, 6, 0))
    save(0, bytes([200]) + frame(call, 7) + frame(b"", 1))
    save(1, call)
    save(2, call)
    def examples(selector: int, t: XdrType) -> Callable[[], None]:
        @settings(max_examples=8, database=None, suppress_health_check=list(HealthCheck))
        @given(values_of(t))
        def one(value: Any) -> None:
            save(selector, encode(t, value))
        return one
    for selector, (_, t) in enumerate(TYPES, start=3):
        examples(selector, t)()
    return count


def main() -> None:
    if "--list" in sys.argv:
        for i, (name, _) in enumerate(TARGETS):
            print(i, name)
        return
    if "--seeds" in sys.argv:
        where = Path(sys.argv[sys.argv.index("--seeds") + 1])
        print(f"{write_seeds(where)} seed inputs in {where}")
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("PYSFSD_TRACE", "0")
    main()
