"""The load generator's rounds: each server measured first as often as last, medians quoted."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "rounds", Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "load_generator" / "rounds.py")
assert _spec is not None and _spec.loader is not None
rounds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rounds)


def _summary(ops: float, per_cpu: float | None, p50: float) -> dict:
    return {"ops_per_s": ops, "ops_per_server_cpu": per_cpu, "mib_per_s": 0.0, "p50_ms": p50}


def test_the_order_turns_round_and_every_round_keeps_the_ops_order():
    plan = rounds.plan_rounds(["create", "remove"], ["p", "g"], 3)
    assert plan == [(0, "create", "p"), (0, "create", "g"), (0, "remove", "p"), (0, "remove", "g"),
                    (1, "create", "g"), (1, "create", "p"), (1, "remove", "g"), (1, "remove", "p"),
                    (2, "create", "p"), (2, "create", "g"), (2, "remove", "p"), (2, "remove", "g")]
    firsts = [rounds.round_order(["p", "g"], n)[0] for n in range(4)]
    assert firsts.count("p") == firsts.count("g") == 2


def test_the_order_rotates_so_each_of_three_takes_every_place():
    """Reversal every other round would keep the middle one of three in the middle (a VM
    run's second place was the slow one); rotated, each takes each place once in as many
    rounds as there are servers."""
    servers = ["pysfsd-async@base", "pysfsd-async", "ganesha"]
    orders = [rounds.round_order(servers, n) for n in range(3)]
    assert orders[0] == servers and rounds.round_order(servers, 3) == servers
    for place in range(3):
        assert sorted(order[place] for order in orders) == sorted(servers)


def test_medians_are_taken_of_each_figure_separately():
    combined = rounds.combine([_summary(100, 50, 1.0), _summary(300, 10, 3.0), _summary(200, 30, 2.0)])
    assert combined["ops_per_s"] == 200 and combined["ops_per_server_cpu"] == 30
    assert combined["p50_ms"] == 2.0  # the rest is the median round's own
    assert [r["ops_per_s"] for r in combined["rounds"]] == [100, 300, 200]


def test_one_round_is_left_as_it_was_and_has_no_round_ratios():
    only = _summary(100, 50, 1.0)
    assert rounds.combine([only]) is only
    assert rounds.round_ratios(only, only) == ""


def test_each_rounds_ratio_pairs_the_same_round():
    p = rounds.combine([_summary(100, 50, 1.0), _summary(300, None, 1.0)])
    g = rounds.combine([_summary(50, 25, 1.0), _summary(100, 20, 1.0)])
    assert rounds.round_ratios(p, g) == "rounds 2.00/2.00 3.00/-"


def _workload():
    spec = importlib.util.spec_from_file_location(
        "workload", Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "load_generator" / "workload.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("workload", module)  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return sys.modules["workload"]


def test_a_later_round_renames_each_file_from_the_name_the_last_one_left():
    """Round 2's RENAMEs failed with ENOENT: every run started from the fixture's name."""
    from types import SimpleNamespace

    workload = _workload()
    encoder = SimpleNamespace(record=lambda proc, args: (proc, args))
    handles = SimpleNamespace(small=b"s", root=b"r", dir1000=b"d", writes=[b"w"], scratch=b"x", big=b"b")

    def renamed_to(ctx):  # one RENAME on the connection's first slot, its reply received
        script = workload.op_rename(ctx)
        _, args = next(script)[0]
        try:
            script.send(None)
        except StopIteration:
            pass
        return args.to.name

    def context():
        return workload.ConnContext(encoder, "pysfsd", handles, 0, 0, 1, 1)

    first = context()
    assert renamed_to(first) == workload.rename_name(0, 0, 1)
    assert renamed_to(context()) == workload.rename_name(0, 0, 0)  # the next run goes back
