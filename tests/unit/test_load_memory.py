"""The load scripts' memory verdicts (scripts/load/memory.py): anonymous memory, a bounded
plateau of the heap told from a leak."""

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


MAX_SLOPE, MAX_RISE = 0.2, 3.0  # soak.py's defaults


def _series(values: list[float], first: int = 0) -> dict:
    return {first + i: _mem(v) for i, v in enumerate(values)}


def _second_half(values: list[float]) -> dict:
    """A run whose second half is ``values`` (the notes gave only those minutes; the first
    half, not judged, is filled with the first of them)."""
    return _series([values[0]] * len(values) + values)


def test_slope_is_the_median_of_pairwise_slopes():
    assert memory.slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == 2.0
    assert abs(memory.slope([(5, 117.1), (6, 117.3), (7, 117.6), (8, 117.9), (9, 119.1)]) - 0.3) < 1e-9
    assert memory.slope([(1, 1.0), (1, 2.0)]) is None


#: phase 15's 20-minute VM soak (summed RssAnon by minute): flat, two 1 MiB steps of the heap
#: at minutes 15-16, flat again.  The Theil-Sen slope said +0.30 MiB/min over the second half
#: and failed it: a step in the middle of the window is spanned by most pairs.
TWENTY_MINUTES_TWO_STEPS = [118.1, 118.1, 119.5, 120.2, 121.3, 122.3] + [122.4] * 7 + [122.5, 123.5, 124.5] + [124.5] * 4


def test_two_heap_steps_between_flat_stretches_are_a_plateau_not_growth():
    series = _series(TWENTY_MINUTES_TWO_STEPS)
    assert len(series) == 20
    half = [(float(m), mem.anon) for m, mem in series.items()][10:]
    assert memory.slope(half) > MAX_SLOPE  # what the old verdict failed on
    flat, text = memory.anon_verdict(series, MAX_SLOPE, MAX_RISE)
    assert flat, text
    assert "+2.1 MiB between its ends" in text and "not rising" in text


#: phase 14's 25-minute soak, before two leaks were fixed: anonymous memory at minutes 1, 5, 10,
#: 15, 20 and the end (the note gave no other minutes): about +0.5 MiB a minute throughout.
TWENTY_FIVE_MINUTES_LEAKING = {0: 114.0, 4: 115.8, 9: 119.6, 14: 120.6, 19: 125.2, 24: 125.7}


def test_the_leak_of_25_minutes_fails_as_given_and_by_minute():
    given = {m: _mem(v) for m, v in TWENTY_FIVE_MINUTES_LEAKING.items()}
    flat, text = memory.anon_verdict(given, MAX_SLOPE, MAX_RISE)
    assert not flat and "GROWING" in text and "+5.1 MiB" in text
    # the same, every minute filled in on straight lines between the figures given
    known = sorted(TWENTY_FIVE_MINUTES_LEAKING.items())
    by_minute = {}
    for (m1, v1), (m2, v2) in zip(known, known[1:]):
        for m in range(m1, m2 + 1):
            by_minute[m] = _mem(v1 + (v2 - v1) * (m - m1) / (m2 - m1))
    assert len(by_minute) == 25
    flat, text = memory.anon_verdict(by_minute, MAX_SLOPE, MAX_RISE)
    assert not flat and "GROWING" in text


def test_the_ten_minute_soaks_of_phase_15():
    # base 8625af3 (the entry cache leaking), minutes 5-9: rising every minute
    flat, text = memory.anon_verdict(_second_half([117.1, 117.3, 117.6, 117.9, 119.1]), MAX_SLOPE, MAX_RISE)
    assert not flat and "rising all along" in text
    # fixed: one step, then +0.1 a minute
    assert memory.anon_verdict(_second_half([120.6, 121.8, 121.9, 122.0, 122.1]), MAX_SLOPE, MAX_RISE)[0]
    # the closing run: caches filling, then flat
    flat, text = memory.anon_verdict(
        _series([108.5, 111.8, 112.8, 116.3, 117.4, 117.5, 117.6, 117.6, 117.6]), MAX_SLOPE, MAX_RISE)
    assert flat, text


def test_one_step_near_the_end_of_a_ten_minute_run_is_not_a_trend():
    """This phase's 10-minute VM soak: the primary's heap took one 1 MiB step at minute 8
    (brk, a new peak of large buffers); a window test on the last third alone (three
    samples, one window) failed it, as the old slope did (+0.30)."""
    series = _series([112.7, 114.5, 115.6, 118.7, 118.9, 119.0, 119.0, 120.0, 120.0])
    flat, text = memory.anon_verdict(series, MAX_SLOPE, MAX_RISE)
    assert flat, text
    assert memory.still_rising([(6.0, 119.0), (7.0, 120.0), (8.0, 120.0)], MAX_SLOPE, 1) is not None
    assert memory.still_rising([(6.0, 119.0), (7.0, 120.0), (8.0, 120.0)], MAX_SLOPE) is None


