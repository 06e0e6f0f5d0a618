"""Memory with ``--workers 2``: what only the index writer uses is loaded in it alone
(docs/design.rst, "Several worker processes": memory).

The transducers' libraries (libmagic's, Pillow's, pypdf, mutagen, tree-sitter) are imported at their
first use; only the primary extracts, so the supervisor and the followers never map them.
libmagic is the witness: the primary maps it once it sniffed a file, so its absence
elsewhere is not a missing library."""
from __future__ import annotations

import os
import re
import time
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
        assert "tree_sitter_c" in _maps(primary)  # and parsed it
        for pid in (srv.proc.pid, follower):
            maps = _maps(pid)
            assert "libmagic" not in maps and "_imaging" not in maps and "tree_sitter" not in maps, pid


def _database_resident_kib(pid: int) -> int:
    """KiB of libmagic's database resident in ``pid``'s mappings of it (python-magic's
    import opens two handles of its own that map it but touch a page or two)."""
    kib, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.endswith("magic.mgc")
        elif inside and line.startswith("Rss:"):
            kib += int(line.split()[1])
    return kib


def test_a_quiet_primary_closes_its_libmagic_handles(tmp_path: Path) -> None:
    """After the first index, the primary's first quiet spell (``HeapTrim``, on the idle-fd
    tick) closes the handles it sniffed with: libmagic's database (8 MiB, most of it
    resident in a handle that sniffed a text file) leaves its resident set."""
    with two_workers(tmp_path, "--idle-fd-seconds", "0.5") as srv:
        found = re.search(r"workers: pids (\d+) (\d+)", srv.log_path.read_text())
        assert found, srv.log_path.read_text()
        primary = int(found[1])
        deadline = time.monotonic() + 30
        while _database_resident_kib(primary) > 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _database_resident_kib(primary) <= 1024
        assert "libmagic" in _maps(primary)  # it did sniff (src/old.c), and keeps the library
