"""Which checkout, and which interpreter, a benchmark's pysfsd runs (scripts/benchmarks/
load_generator/servers.py, ``from_tree`` and ``server_python``): ``bench_lone_think.py
--blocks`` starts every server first and keeps them all, so a plain ``pysfsd`` is started while
a ``pysfsd@base``'s ``from_tree`` is still open; a tree with a venv of its own runs that venv's
Python (an A/B of two trees otherwise compares code under one interpreter only, and a base
made with another Python, docs/running.rst "Which Python", could not be measured as it runs)."""

import sys
from pathlib import Path

import pytest

from tests.vm_support import load_script

servers = load_script(Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "load_generator" / "servers.py")


def test_a_plain_server_runs_this_checkout_inside_another_trees_block(tmp_path: Path) -> None:
    """Before, ``from_tree(None)`` left REPO as it found it: the base tree's code ran as
    "pysfsd", and the A/B compared base with base."""
    here = servers.REPO
    with servers.from_tree(tmp_path):
        assert servers.REPO == tmp_path
        with servers.from_tree(None):
            assert servers.REPO == here
        assert servers.REPO == tmp_path
    assert servers.REPO == here


def test_this_checkout_runs_the_benchmarks_interpreter() -> None:
    assert servers.server_python() == sys.executable


def test_another_tree_runs_its_own_venv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    with servers.from_tree(tmp_path):
        assert servers.server_python() == str(venv_python)
    assert f"runs {venv_python}" in capsys.readouterr().err  # said, so a figure names its interpreter
    assert servers.server_python() == sys.executable  # the tree left, this checkout again


def test_another_tree_without_a_venv_runs_the_benchmarks_interpreter(tmp_path: Path) -> None:
    with servers.from_tree(tmp_path):
        assert servers.server_python() == sys.executable
