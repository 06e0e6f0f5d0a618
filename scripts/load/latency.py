"""Latency percentiles in constant memory, however long a load run lasts."""
from __future__ import annotations

import math
from array import array


class LatencyHistogram:
    """Latencies in 2 % wide logarithmic buckets from 10 us: percentiles within 2 %, in
    constant memory however long the run."""

    __slots__ = ("counts", "total")
    _FLOOR, _LOG_STEP, _BUCKETS = 1e-5, math.log(1.02), 1200   # up to 10 us * 1.02**1200 (~ 200 ks)

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * self._BUCKETS))
        self.total = 0

    def add(self, seconds: float) -> None:
        index = int(math.log(seconds / self._FLOOR) / self._LOG_STEP) if seconds > self._FLOOR else 0
        self.counts[min(index, self._BUCKETS - 1)] += 1
        self.total += 1

    def merge(self, other: LatencyHistogram) -> None:
        for index, count in enumerate(other.counts):
            if count:
                self.counts[index] += count
        self.total += other.total

    def percentile_ms(self, q: float) -> float | None:
        if not self.total:
            return None
        rank, seen = q * self.total, 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return 1e3 * self._FLOOR * math.exp((index + 0.5) * self._LOG_STEP)
        return None
