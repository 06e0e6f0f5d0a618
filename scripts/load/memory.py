"""A server's memory as the kernel counts it, and whether it stayed flat under load.

VmRSS is what the process has resident now (anonymous memory plus mapped file pages: LMDB's
map counts there as RssFile), VmHWM its peak.  RssAnon is shown apart because only it is
the Python heap: RssFile grows while LMDB pages are first touched and is the kernel's to
drop.
"""
from __future__ import annotations

from dataclasses import dataclass

KIB_PER_MIB = 1024


@dataclass(frozen=True)
class Memory:
    rss: float   # MiB
    hwm: float
    anon: float
    file: float
    pss: float | None = None  # a server of several processes: their PSS summed (shared pages once)
    processes: int = 1        # how many processes the figures add up

    def __str__(self) -> str:
        text = f"VmRSS {self.rss:.1f} MiB (anon {self.anon:.1f}, file {self.file:.1f}), VmHWM {self.hwm:.1f} MiB"
        if self.processes > 1:
            text += f", summed over {self.processes} processes"
        return text if self.pss is None else f"{text}; PSS {self.pss:.1f} MiB"


def read_memory(pid: int) -> Memory | None:
    """The process's memory now; None when it is gone (or the pid is unknown)."""
    fields: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0]) / KIB_PER_MIB
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    return Memory(fields["VmRSS"], fields["VmHWM"], fields["RssAnon"], fields["RssFile"])


def growth_verdict(baseline: Memory | None, last: Memory | None, max_growth: float) -> tuple[bool, str]:
    """(flat?, explanation): flat when the last VmRSS is within ``max_growth`` (a fraction)
    above the baseline taken after warm-up.  Shrinking is flat."""
    if baseline is None or last is None:
        return True, "not measured (no server pid)"
    growth = (last.rss - baseline.rss) / baseline.rss if baseline.rss else 0.0
    flat = growth <= max_growth
    return flat, (f"VmRSS {baseline.rss:.1f} MiB after warm-up -> {last.rss:.1f} MiB at the end "
                  f"({growth:+.1%}, limit +{max_growth:.0%}): {'flat' if flat else 'GROWING'}")


def slope(points: list[tuple[float, float]]) -> float | None:
    """The median of the slopes between every two points of distinct x (Theil-Sen): MiB per
    minute for (minute, MiB).  A leak raises every minute, and every pair shows it; the
    heap's one-off steps (a new peak of 1-3 MiB buffers kept for reuse, ``tune_malloc``)
    move only the pairs across them, which least squares would spread over the whole
    line.  None with fewer than two distinct x."""
    pairs = sorted((y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
                   for x2, y2 in points[i + 1:] if x2 != x1)
    if not pairs:
        return None
    mid = len(pairs) // 2
    return pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2


def anon_verdict(by_minute: dict[int, Memory | None], max_slope: float, min_points: int = 3) -> tuple[bool, str]:
    """(flat?, explanation) from anonymous memory alone, sampled once a minute: flat when its
    slope (``slope``) over the second half of the minutes (caches fill in the first) is at
    most ``max_slope`` MiB a minute.  Anonymous memory is the one a leak grows; VmRSS also moves
    with file pages (LMDB's map, libmagic's database) that the kernel owns."""
    points = [(float(m), mem.anon) for m, mem in sorted(by_minute.items()) if mem is not None]
    half = points[len(points) // 2:]
    rate = slope(half) if len(half) >= min_points else None
    if rate is None:
        return True, f"anon not judged ({len(half)} samples in the second half, {min_points} needed)"
    flat = rate <= max_slope
    return flat, (f"anon {half[0][1]:.1f} -> {half[-1][1]:.1f} MiB over minutes {half[0][0] + 1:.0f}-"
                  f"{half[-1][0] + 1:.0f}, slope {rate:+.2f} MiB/min (limit {max_slope:.2f}): "
                  f"{'flat' if flat else 'GROWING'}")
