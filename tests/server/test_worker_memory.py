"""Memory with ``--workers 2``: what only the index writer uses is loaded in it alone
(docs/design.rst, "Several worker processes": memory).

The transducers' libraries (libmagic's, Pillow's, pypdf, mutagen) are imported at their
first use; only the primary extracts, so the supervisor and the followers never map them.
libmagic is the witness: the primary maps it once it sniffed a file, so its absence
elsewhere is not a missing library."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.server.test_workers import two_workers

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_only_the_primary_loads_the_transducers_libraries(tmp_path: Path) -> None:
    with two_workers(tmp_path) as srv:
        assert srv.proc is not None
        found = re.search(r"workers: pids (\d+) (\d+)", srv.log_path.read_text())
        assert found, srv.log_path.read_text()
        primary, follower = int(found[1]), int(found[2])
        assert "libmagic" in _maps(primary)  # it sniffed src/old.c for the first index
        for pid in (srv.proc.pid, follower):
            maps = _maps(pid)
            assert "libmagic" not in maps and "_imaging" not in maps, pid
