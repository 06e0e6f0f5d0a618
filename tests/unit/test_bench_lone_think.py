"""scripts/benchmarks/bench_lone_think.py's arithmetic: the latency summary (is a mean a slow
median or a few slow calls), the histogram, the per-call timeline file, and ``--jobs``:
which of the server's own jobs (scripts/benchmarks/jobtrace's logs) a slow call overlapped,
and what CPU those jobs spent among the calls."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "bench_lone_think.py"


@pytest.fixture(scope="module")
def bench():
    saved = list(sys.path)  # (the script puts its helpers' folders on it)
    try:
        return SimpleNamespace(**runpy.run_path(str(SCRIPT)))
    finally:
        sys.path[:] = saved


def test_summary_tells_a_tail_from_a_slow_median(bench) -> None:
    # 90 calls of 100 us and 10 of 10 ms: the mean is 1090 us, 1000 of it the slowest tenth's
    latencies = [100e-6] * 90 + [10e-3] * 10
    figures = bench.summary(latencies[::-1])  # (order does not matter)
    assert figures["mean_us"] == pytest.approx(1090)
    assert figures["tail_us"] == pytest.approx(1000)
    assert figures["p50_us"] == pytest.approx(100)
    assert figures["p90_us"] == pytest.approx(10_000)
    assert figures["p99_us"] == pytest.approx(10_000)
    assert figures["max_us"] == pytest.approx(10_000)
    # a slow median: every call 1 ms, the tail only its tenth of the mean
    even = bench.summary([1e-3] * 100)
    assert even["tail_us"] == pytest.approx(100) and even["p50_us"] == pytest.approx(1000)


def test_histogram_counts_calls_per_bucket(bench) -> None:
    text = bench.histogram([50e-6, 100e-6, 150e-6, 1.5e-3, 0.2])
    assert text == "<=100:2 <=200:1 <=2000:1 >50000:1"


def test_timeline_has_every_call_by_server_and_round(bench, tmp_path: Path) -> None:
    call = bench.Call
    results = {("pysfsd", 0.001): [{"calls": [call(10.0, 3, 250e-6, 0.0), call(10.5, 8, 400e-6, 0.0)]},
                                   {"calls": [call(20.0, 3, 300e-6, 120e-6)]}],
               ("ganesha", 0.001): [{"calls": [call(30.0, 8, 200e-6, 0.0)]}]}
    out = tmp_path / "t.csv"
    bench.write_timeline(out, results)
    assert out.read_text().splitlines() == [
        "server,think_ms,round,sent,procedure,latency_us,client_waited_us",
        "pysfsd,1,0,10.000000,LOOKUP,250,0",
        "pysfsd,1,0,10.500000,CREATE,400,0",
        "pysfsd,1,1,20.000000,LOOKUP,300,120",
        "ganesha,1,0,30.000000,CREATE,200,0",
    ]


def test_slow_calls_are_put_to_the_job_that_ran_meanwhile_or_to_whoever_waited(bench, tmp_path: Path) -> None:
    call = bench.Call
    calls = [call(100.000, 3, 300e-6, 0.0),       # the median LOOKUP
             call(100.010, 3, 300e-6, 0.0),
             call(100.020, 3, 2300e-6, 0.0),      # 2 ms over: a flush ran meanwhile
             call(100.030, 3, 1300e-6, 900e-6),   # 1 ms over: the client waited 0.9 ms for a CPU
             call(100.040, 3, 1300e-6, 0.0),      # 1 ms over: the serving thread waited 0.8 ms
             call(100.050, 3, 800e-6, 0.0)]       # 0.5 ms over: nobody to blame
    calls += [call(100.060 + i / 100, 3, 300e-6, 0.0) for i in range(5)]  # (the median: 300 us)
    (tmp_path / "jobs-7.log").write_text(
        "7 pysfsd-io_0 flush 100.019 100.021\n"
        "7 MainThread gc0 100.0305 100.03051\n"    # a young collection of 10 us: not counted
        "7 MainThread serve 100.0402 100.0412 800\n"
        "7 MainThread serve 100.0502 100.0507 10\n")
    found = bench.attribute(calls, tmp_path)
    assert found["flush"] == (1, pytest.approx(2e-3))
    assert found["client waited for a CPU"] == (1, pytest.approx(1e-3))
    assert found["server waited for a CPU"] == (1, pytest.approx(1e-3))
    assert found["no job of the server's"] == (8, pytest.approx(0.5e-3))
    assert sum(count for count, _ in found.values()) == len(calls)


def test_job_cpu_sums_the_jobs_that_began_among_the_calls_by_kind(bench, tmp_path: Path) -> None:
    call = bench.Call
    calls = [call(200.0, 12, 300e-6, 0.0), call(200.5, 12, 300e-6, 0.0), call(201.0, 12, 500e-6, 0.0)]
    (tmp_path / "jobs-7.log").write_text(
        "7 pysfsd-io_0 flush 199.9 199.91 900.0\n"          # before the first call: not counted
        "7 pysfsd-io_0 flush 200.2 200.21 1500.5\n"
        "7 pysfsd-io_0 flush 200.7 200.72 2500.0\n"
        "7 pysfsd-io_1 store-sync 201.0004 201.003 600.0\n"  # began before the last call ended
        "7 pysfsd-io_0 flush 201.001 201.01 700.0\n"          # after it ended: not counted
        "7 MainThread serve 200.5 200.5003 40\n"              # a serve's figure is its run delay
        "7 MainThread gc1 200.6 200.601\n")                   # (a collection: no CPU logged)
    (tmp_path / "jobs-8.log").write_text("8 pysfsd-io_0 inbox 200.3 200.3003 250.0\n")
    found = bench.job_cpu(calls, tmp_path)
    assert found == {"flush": (2, pytest.approx(4000.5e-6)), "store-sync": (1, pytest.approx(600e-6)),
                     "inbox": (1, pytest.approx(250e-6))}
    assert bench.job_cpu([], tmp_path) == {}


def test_paired_ratio_is_the_median_of_each_rounds_own_ratio(bench) -> None:
    # the load changes from block to block: each block's pair gives a ratio (0.95, 0.85,
    # 1.0), the median of those is the figure (the ratio of the medians, 170/200, is not)
    first = [{"cpu_us": 100.0}, {"cpu_us": 200.0}, {"cpu_us": 400.0}]
    variant = [{"cpu_us": 95.0}, {"cpu_us": 170.0}, {"cpu_us": 400.0}]
    assert bench.paired_ratio(variant, first) == pytest.approx(0.95)
    assert bench.paired_ratio(first, first) == pytest.approx(1.0)


def test_blocks_refuse_jobs(bench) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--blocks", "2", "--jobs"])
