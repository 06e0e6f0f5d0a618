"""A benchmark's pysfsd from another tree runs that tree's own interpreter when it has a venv:
an A/B of two trees otherwise compares code under one interpreter only, and a base tree made
with another Python (docs/running.rst, "Which Python") could not be measured as it runs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "load_generator"))
import servers  # noqa: E402


def test_this_checkout_runs_the_benchmarks_interpreter(capsys: pytest.CaptureFixture[str]) -> None:
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
