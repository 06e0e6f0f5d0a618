"""scripts/benchmarks/bench_dispatch.py's cold mode (``--evict``): every record is served, in
bursts, each burst between its ``begin`` and ``end``, and the figure is the median burst's
time times the bursts (a burst slowed by something else does not move it); a failed call is
not timed as a cheap one; CREATE and REMOVE each serve names of their own."""
from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "bench_dispatch.py"
# an accepted reply (after the 4 bytes reserved for the record mark): xid, REPLY, MSG_ACCEPTED,
# an empty AUTH_NONE verifier, SUCCESS, then NFS3_OK
OK_REPLY = bytes(4) + bytes.fromhex("00000001" "00000001" "00000000" "00000000" "00000000" "00000000" "00000000")


@pytest.fixture(scope="module")
def bench():
    saved = list(sys.path)  # (the script puts the checkout on it)
    try:
        return SimpleNamespace(**runpy.run_path(str(SCRIPT)))
    finally:
        sys.path[:] = saved


def test_cold_run_serves_every_call_and_takes_the_median_burst(bench, monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    served: list[bytes] = []
    events: list[str] = []

    def dispatch(record: bytes, client: object, reserve: int) -> bytes:
        served.append(record)
        now[0] += 1.0 if record != b"slow" else 100.0  # one burst slowed by something else
        return OK_REPLY

    todo = [b"a", b"b", b"c", b"slow", b"e", b"f", b"g"]
    seconds = bench.run_cold(dispatch, lambda: events.append("begin"), lambda: events.append("end"),
                             todo, 2, bytearray(1 << 12))
    assert served == todo
    assert events == ["begin", "end"] * 4  # bursts of 2, 2, 2 and 1
    assert seconds == pytest.approx(2.0 * 4)  # bursts took 2, 101, 2, 1 s: the median 2


def test_a_failed_call_stops_the_run(bench) -> None:
    noent = OK_REPLY[:28] + (2).to_bytes(4, "big")  # NFS3ERR_NOENT
    with pytest.raises(RuntimeError, match="call failed"):
        bench.run_cold(lambda *_: noent, lambda: None, lambda: None, [b"a"], 1, bytearray(1 << 12))
    bench.check_reply(OK_REPLY)


def test_create_then_remove_serve_every_name_once(bench, capsys) -> None:
    # every call is answered NFS3_OK (``check_reply``, bursts of one): each CREATE made a new
    # name and each REMOVE found the one CREATE made, across the warm-up and the rounds
    assert bench.main(["--ops", "create,remove", "--calls", "40", "--rounds", "2", "--burst", "1",
                       "--async-export"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["create", "remove"]


def test_a_lookup_of_an_absent_name_is_timed_as_served(bench, capsys) -> None:
    # lookupmiss is answered NFS3ERR_NOENT, its expected status: the run times it (the VM's
    # LOOKUP before each create) instead of stopping as on a failed call; any other status
    # for it still stops the run
    assert bench.main(["--ops", "lookupmiss", "--calls", "20", "--rounds", "1", "--burst", "1"]) == 0
    assert capsys.readouterr().out.split()[0] == "lookupmiss"
    with pytest.raises(RuntimeError, match="call failed"):
        bench.check_reply(OK_REPLY, bench.EXPECTED_STATUS["lookupmiss"])
