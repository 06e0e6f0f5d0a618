"""A server's memory as the kernel counts it, and whether it stayed flat under load.

VmRSS is what the process has resident now (anonymous memory plus mapped file pages: LMDB's
map counts there as RssFile), VmHWM its peak.  RssAnon is shown apart because only it is
the Python heap: RssFile grows while LMDB pages are first touched and is the kernel's to
drop.
"""
from __future__ import annotations

import statistics
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
    minute for (minute, MiB).  None with fewer than two distinct x.  Kept for reading a
    series; the verdict (``anon_verdict``) no longer rests on it: a heap step in the middle
    of the window is spanned by more than half the pairs, and the median is the step's."""
    pairs = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
             for x2, y2 in points[i + 1:] if x2 != x1]
    return statistics.median(pairs) if pairs else None


def plateau_rise(points: list[tuple[float, float]]) -> float:
    """How much higher the series ends than it starts, each end's level the median of its
    first (last) few points (a third of them, one to three): one odd sample moves neither."""
    k = max(1, min(3, len(points) // 3))
    return statistics.median(y for _, y in points[-k:]) - statistics.median(y for _, y in points[:k])


#: minutes between the two ends of a window of ``still_rising``
RISE_WINDOW = 2.0


def still_rising(points: list[tuple[float, float]], min_slope: float, min_windows: int = 3) -> float | None:
    """The least slope, MiB a minute, over the windows of about ``RISE_WINDOW`` minutes that
    start at each point (from one point to the first at least that much later), when every
    one of them rises faster than ``min_slope``; None when one does not, or when there are
    fewer than ``min_windows``: one window is one step's, not a trend.  A leak raises every
    window; a high-water mark rises in a few and is flat in the others."""
    slopes = []
    for i, (x1, y1) in enumerate(points):
        later = next(((x2, y2) for x2, y2 in points[i + 1:] if x2 - x1 >= RISE_WINDOW), None)
        if later is not None:
            slopes.append((later[1] - y1) / (later[0] - x1))
    if len(slopes) < min_windows or min(slopes) <= min_slope:
        return None
    return min(slopes)


def anon_verdict(by_minute: dict[int, Memory | None], max_slope: float, max_rise: float,
                 min_points: int = 3) -> tuple[bool, str]:
    """(flat?, explanation) from anonymous memory alone, sampled once a minute.

    Anonymous memory is the one a leak grows; VmRSS also moves with file pages (LMDB's map,
    libmagic's database) that the kernel owns.  The server's heap keeps what it frees
    (``tune_malloc``): its size is the high-water mark of the memory in use, and it steps
    up, by a 1 MiB record's worth or a few, each time more large records are live at once
    than ever before (docs/design.rst, "The soak's anonymous-memory verdict").  Under a
    steady load such new peaks grow rarer as the run goes on; a leak keeps the same pace.
    So it is GROWING when, over the second half of the minutes (caches fill in the first):

    * it ends more than ``max_rise`` MiB above where it started (``plateau_rise``): the
      steps of a high-water mark add up to a bounded amount, a leak's rise grows with the
      run; or
    * it rises all along: every window of two minutes rises faster than ``max_slope`` MiB a
      minute (``still_rising``, at least ``min_points`` windows): a leak too slow for the
      first test in a short run, which a plateau's flat stretches never show."""
    points = [(float(m), mem.anon) for m, mem in sorted(by_minute.items()) if mem is not None]
    half = points[len(points) // 2:]
    if len(half) < min_points:
        return True, f"anon not judged ({len(half)} samples in the second half, {min_points} needed)"
    rise = plateau_rise(half)
    rising = still_rising(half, max_slope, min_points)
    flat = rise <= max_rise and rising is None
    end = (f"rising all along (every {RISE_WINDOW:.0f}-minute window, at least "
           f"{rising:+.2f} MiB/min, limit {max_slope:.2f})" if rising is not None
           else f"not rising in every {RISE_WINDOW:.0f}-minute window (limit {max_slope:.2f} MiB/min)")
    return flat, (f"anon {half[0][1]:.1f} -> {half[-1][1]:.1f} MiB over minutes {half[0][0] + 1:.0f}-"
                  f"{half[-1][0] + 1:.0f}, {rise:+.1f} MiB between its ends (limit {max_rise:.1f}), "
                  f"{end}: {'flat' if flat else 'GROWING'}")
