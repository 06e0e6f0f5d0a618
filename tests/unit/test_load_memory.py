"""The load scripts' memory verdicts (scripts/load/memory.py): anonymous memory's slope."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "load_memory", Path(__file__).resolve().parents[2] / "scripts" / "load" / "memory.py")
assert _spec is not None and _spec.loader is not None
memory = importlib.util.module_from_spec(_spec)
sys.modules["load_memory"] = memory  # a dataclass looks its module up
_spec.loader.exec_module(memory)


def _mem(anon: float) -> object:
    return memory.Memory(rss=anon + 50, hwm=anon + 60, anon=anon, file=50.0)


def test_slope_is_the_median_of_pairwise_slopes_so_one_step_does_not_make_a_trend():
    assert memory.slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == 2.0
    # the soak's figures (MiB summed, minutes 5-9): base 8625af3 rose every minute...
    assert abs(memory.slope([(5, 117.1), (6, 117.3), (7, 117.6), (8, 117.9), (9, 119.1)]) - 0.3) < 1e-9
    # ... the fixed server took one step of the heap, then stayed (least squares: +0.33)
    assert abs(memory.slope([(5, 120.6), (6, 121.8), (7, 121.9), (8, 122.0), (9, 122.1)]) - 0.1) < 1e-9
    assert memory.slope([(1, 1.0), (1, 2.0)]) is None


def test_a_cache_filling_in_the_first_half_then_flat_is_flat():
    by_minute = {m: _mem(60.0 + min(m, 4) * 10 + (m % 2) * 0.5) for m in range(10)}
    flat, text = memory.anon_verdict(by_minute, 0.25)
    assert flat, text


def test_steady_growth_over_the_second_half_fails():
    by_minute = {m: _mem(100.0 + 0.5 * m) for m in range(10)}
    flat, text = memory.anon_verdict(by_minute, 0.25)
    assert not flat and "GROWING" in text and "+0.50" in text


def test_too_few_samples_are_not_judged_and_missing_ones_skipped():
    assert memory.anon_verdict({0: _mem(1.0), 1: _mem(50.0)}, 0.25)[0]
    by_minute = {m: (None if m == 7 else _mem(100.0 + m)) for m in range(10)}
    assert not memory.anon_verdict(by_minute, 0.25)[0]
