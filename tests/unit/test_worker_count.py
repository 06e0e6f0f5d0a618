"""The default of ``--workers``: the usable cores (the CPU affinity, not the machine's
count), ``PYSFSD_WORKERS`` over it, ``--workers``/``--config`` over both, and one process
for a ``--shared-state`` head unless asked for more (nfsd/workers.py, nfsd/cli/main.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nfsd.cli.main import worker_count
from nfsd.workers import default_count, usable_cores


def test_usable_cores_are_the_affinity() -> None:
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_pinned_to_one_core_the_default_is_one_worker() -> None:
    """A server under ``taskset -c 0`` (or a one-core cpuset) would gain nothing from a second
    worker: the default follows the affinity, which a child pinned to one core sees."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from nfsd.workers import default_count; print(default_count())")
    env = {k: v for k, v in os.environ.items() if k != "PYSFSD_WORKERS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "1"


def test_default_is_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSFSD_WORKERS", raising=False)
    assert default_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("text, expected", [("3", 3), ("1", 1)])
def test_environment_overrides_the_default(monkeypatch: pytest.MonkeyPatch, text: str, expected: int) -> None:
    monkeypatch.setenv("PYSFSD_WORKERS", text)
    assert default_count() == expected


@pytest.mark.parametrize("text", ["0", "-2", "two", ""])
def test_a_meaningless_environment_value_leaves_the_cores(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("PYSFSD_WORKERS", text)
    assert default_count() == len(os.sched_getaffinity(0))


def test_given_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSFSD_WORKERS", "3")
    assert worker_count(1, None) == 1
    assert worker_count(5, None) == 5
    assert worker_count(None, None) == 3


def test_a_cluster_head_defaults_to_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--shared-state`` refuses several workers: the default must not make every head fail
    to start; asked for explicitly, they are still refused (tests/server/test_startup.py)."""
    monkeypatch.setenv("PYSFSD_WORKERS", "2")
    assert worker_count(None, "postgresql:///db") == 1
    assert worker_count(2, "postgresql:///db") == 2


def test_a_big_machine_gets_at_most_the_default_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 cores must not mean 64 Python processes of 40 MiB each behind one index writer."""
    import nfsd.workers as workers
    monkeypatch.delenv("PYSFSD_WORKERS", raising=False)
    monkeypatch.setattr(workers, "usable_cores", lambda: 64)
    assert default_count() == workers.DEFAULT_MAX < 64
    monkeypatch.setenv("PYSFSD_WORKERS", "12")  # asked for: taken
    assert default_count() == 12


def test_more_workers_than_the_store_is_sized_for_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from nfsd.config.errors import ConfigError
    from nfsd.workers import MAX_COUNT
    assert worker_count(MAX_COUNT, None) == MAX_COUNT
    with pytest.raises(ConfigError, match="at most"):
        worker_count(MAX_COUNT + 1, None)
    monkeypatch.setenv("PYSFSD_WORKERS", str(MAX_COUNT * 2))
    assert worker_count(None, None) == MAX_COUNT
