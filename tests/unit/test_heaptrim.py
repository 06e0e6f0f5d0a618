"""nfsd/heaptrim.py: a quiet worker gives its free heap back once per quiet spell."""
from __future__ import annotations

from nfsd.heaptrim import QUIET_SHARE, HeapTrim


class FakeCpu:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def trimmer() -> tuple[FakeCpu, list[int], HeapTrim]:
    cpu, trims = FakeCpu(), []
    return cpu, trims, HeapTrim(cpu, lambda: trims.append(1))


def test_a_quiet_period_after_start_up_trims_once_and_not_again_while_quiet() -> None:
    cpu, trims, heap = trimmer()
    cpu.now += 0.001
    assert heap.look(2.0)
    for _ in range(5):
        cpu.now += 0.001
        assert not heap.look(2.0)
    assert len(trims) == 1


def test_a_busy_period_does_not_trim_and_the_quiet_one_after_it_does() -> None:
    cpu, trims, heap = trimmer()
    heap.look(2.0)  # start-up's trim
    cpu.now += 1.5  # a load: 75 % of a core
    assert not heap.look(2.0)
    cpu.now += 1.9
    assert not heap.look(2.0)
    assert len(trims) == 1
    cpu.now += QUIET_SHARE * 2.0 / 2
    assert heap.look(2.0)
    assert len(trims) == 2


def test_the_real_trim_runs() -> None:
    """glibc's malloc_trim through ctypes (or nothing, elsewhere): it must not raise."""
    heap = HeapTrim()
    heap.look(1e9)
