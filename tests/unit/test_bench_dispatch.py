"""scripts/benchmarks/bench_dispatch.py's cold mode (``--evict``): every record is served, in
bursts, each burst between its ``begin`` and ``end``, and the figure is the median burst's
time times the bursts (a burst slowed by something else does not move it)."""
from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "bench_dispatch.py"


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
        return b"reply"

    todo = [b"a", b"b", b"c", b"slow", b"e", b"f", b"g"]
    seconds = bench.run_cold(dispatch, lambda: events.append("begin"), lambda: events.append("end"),
                             todo, 2, bytearray(1 << 12))
    assert served == todo
    assert events == ["begin", "end"] * 4  # bursts of 2, 2, 2 and 1
    assert seconds == pytest.approx(2.0 * 4)  # bursts took 2, 101, 2, 1 s: the median 2
