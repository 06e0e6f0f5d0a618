"""The GIL switch interval while the periodic index flush runs beside the calls
(nfsd/app.py ``brisk_switching``)."""
from __future__ import annotations

import sys
import threading

from nfsd.app import FLUSH_SWITCH_INTERVAL, _BriskSwitching


def test_the_interval_is_short_while_any_flush_runs_and_restored_after() -> None:
    brisk = _BriskSwitching()
    before = sys.getswitchinterval()
    assert before > FLUSH_SWITCH_INTERVAL  # CPython's 5 ms
    seen: list[float] = []
    inside, release = threading.Event(), threading.Event()

    def long_flush() -> str:
        seen.append(sys.getswitchinterval())
        inside.set()
        assert release.wait(10)
        seen.append(sys.getswitchinterval())
        return "flushed"

    other = threading.Thread(target=brisk.wrap(long_flush))
    other.start()
    assert inside.wait(10)
    assert brisk.wrap(lambda: sys.getswitchinterval())() == FLUSH_SWITCH_INTERVAL  # a second one meanwhile
    assert sys.getswitchinterval() == FLUSH_SWITCH_INTERVAL  # the first still runs
    release.set()
    other.join(10)
    assert seen == [FLUSH_SWITCH_INTERVAL] * 2
    assert abs(sys.getswitchinterval() - before) < 1e-9


def test_a_failing_flush_restores_the_interval_too() -> None:
    brisk = _BriskSwitching()
    before = sys.getswitchinterval()

    def failing() -> None:
        raise OSError("EIO")
    try:
        brisk.wrap(failing)()
    except OSError:
        pass
    assert abs(sys.getswitchinterval() - before) < 1e-9
    assert brisk.wrap(lambda: 7)() == 7
