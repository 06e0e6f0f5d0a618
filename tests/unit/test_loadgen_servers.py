"""Which checkout a benchmark's pysfsd runs from (scripts/benchmarks/load_generator/servers.py,
``from_tree``): ``bench_lone_think.py --blocks`` starts every server first and keeps them all,
so a plain ``pysfsd`` is started while a ``pysfsd@base``'s ``from_tree`` is still open."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "servers", Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "load_generator" / "servers.py")
assert _spec is not None and _spec.loader is not None
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)


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