def test_a_slow_steady_leak_too_small_for_the_bound_rises_in_every_window():
    series = _series([100.0 + 0.25 * m for m in range(10)])  # +1.25 MiB over the second half
    flat, text = memory.anon_verdict(series, MAX_SLOPE, MAX_RISE)
    assert not flat and "rising all along" in text and "+0.25 MiB/min" in text
    # below the limit it is flat
    assert memory.anon_verdict(_series([100.0 + 0.15 * m for m in range(10)]), MAX_SLOPE, MAX_RISE)[0]


def test_steps_that_keep_coming_fail_and_steps_that_grow_rare_do_not():
    # a 1 MiB step every other minute to the end: a leak by steps
    steps = _series([100.0 + (m // 2) for m in range(20)])
    assert not memory.anon_verdict(steps, MAX_SLOPE, MAX_RISE)[0]
    # a high-water mark: new peaks at minutes 1, 2, 4, 8, 16 (ever rarer), 1 MiB each
    peaks = _series([100.0 + sum(1 for p in (1, 2, 4, 8, 16) if m >= p) for m in range(20)])
    flat, text = memory.anon_verdict(peaks, MAX_SLOPE, MAX_RISE)
    assert flat, text


def test_one_step_past_the_bound_fails_one_within_it_does_not():
    late = [100.0] * 17 + [102.5] * 3   # a 2.5 MiB step near the end, then flat
    assert memory.anon_verdict(_series(late), MAX_SLOPE, MAX_RISE)[0]
    big = [100.0] * 12 + [104.0] * 8    # 4 MiB in the second half
    flat, text = memory.anon_verdict(_series(big), MAX_SLOPE, MAX_RISE)
    assert not flat and "+4.0 MiB between its ends (limit 3.0)" in text


def test_one_odd_sample_moves_neither_end():
    values = [100.0] * 20
    values[10], values[19] = 95.0, 104.0  # a dip at the start of the second half, a spike at its end
    assert memory.anon_verdict(_series(values), MAX_SLOPE, MAX_RISE)[0]


def test_a_cache_filling_in_the_first_half_then_flat_is_flat():
    by_minute = {m: _mem(60.0 + min(m, 4) * 10 + (m % 2) * 0.5) for m in range(10)}
    flat, text = memory.anon_verdict(by_minute, 0.25, MAX_RISE)
    assert flat, text


def test_steady_growth_over_the_second_half_fails():
    by_minute = {m: _mem(100.0 + 0.5 * m) for m in range(10)}
    flat, text = memory.anon_verdict(by_minute, 0.25, MAX_RISE)
    assert not flat and "GROWING" in text and "+0.50" in text


def test_too_few_samples_are_not_judged_and_missing_ones_skipped():
    assert memory.anon_verdict({0: _mem(1.0), 1: _mem(50.0)}, 0.25, MAX_RISE)[0]
    by_minute = {m: (None if m == 7 else _mem(100.0 + m)) for m in range(10)}
    assert not memory.anon_verdict(by_minute, 0.25, MAX_RISE)[0]


def test_a_run_still_rising_at_its_end_fails():
    # phase 15's soak without the VM at ~2,900 ops/s, minutes 5-9: the heap still stepping up
    # at the end; whether it would have levelled off, only a longer run tells
    flat, text = memory.anon_verdict(_second_half([109.8, 110.9, 110.9, 112.0, 114.0]), MAX_SLOPE, MAX_RISE)
    assert not flat and "+4.2 MiB" in text and "rising all along" in text
    # the base beside it (+0.35 by the old slope, FAIL): one step, then flat
    assert memory.anon_verdict(_second_half([108.6, 108.8, 109.9, 109.9, 109.9]), MAX_SLOPE, MAX_RISE)[0]
    # this phase's, 12 minutes (scripts/load/soak.py --minutes 12 --no-vm, ~2,700 ops/s): the
    # old slope said +0.40 MiB/min; the heap's last step came at minute 8
    flat, text = memory.anon_verdict(
        _series([104.0, 106.6, 107.0, 107.1, 107.7, 109.2, 109.3, 111.0, 111.1, 111.1, 111.2]), MAX_SLOPE, MAX_RISE)
    assert flat, text
