"""nfsd/index/transducers/magicdb.py: libmagic's database narrowed to plain text by its
first byte answers every plain-text buffer as the full database does, and is what the
``Sniffer`` uses for them (docs/design.rst, "MIME sniff of plain text")."""
from __future__ import annotations

import os
import random
import runpy
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

magic = pytest.importorskip("magic")

from nfsd.index.transducers import magicdb  # noqa: E402
from nfsd.index.transducers.interface import Sniffer  # noqa: E402

try:
    _DEFAULT = magicdb.default_path()
    _COMPILED = [p if p.endswith(".mgc") else p + ".mgc" for p in _DEFAULT.split(":")]
    _COMPILED = [p for p in _COMPILED if os.path.isfile(p)]
    _KNOWN = bool(_COMPILED) and struct.unpack_from("<II", Path(_COMPILED[0]).read_bytes()[:8]) == (
        magicdb.MAGICNO, magicdb.VERSIONNO)
except (OSError, ValueError):
    _KNOWN = False
pytestmark = pytest.mark.skipif(not _KNOWN or magic.version() not in magicdb.VERIFIED_RELEASES,
                                reason="libmagic or its database is not of a release narrowed")


def _plain_heads(limit: int) -> list[bytes]:
    """Heads of plain-text files of this tree, Python's library and /etc (the walk of
    scripts/benchmarks/bench_sniff.py)."""
    saved = list(sys.path)  # (the script puts the tree on it)
    try:
        walk = runpy.run_path(str(Path(__file__).resolve().parents[2] / "scripts/benchmarks/bench_sniff.py"))
    finally:
        sys.path[:] = saved
    roots = [Path(__file__).resolve().parents[2], Path(os.__file__).parent, Path("/etc"), Path("/usr/share/misc")]
    return list(walk["plain_heads"]([str(r) for r in roots], limit))


def _kept_signatures() -> list[bytes]:
    """The plain values of the string tests kept for one first byte only (the entries that
    the narrowing keeps by first byte must still match as before)."""
    source = magicdb._Source(_COMPILED[0])
    try:
        out = []
        for key, _, start, _ in source.entries:
            if key < 0:
                continue
            vallen, kind = source.data[start + 5], source.data[start + 6]
            value = bytes(source.data[start + 32:start + 32 + vallen])
            if kind == 5 and magicdb.is_plain(value):
                out.append(value)
        return out
    finally:
        source.close()


def _answers_differ(buffers: list[bytes], by_length: bool) -> tuple[list[tuple[bytes, str, str]], set[str]]:
    """Each buffer sniffed with the full database and with the narrowed one ``path`` gives
    it (by its first byte; by its length too with ``by_length``): the buffers answered
    differently, and the databases used."""
    full = magic.Magic(mime=True)
    narrow = magicdb.NarrowDatabases(limit=256)
    handles: dict[str, Any] = {}
    differ = []
    try:
        for data in buffers:
            path = narrow.path(data[0], len(data) if by_length else 0)
            assert path is not None
            if path not in handles:
                handles[path] = magic.Magic(mime=True, magic_file=path)
            want, got = full.from_buffer(data), handles[path].from_buffer(data)
            if want != got:
                differ.append((data[:40], want, got))
    finally:
        narrow.close()
    return differ, set(handles)


def test_narrowed_databases_answer_plain_text_as_the_full_one() -> None:
    rng = random.Random(10)
    heads = _plain_heads(1200)
    buffers = list(heads)
    buffers += [h[:rng.randint(2, 80)] for h in heads]
    buffers += [bytes(rng.choice(magicdb.PLAIN) for _ in range(rng.randint(2, 60))) for _ in range(1500)]
    signatures = _kept_signatures()
    assert len(signatures) > 500
    buffers += signatures + [s + b"\n" for s in signatures] + [s + b" line 1\nline 2\n" for s in signatures]
    buffers = [b for b in buffers if magicdb.is_plain(b)]
    differ, used = _answers_differ(buffers, by_length=False)
    assert not differ, differ[:10]
    assert len(used) > 60  # most first bytes of plain text were narrowed and checked


def test_narrowing_drops_most_of_the_walk_for_a_line_of_text() -> None:
    """The narrowed database for ``l`` holds under a third of the top-level entries (the
    binary signatures go): what makes ``line 5`` cheap to type."""
    source = magicdb._Source(_COMPILED[0])
    try:
        everything = len(source.entries)
        kept = sum(1 for key, _, _, _ in source.entries if key in (magicdb._ALWAYS, ord("l")))
    finally:
        source.close()
    assert kept < everything / 3


def test_short_databases_answer_short_plain_text_as_the_full_one() -> None:
    """A buffer of at most SHORT bytes is sniffed with a database also without the tests
    that need more bytes: the same answers, over file heads and signatures cut short, the
    kept signatures themselves and random plain strings, for every first byte met."""
    rng = random.Random(16)
    heads = _plain_heads(1200)
    signatures = [s for s in _kept_signatures() if len(s) <= magicdb.SHORT]
    assert len(signatures) > 100
    buffers = [h[:rng.randint(2, magicdb.SHORT)] for h in heads]
    buffers += [h[:n] for h in heads[:300] for n in (2, 3, 5, 8, magicdb.SHORT)]
    buffers += signatures + [s + b"\n" for s in signatures] + [(s + b" line 1\n")[:magicdb.SHORT] for s in signatures]
    buffers += [bytes(rng.choice(magicdb.PLAIN) for _ in range(rng.randint(2, magicdb.SHORT))) for _ in range(3000)]
    buffers += [b"line %d\n" % i for i in range(0, 100_000, 997)] + [b"hello world\n", b"a,b\n1,2\n", b"{}\n", b"<a>\n"]
    buffers = [b for b in buffers if magicdb.is_plain(b) and len(b) <= magicdb.SHORT]
    differ, used = _answers_differ(buffers, by_length=True)
    assert not differ, differ[:10]
    assert len(used) > 60 and all(f"-{magicdb.SHORT}-" in p for p in used)


