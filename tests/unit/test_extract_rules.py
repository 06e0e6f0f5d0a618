"""The index's per-new-file shortcuts (nfsd/index/extract.py) give what the transducers give:
the stat tier remembered per (extension, owner, group, size, day, kind) and the content tier
of a new empty file remembered per extension."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nfsd.index.extract import Extractor
from nfsd.index.transducers.builtin import default_transducers


def _files(tmp_path: Path) -> list[tuple[bytes, os.stat_result]]:
    out = []
    for name, size, mode in ((b"a.txt", 0, 0o644), (b"b.txt", 0, 0o644), (b"c.TXT", 0, 0o600),
                             (b"noext", 0, 0o644), (b"d.txt", 5, 0o644), (b".hidden", 0, 0o644),
                             (b"e.c", 0, 0o644), (b"f.c", 3, 0o644)):
        p = tmp_path / os.fsdecode(name)
        p.write_bytes(b"x" * size)
        p.chmod(mode)
        out.append((name, os.stat(p)))
    os.utime(tmp_path / "b.txt", ns=(0, 86_400 * 10**9 * 400))  # another day: other mtime keys
    out[1] = (b"b.txt", os.stat(tmp_path / "b.txt"))
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    out.append((b"pipe.txt", os.stat(fifo)))  # a FIFO gets no ext
    return out


def test_remembered_stat_tier_is_the_transducers_own(tmp_path: Path) -> None:
    files = _files(tmp_path)
    fast, slow = Extractor(default_transducers()), Extractor(default_transducers())
    for _ in range(2):  # the second round answers from the remembered rules
        for name, st in files:
            got = fast.stat_keys(name, st)
            want = slow._stat_keys(name, st)
            assert got.keys == want.keys, name
            assert got.failures == want.failures == []
            assert b"name\0" + name in got.keys
    # another owner with otherwise the same rule gets its own owner key
    name, st = files[0]
    twin = tmp_path / "twin.txt"
    twin.write_bytes(b"")
    os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    os.chown(twin, st.st_uid + 4242, st.st_gid)
    other = os.stat(twin)
    assert fast.stat_keys(name, other).keys == slow._stat_keys(name, other).keys
    assert fast.stat_keys(name, other).keys != fast.stat_keys(name, st).keys


def test_remembered_empty_content_is_the_transducers_own(tmp_path: Path) -> None:
    files = [(n, st) for n, st in _files(tmp_path) if st.st_size == 0 and stat.S_ISREG(st.st_mode)]
    fast = Extractor(default_transducers())
    for _ in range(2):
        for name, st in files:
            slow = Extractor(default_transducers())
            todo = [t for t in slow.content_tier if slow._applies(t, name, st)]
            want = slow.empty_content(name, st, todo)
            got = fast.empty_new(name, st)
            assert got is not None and want is not None
            assert got[0].keys == want.keys and got[0].failures == want.failures
            assert got[1] == slow.xver_for(name, st)
