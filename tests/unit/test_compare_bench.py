"""scripts/vm/compare_bench.py's arithmetic: what the ``sync`` export costs per phase is a
``sync`` server's mean minus that of its ``async`` twin of the same run (same workers, same
tree), and nothing for a server without a twin."""
from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vm" / "compare_bench.py"


@pytest.fixture(scope="module")
def compare_bench():
    spec = importlib.util.spec_from_file_location("compare_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sync_cost_pairs_each_sync_server_with_its_async_twin(compare_bench) -> None:
    results = {
        "pysfsd": [{"create": (3.0, 0.6)}, {"create": (5.0, 0.8)}],      # mean 4.0 s, 0.7 CPU
        "pysfsd-async": [{"create": (1.5, 0.5)}, {"create": (2.5, 0.3)}],  # mean 2.0 s, 0.4 CPU
        "pysfsd-w2@base": [{"create": (6.0, None)}],                     # CPU not known
        "pysfsd-async-w2@base": [{"create": (2.0, 0.2)}],
        "pysfsd-w2": [{"create": (9.0, 1.0)}],                           # no twin in the run
        "ganesha": [{"create": (1.0, 0.1)}],
    }
    lines = compare_bench.sync_cost(results).splitlines()
    assert len(lines) == 2, lines
    cells = lines[1].split()
    assert cells[0] == "create"
    text = " ".join(cells[1:])
    assert "pysfsd: +2.00 / +0.30" in text
    assert "pysfsd-w2@base: +4.00 / -" in text
    assert "pysfsd-w2:" not in text


def test_no_pair_no_sync_cost(compare_bench) -> None:
    assert compare_bench.sync_cost({"pysfsd-async": [{"create": (1.0, 0.1)}],
                                    "ganesha": [{"create": (1.0, 0.1)}]}) == ""


def test_parse_rtt_reads_calls_queue_rtt_execute(compare_bench) -> None:
    assert compare_bench.parse_rtt("lookup=1000/3/280/290 create=10/0/5/6") == {
        "lookup": [1000, 3, 280, 290], "create": [10, 0, 5, 6]}
    assert compare_bench.parse_rtt("") == {}


def test_rtt_table_means_per_call_over_all_rounds(compare_bench) -> None:
    """Mean RTT per call is the rounds' summed milliseconds over their summed calls (not a mean
    of means); a procedure only one server was sent shows "0" calls and "-" for the other."""
    rtts = {
        "pysfsd-async": [{"stat": {"lookup": [1000, 1, 300, 320]}},
                         {"stat": {"lookup": [1000, 1, 500, 520], "getattr": [2, 0, 1, 1]}}],
        "ganesha": [{"stat": {"lookup": [1000, 0, 250, 260]}}],
    }
    results = {"pysfsd-async": [{"stat": (2.0, None)}, {"stat": (2.0, None)}],
               "ganesha": [{"stat": (1.0, None)}]}
    rows = [line.split() for line in compare_bench.rtt_table(rtts, results).splitlines()]
    assert rows[1] == ["stat", "rtt", "share", "20", "%", "25", "%"]  # 801 ms of 4 s; 250 of 1 s
    assert rows[2] == ["lookup", "1000/1000", "400", "420", "1000", "250", "260"]
    assert rows[3] == ["getattr", "2", "500", "500", "0", "-", "-"]


def test_guest_env_reaches_the_workload(compare_bench, monkeypatch, tmp_path) -> None:
    """``--guest-env`` parameters go to the guest with the CPU marks, which they cannot turn off."""
    @contextmanager
    def serving(server, work, tree=None):
        yield tmp_path, 2049, 2049, lambda: None

    seen: dict[str, str] = {}

    class Vm:
        @staticmethod
        def run_vm_test(port, export, **kwargs):
            seen.update(kwargs["guest_env"])
            return SimpleNamespace(passed=True, lines=[(0.0, "INFO bench remove_3000 secs=2.50")])

    monkeypatch.setattr(compare_bench, "serving", serving)
    phases, *_ = compare_bench.run_once(Vm(), "pysfsd-async", tmp_path, 1, 2,
                                        guest_env={"RM_AFTER": "4", "CPU_MARKS": "0"})
    assert seen == {"RM_AFTER": "4", "CPU_MARKS": "1", "NCONNECT": "2"}
    assert phases == {"remove_3000": (2.5, None)}


def test_profile_attaches_to_the_worker_serving_the_calls(compare_bench, tmp_path) -> None:
    """``{pid}`` is the process the calls run in: a pysfsd's primary worker (its first child),
    not the supervisor, where ``strace -f -p`` saw no call (-f follows only later forks);
    ``{server}`` is the server's own process; a server without children is its own."""
    import subprocess
    import sys
    server = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, time\n"
                               "a = subprocess.Popen(['sleep', '30'])\n"
                               "b = subprocess.Popen(['sleep', '30'])\n"
                               "print(a.pid, b.pid, flush=True)\n"
                               "time.sleep(30)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        first, second = (int(p) for p in server.stdout.readline().split())
        profiler = compare_bench.PhaseProfiler("create_1000:sh -c 'echo {pid} {server} > {out}'", tmp_path)
        profiler.mark("begin", "create_1000", server.pid, "pysfsd-r1")
        profiler.mark("end", "create_1000", server.pid, "pysfsd-r1")
        profiler.mark("begin", "create_1000", second, "ganesha-r1")
        profiler.mark("end", "create_1000", second, "ganesha-r1")
    finally:
        server.kill()
        server.wait()
        subprocess.run(["pkill", "-P", str(server.pid)], check=False)  # its own sleeps, if left
    assert (tmp_path / "profile-pysfsd-r1-create_1000.txt").read_text().split() == [str(min(first, second)), str(server.pid)]
    assert (tmp_path / "profile-ganesha-r1-create_1000.txt").read_text().split() == [str(second)] * 2