def test_a_short_line_walks_a_smaller_database() -> None:
    """For ``line 5`` the short database for ``l`` keeps under three quarters of the first
    byte's top-level entries (the signatures at offsets past 16 bytes go); a buffer one
    byte longer than SHORT uses the first byte's."""
    source = magicdb._Source(_COMPILED[0])
    try:
        first = [need for key, need, _, _ in source.entries if key in (magicdb._ALWAYS, ord("l"))]
    finally:
        source.close()
    assert sum(1 for need in first if need <= magicdb.SHORT) < 0.75 * len(first)
    narrow = magicdb.NarrowDatabases()
    try:
        short, longer = narrow.path(ord("l"), magicdb.SHORT), narrow.path(ord("l"), magicdb.SHORT + 1)
        assert short is not None and longer is not None and short != longer
        assert narrow.path(ord("l")) == longer
        sizes = [os.path.getsize(p.split(":")[-1]) for p in (short, longer)]
        assert sizes[0] < sizes[1]
    finally:
        narrow.close()


def test_sniffer_uses_a_narrowed_database_for_plain_text_only() -> None:
    sniffer = Sniffer(narrow_after=0)
    try:
        assert sniffer.mime(b"line 5\n") == "text/plain"
        assert sniffer.mime(b"#!/bin/sh\necho hi\n") == "text/x-shellscript"
        assert sniffer.mime(b"%PDF-1.4\n") == "application/pdf"  # plain: a narrowed database
        gzip = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\x01" * 20
        assert sniffer.mime(gzip) == "application/gzip"  # not plain: the full database
        maps = Path("/proc/self/maps").read_text() if sys.platform == "linux" else ""
        assert "pysfsd-magic-" in maps or sys.platform != "linux"
        narrowed = sniffer._narrow
        # (the shell script is longer than SHORT: the first byte's database, not the short one)
        assert narrowed is not None and sorted(narrowed._paths) == [
            (ord("#"), 0), (ord("%"), magicdb.SHORT), (ord("l"), magicdb.SHORT)]
    finally:
        sniffer.release()


def test_first_bytes_past_the_limit_and_a_release_still_answer() -> None:
    sniffer = Sniffer(narrow_after=0)
    texts = [bytes([c]) + b"ine 1\n" for c in b"abcdefgh"]
    assert [sniffer.mime(t) for t in texts] == ["text/plain"] * len(texts)
    narrowed = sniffer._narrow
    assert narrowed is not None and len(narrowed._firsts) == magicdb.MAX_FIRST_BYTES
    directory = narrowed._dir
    assert directory is not None and os.path.isdir(directory)
    assert sniffer.release() >= 1
    assert not os.path.exists(directory)
    assert sniffer.mime(b"line 2\n") == "text/plain"  # written again
    sniffer.release()


def test_a_killed_process_s_databases_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 leaves the directory behind; the next process that narrows removes it (and
    leaves a live process's alone)."""
    monkeypatch.setattr(magicdb.tempfile, "tempdir", str(tmp_path))
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    stale = tmp_path / f"{magicdb._PREFIX}{dead}-x"
    alive = tmp_path / f"{magicdb._PREFIX}{os.getppid()}-y"
    for d in (stale, alive):
        d.mkdir()
        (d / "first6c-1.mgc").write_bytes(b"x")
    narrow = magicdb.NarrowDatabases()
    try:
        assert narrow.path(ord("l")) is not None
        assert not stale.exists() and alive.exists()
    finally:
        narrow.close()


def test_the_files_go_with_the_object_and_with_a_release() -> None:
    """Many indexes live and die in one process (the tests, ``pysfsd index``): none leaves
    its narrowed databases behind (``Index.close`` releases its sniffer)."""
    import gc

    narrow = magicdb.NarrowDatabases()
    assert narrow.path(ord("l")) is not None
    directory = narrow._dir
    assert directory is not None and os.path.isdir(directory)
    del narrow
    gc.collect()
    assert not os.path.exists(directory)

    sniffer = Sniffer(narrow_after=0)
    assert sniffer.mime(b"line 1\n") == "text/plain"
    assert sniffer._narrow is not None
    directory = sniffer._narrow._dir
    assert directory is not None and os.path.isdir(directory)
    sniffer.release()
    assert not os.path.exists(directory)


def test_an_unchecked_libmagic_release_is_not_narrowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(magic, "version", lambda: 546)
    sniffer = Sniffer(narrow_after=0)
    try:
        assert sniffer.mime(b"line 1\n") == "text/plain"  # from the full database
        assert sniffer._narrow is not None and sniffer._narrow.broken and sniffer._narrow._dir is None
    finally:
        sniffer.release()


def test_a_sniffer_narrows_only_once_text_keeps_coming() -> None:
    """Writing a narrowed database costs more than loading the full one: a lone text file
    after a release is sniffed with the full database, the NARROW_AFTER+1st with a narrowed
    one; a release starts counting again."""
    from nfsd.index.transducers.interface import NARROW_AFTER

    sniffer = Sniffer()
    narrowed = sniffer._narrow
    assert narrowed is not None
    try:
        for i in range(NARROW_AFTER):
            assert sniffer.mime(b"line %d\n" % i) == "text/plain"
        assert narrowed._dir is None
        assert sniffer.mime(b"line 0\n") == "text/plain"
        assert narrowed._dir is not None
        sniffer.release()
        assert sniffer.mime(b"line 1\n") == "text/plain"
        assert narrowed._dir is None
    finally:
        sniffer.release()
