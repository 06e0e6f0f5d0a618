#!/usr/bin/env python3
"""The pjdfstest-style cases (workloads/pjd.sh, guest/fstest.c) through the Linux kernel
client against pysfsd and NFS-Ganesha, side by side: what tests/vm/test_vm_pjd.py runs.

One VM boot per server.  It prints every case where the servers answered differently or
where any server's answer is not one the case expects (what Linux answers on a local file
system), each with every server's answer, then a count per group.  Exit status 0 when
every server answered every case as expected, 1 otherwise.

Usage (root, for Ganesha; one VM at a time on this machine: run it under ``flock /tmp/vm.lock``):
    python scripts/vm/compare_pjd.py [--servers pysfsd,ganesha] [--mount-opts noac]

Servers as scripts/vm/compare_bench.py names them (``pysfsd``: the sync export,
``pysfsd-async``, ``-wN``, ``ganesha``; ``--tree NAME=PATH`` for ``pysfsd@NAME``).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import add_server_arguments  # noqa: E402
from compare_fsx import boot, conclude, prepare  # noqa: E402

CASE = re.compile(r"^INFO pjd (\S+)\.(\d+) got=(.*) want=(.*?): (.*)$")

Case = tuple[str, int]   # (group, number in the group)


def answers(lines: list[tuple[float, str]]) -> tuple[dict[Case, str], dict[Case, tuple[str, str]]]:
    """The answers per case, and each case's (wanted answers, fstest arguments)."""
    got: dict[Case, str] = {}
    cases: dict[Case, tuple[str, str]] = {}
    for _, line in lines:
        m = CASE.match(line)
        if m:
            key = (m[1], int(m[2]))
            got[key] = m[3]
            cases[key] = (m[4], m[5])
    return got, cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.set_defaults(servers="pysfsd,ganesha")
    parser.add_argument("--mount-opts", default="", help="extra mount options, e.g. noac")
    ready = prepare(parser, parser.parse_args(argv), "vmpjd-")
    if ready is None:
        return 2
    servers, trees, vm, work, env = ready
    got: dict[str, dict[Case, str]] = {}
    cases: dict[Case, tuple[str, str]] = {}
    failures: list[str] = []
    images: set[str] = set()
    for s in servers:
        result, failed, initramfs = boot(vm, s, "pjd.sh", env, work, trees.get(s.partition("@")[2]))
        got[s], seen = answers(result.lines)
        cases.update(seen)
        images.add(initramfs)
        failures += failed + [f"{s}: {line}" for _, line in result.lines   # the cases are in the table
                              if line.startswith("STEP ") and " FAIL" in line and not line.startswith("STEP pjd_")]
        print(f"{s}: {len(got[s])} cases, {result.elapsed:.0f} s", flush=True)
    if len(images) > 1:   # scripts/vm edited meanwhile
        failures.append(f"the servers booted different initramfs images: {sorted(images)}")
    width = max(len(s) for s in servers) + 2
    print(f"\n{'case':14} {'want':18} " + "".join(f"{s:{width}}" for s in servers) + "fstest arguments")
    groups: dict[str, list[int]] = {}
    for key in sorted(cases):
        want, call = cases[key]
        answered = [got[s].get(key, "missing") for s in servers]
        wrong = [a not in want.split("|") for a in answered]
        counts = groups.setdefault(key[0], [0, 0, 0])
        counts[0] += 1
        counts[1] += any(wrong)
        counts[2] += len(set(answered)) > 1
        if any(wrong) or len(set(answered)) > 1:
            marks = [f"{a}{'*' if w else ''}" for a, w in zip(answered, wrong)]
            print(f"{key[0]}.{key[1]:<{13 - len(key[0])}} {want:18} " + "".join(f"{m:{width}}" for m in marks) + call)
            if any(wrong):
                failures.append(f"{key[0]}.{key[1]}: " + ", ".join(f"{s} {a}" for s, a, w in zip(servers, answered, wrong) if w))
    print("\n(* not what the case expects)\n\ngroup      cases  unexpected  servers differ")
    for group, (n, bad, differ) in groups.items():
        print(f"{group:10} {n:5}  {bad:10}  {differ:14}")
    print(f"{'all':10} {sum(c[0] for c in groups.values()):5}  {sum(c[1] for c in groups.values()):10}  "
          f"{sum(c[2] for c in groups.values()):14}")
    return conclude(failures, work)


if __name__ == "__main__":
    sys.exit(main())
