"""Telling a person how a long scan is going: a tqdm bar on a terminal, else log lines."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("pysfsd.index")
LOG_EVERY = 5.0


class Progress:
    """``mode``: True for a bar, False for silence, None for a bar when stderr is a terminal
    and otherwise an INFO log line every few seconds."""

    def __init__(self, mode: bool | None, what: str, total: int | None = None) -> None:
        if mode is None:
            mode = sys.stderr.isatty() or None
        self._bar: Any = None
        self._log = mode is None
        self._what = what
        self._start = self._last = time.monotonic()
        self._total = total
        if mode:
            from tqdm import tqdm
            self._bar = tqdm(desc=f"indexing {what}", unit=" files", unit_scale=True, file=sys.stderr,
                             mininterval=0.5, leave=True, total=total)
        self._shown = 0

    def update(self, seen: int) -> None:
        if self._bar is not None:
            self._bar.update(seen - self._shown)
            self._shown = seen
        elif self._log:
            now = time.monotonic()
            if now - self._last >= LOG_EVERY:
                self._last = now
                log.info("indexing %s: %s", self._what, self.line(seen, now))

    def line(self, seen: int, now: float) -> str:
        """Files done (of how many), rate, ETA: the log's progress line."""
        rate = seen / (now - self._start) if now > self._start else 0.0
        if not self._total:
            return f"{seen} files ({rate:.0f}/s)"
        eta = f", ETA {(self._total - seen) / rate:.0f} s" if rate and seen < self._total else ""
        return f"{seen} of {self._total} files ({100 * seen / self._total:.0f} %, {rate:.0f}/s){eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
