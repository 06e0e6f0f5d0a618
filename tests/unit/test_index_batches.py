"""A scan's write transactions stay within ``BATCH_OPS`` writes: LMDB keeps the page buffers
of the largest one for as long as the environment is open (nfsd/index/scanner.py)."""
from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from nfsd.index import Index, scanner
from nfsd.index.tables import Tables, Writer
from nfsd.index.transducers.builtin import default_transducers

FILES = 300


def transaction_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The write count of every index transaction committed from now on, in order."""
    sizes: list[int] = []
    commit = Writer.commit

    def counted(w: Writer) -> int | None:
        if w.is_open:
            sizes.append(w.ops)
        return commit(w)

    monkeypatch.setattr(Writer, "commit", counted)
    return sizes


def test_scan_commits_every_batch_ops_writes(env: lmdb.Environment, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # one directory of FILES files: fewer entries than a CHUNK, so before the budget was
    # checked after every entry the stat tier of them all went in one transaction
    root = tmp_path / "export"
    root.mkdir()
    for i in range(FILES):
        (root / f"f{i:03d}.txt").write_text(f"alpha beta{i % 7} gamma{i}\n")
    monkeypatch.setattr(scanner, "BATCH_OPS", 50)
    monkeypatch.setattr(scanner, "BATCH_SECONDS", 3600.0)  # only the write budget commits
    sizes = transaction_sizes(monkeypatch)
    idx = Index(env, str(root), 1, transducers=default_transducers())
    try:
        stats = idx.scan(progress=False)
        assert stats.added == FILES
        # a budget checked after each entry or result: one file's writes past it at most
        assert max(sizes) <= 50 + 40
        assert sum(sizes) > 10 * (50 + 40)  # many transactions, not one
        # and nothing was lost between them: every file is found by its words
        assert len(idx.query(idx.root_ino, [(b"text", b"alpha")])) == FILES
        assert len(idx.query(idx.root_ino, [(b"text", b"gamma123")])) == 1
    finally:
        idx.close()
    with env.begin() as txn:
        assert Tables(env, 1).places_differences(txn) == (0, 0)


CREATED = 400


@pytest.mark.parametrize("created", [True, False], ids=["note_created", "note_entry"])
def test_flush_commits_every_flush_ops_writes(env: lmdb.Environment, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, created: bool) -> None:
    # A create storm in one directory, flushed: before, the flush's loop over the noted
    # names never looked at its budget, so every name of a directory went in one transaction
    # (LMDB's ``me_dpages``: the primary kept that many page buffers for good; its memory
    # after a load followed the CREATEs it served)
    root = tmp_path / "export"
    (root / "d").mkdir(parents=True)
    monkeypatch.setattr(scanner, "FLUSH_OPS", 50)
    monkeypatch.setattr(scanner, "BATCH_SECONDS", 3600.0)  # only the write budget commits
    idx = Index(env, str(root), 1, transducers=default_transducers())
    try:
        idx.scan(progress=False)
        d = (root / "d").stat().st_ino
        for i in range(CREATED):
            path = root / "d" / f"n{i:04d}.c"
            path.touch()
            if created:
                idx.note_created(d, path.name.encode(), path.stat())
            else:
                idx.note_entry(d, path.name.encode())
        sizes = transaction_sizes(monkeypatch)  # the flush's, not the scan's
        assert idx.flush()
        assert max(sizes) <= 50 + 40  # one name's writes past the budget at most
        assert sum(sizes) > 5 * (50 + 40)  # many transactions, not one
        # nothing was lost between them: every file is found by its extension
        assert len(idx.query(idx.root_ino, [(b"ext", b"c")])) == CREATED
    finally:
        idx.close()
    with env.begin() as txn:
        assert Tables(env, 1).places_differences(txn) == (0, 0)
