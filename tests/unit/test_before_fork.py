"""nfsd/workers.py ``before_fork``: a worker's garbage collection leaves the pages of the
objects it inherited from the parent shared (docs/design.rst, "Several worker processes")."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from nfsd.workers import before_fork

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux /proc")


class Held:
    """A small object the collector tracks (it has a ``__dict__``)."""

    def __init__(self, i: int) -> None:
        self.i = i


def _private_kib() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))


def _copied_by_a_childs_collection() -> int:
    """KiB a forked child's full collection makes private."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before = _private_kib()
        gc.collect()
        os.write(w, b"%d" % (_private_kib() - before))
        os._exit(0)
    os.close(w)
    out = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    return int(out)


def test_a_workers_full_collection_does_not_copy_the_parents_objects() -> None:
    held = [Held(i) for i in range(200_000)]  # ~ 30 MiB with their dicts
    try:
        copied_unfrozen = _copied_by_a_childs_collection()
        before_fork()
        copied_frozen = _copied_by_a_childs_collection()
    finally:
        gc.unfreeze()
    assert copied_unfrozen > 10 * 1024  # the witness: without it, most of those pages
    assert copied_frozen < copied_unfrozen / 10
    del held


def test_garbage_is_collected_before_the_freeze_not_kept_in_every_worker() -> None:
    """``gc.freeze`` moves everything tracked, unreachable cycles too, to the permanent
    generation, which is never collected: start-up's cyclic garbage would stay in the
    parent and in every worker forked from it.  ``before_fork`` collects first."""
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    gone = weakref.ref(a)
    del a, b
    try:
        before_fork()
        assert gone() is None
    finally:
        gc.unfreeze()
