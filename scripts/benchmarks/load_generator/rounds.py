"""Several rounds of the same comparison, the servers' order turned round each time.

Why: on a shared 2-core machine one run of one op per server is one sample, and the order
matters beyond noise: a server measured right after another's removals pays for them (ext4
without a journal scans recently deleted inodes on the next creates; dirty pages and the
journal of one run are written back during the next).  Alternating the order charges each
server the same, and the median of the rounds is what a reader should quote.  The ratio of
each round (both servers measured minutes apart, in the same conditions) is kept too.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

# the figures a median is taken of; the rest of a summary is the median round's own
MEDIAN_FIELDS = ("ops_per_s", "ops_per_server_cpu", "mib_per_s")


def round_order(targets: Sequence[T], number: int) -> list[T]:
    """Round 0 in the given order, each later round that order rotated by one more place, so
    every target takes every place in turn (for two, round 1 is round 0 reversed).  A target
    that always took the same place would carry whatever that place costs: in three VM runs
    of a fixed order (scripts/vm/compare_bench.py, 2026-12-06) the second server's first
    round was 1.4-1.8 s slower than its second, in every phase alike."""
    k = number % len(targets) if targets else 0
    return list(targets[k:]) + list(targets[:k])


def plan_rounds(ops: Sequence[str], targets: Sequence[T], rounds: int) -> list[tuple[int, str, T]]:
    """Every op of every round in the ops' order (a REMOVE finds the names the round's CREATE
    made), each op on every server in the round's order."""
    return [(number, op, target) for number in range(rounds) for op in ops
            for target in round_order(targets, number)]


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary for the rounds of a (server, op): the round whose ops/s is the (lower)
    median, with each of ``MEDIAN_FIELDS`` replaced by its own median over the rounds and
    every round's ops/s and ops per CPU-second kept under ``rounds``."""
    if len(summaries) == 1:
        return summaries[0]
    ranked = sorted(summaries, key=lambda s: s["ops_per_s"])
    combined = dict(ranked[(len(ranked) - 1) // 2])
    for field in MEDIAN_FIELDS:
        combined[field] = _median([s[field] for s in summaries])
    combined["rounds"] = [{"ops_per_s": s["ops_per_s"], "ops_per_server_cpu": s["ops_per_server_cpu"]}
                          for s in summaries]
    return combined


def round_ratios(p: dict[str, Any] | None, g: dict[str, Any] | None) -> str:
    """The ratio of each round, ops/s and per CPU-second: '1.05/0.93 1.11/1.03'."""
    if not p or not g or "rounds" not in p or "rounds" not in g:
        return ""
    cells = []
    for a, b in zip(p["rounds"], g["rounds"]):
        ops = a["ops_per_s"] / b["ops_per_s"] if a["ops_per_s"] and b["ops_per_s"] else None
        cpu = (a["ops_per_server_cpu"] / b["ops_per_server_cpu"]
               if a["ops_per_server_cpu"] and b["ops_per_server_cpu"] else None)
        cells.append("/".join("-" if r is None else f"{r:.2f}" for r in (ops, cpu)))
    return "rounds " + " ".join(cells)
