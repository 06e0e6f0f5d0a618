#!/usr/bin/env python3
"""The calls of a traced pysfsd (``PYSFSD_TRACE=1`` or more, its log) as a timeline: runs
of one procedure, each with its count and its start in seconds after the first call shown,
REMOVE, LOOKUP and CREATE named by their directory's handle, GETATTR by whether its object
was seen as a directory.  Then when the first GETATTR of a non-directory came, after how
many calls of each kind, and how long after the READDIRPLUS replies before it.

What it is for: telling what made the kernel client ask (docs/design.rst, "remove_3000's
GETATTRs, again"): ``PYSFSD_TRACE=2 scripts/vm/compare_bench.py --servers pysfsd-async
--rounds 1 --work W``, then ``scripts/vm/trace_timeline.py W/state-pysfsd-async/pysfsd.log
--since '13:46:21,1'`` (the time of the phase's first call, from the log).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from datetime import datetime
from typing import NamedTuple

_LINE = re.compile(r"(\S+ \S+) pysfsd\.trace(?: w\d+)? INFO \S+ xid=\S+ NFS3\.(\w+) (.*) -> (\S+) [\d.]+ms$")
_OBJECT = re.compile(r"(?:object|dir)=\{data=(\w+)\}")
_DIR_ARG = re.compile(r"dir=\{data=(\w+)\}")


class Call(NamedTuple):
    at: float    # seconds since the epoch, as logged (the reply's time)
    proc: str
    handle: str  # the object's or directory's handle, hex
    status: str


def calls(lines: list[str], since: str) -> list[Call]:
    """The NFS calls logged at or after ``since`` ("HH:MM:SS,mmm", or a prefix of it)."""
    out = []
    for line in lines:
        m = _LINE.match(line.rstrip("\n"))
        if m is None or m[1].split(" ", 1)[1] < since:
            continue
        h = _OBJECT.search(m[3])
        at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append(Call(at, m[2], h[1] if h else "", m[4]))
    return out


def label(c: Call, dirs: set[str]) -> str:
    """A run's name: the procedure and, where it tells something, what it named."""
    if c.proc == "GETATTR":
        return "GETATTR(dir)" if c.handle in dirs else "GETATTR(file)"
    if c.proc in ("REMOVE", "LOOKUP", "CREATE", "READDIRPLUS"):
        return f"{c.proc}({c.handle[-8:]})"
    return c.proc


def directories(lines: list[str]) -> set[str]:
    """Handles the log names as a directory argument (READDIRPLUS, REMOVE, CREATE...)."""
    return {m[1] for ln in lines if (m := _DIR_ARG.search(ln))}


def runs(cs: list[Call], dirs: set[str]) -> list[tuple[str, int, float]]:
    """(label, calls, start in seconds after the first call) of each run of one label."""
    out: list[tuple[str, int, float]] = []
    for c in cs:
        name = label(c, dirs)
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1] + 1, out[-1][2])
        else:
            out.append((name, 1, c.at - cs[0].at))
    return out


def first_file_getattr(cs: list[Call], dirs: set[str]) -> int | None:
    """The index of the first GETATTR of an object not seen as a directory."""
    return next((i for i, c in enumerate(cs) if c.proc == "GETATTR" and c.handle not in dirs), None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log")
    p.add_argument("--since", default="", help='the first call\'s time of day, e.g. "13:46:21,1"')
    args = p.parse_args()
    with open(args.log, errors="replace") as f:
        lines = f.readlines()
    cs = calls(lines, args.since)
    if not cs:
        print("no traced NFS calls in that window", file=sys.stderr)
        return 1
    dirs = directories(lines)
    print(" ".join(f"{name}x{n}@{start:.3f}" for name, n, start in runs(cs, dirs)))
    print("calls:", dict(Counter(label(c, dirs) for c in cs)))
    first = first_file_getattr(cs, dirs)
    if first is not None:
        at = cs[first].at - cs[0].at
        print(f"first GETATTR of a non-directory at {at:.3f} s, after",
              dict(Counter(label(c, dirs) for c in cs[:first])))
        print("READDIRPLUS before it, seconds before it:",
              ", ".join(f"{cs[first].at - c.at:.3f}" for c in cs[:first] if c.proc == "READDIRPLUS"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
