"""Waiting for what another process or thread does, without betting on how long it takes.

A test that sleeps a fixed time and then asserts bets that the machine was fast enough; on
a loaded 2-core CI machine that bet is sometimes lost.  ``eventually`` asks again until the
condition holds, and fails only after a deadline far beyond any normal wait (it costs
nothing when the condition holds early)."""
from __future__ import annotations

import time
from typing import Callable

# Far above every wait a test expects (the index applies notes twice a second, a gathering
# watcher reads every 0.5 s): reached only when something is really wrong.
DEADLINE_S = 30.0


def eventually(check: Callable[[], object], within: float = DEADLINE_S, every: float = 0.05) -> None:
    """Call ``check`` until it returns True; fail with its last answer after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got is True:
            return
        assert time.monotonic() < deadline, f"not met within {within} s: {got!r}"
        time.sleep(every)
