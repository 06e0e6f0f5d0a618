"""The semantic index on real trees: fields, queries, scopes, changes, notes, transducers."""
from __future__ import annotations

import calendar
import grp
import logging
import os
import pwd
import random
import stat
import threading
from pathlib import Path
from typing import Any, Iterable

import lmdb
import pytest

from nfsd.index import BUILTIN_FIELDS, Content, FileRef, Index
from nfsd.index.transducers.builtin import StatFields, default_transducers
from nfsd.index.fields import size_bucket, words
from nfsd.index.transducers.interface import Tier
from nfsd.index.tables import EMPTY, INO, NO_XVER, FileRecord, Tables, Writer

C_SOURCE = b"""\
#include <stdio.h>
#include <sys/stat.h>
#include "local.h"
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static int counter;
int shared = 1, *shared_ptr;
extern int elsewhere;
int prototype(int);
int (*callback)(int);
typedef int myint;

static void helper(void) { printf("hello\\n"); }

char *make(int n) { helper(); return malloc(n); }

#ifdef FEATURE
void feature(void) { puts("feature"); }
#endif

int main(int argc, char **argv)
{
    struct stat sb;
    counter = MAX(argc, 1);
    return stat(argv[0], &sb) + callback(2);
}
"""

C_HEADER = b"""\
#ifndef LIB_H
#define LIB_H
#include <stddef.h>
extern int lib_errno;
size_t lib_len(const char *s);
static inline int lib_private(void) { return 0; }
#endif
"""

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
       b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00"
       b"IEND\xaeB`\x82")
WHEN = calendar.timegm((2026, 11, 21, 12, 0, 0))  # a fixed mtime, UTC


class Counter:
    """A content-tier transducer that counts its runs per file name."""

    name = "counter"
    version = 1
    tier: Tier = "content"

    def __init__(self) -> None:
        self.runs: dict[bytes, int] = {}
        self.lock = threading.Lock()

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode)

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        with self.lock:
            self.runs[name] = self.runs.get(name, 0) + 1
        return [(b"counted", b"yes")]

    @property
    def total(self) -> int:
        return sum(self.runs.values())


def write(path: Path, data: bytes | str, mtime: float | None = WHEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def make_tree(root: Path) -> None:
    write(root / "src" / "x.c", C_SOURCE)
    write(root / "src" / "lib" / "lib.h", C_HEADER)
    write(root / "src" / "lib" / "util.py", "def helper():\n    return 'python words'\n")
    write(root / "docs" / "readme.txt", "Hello World, the Semantic file system.\nhello again\n")
    write(root / "docs" / "pic.png", PNG)
    write(root / "docs" / "notes.md", "# Notes\nsmith owns these notes\n")
    write(root / "empty", b"")
    write(root / "archive.tar.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    write(root / "README", "plain readme\n")
    write(root / ".bashrc", "export PATH\n")
    write(root / "medium.bin", random.Random("medium.bin").randbytes(70 << 10))  # fixed: random bytes may start "MZ"
    os.symlink("docs/readme.txt", root / "link.txt")
    os.mkfifo(root / "pipe")
    for special in ("link.txt", "pipe"):  # every file's mtime is WHEN: nothing depends on today
        os.utime(root / special, (WHEN, WHEN), follow_symlinks=False)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    root.mkdir()
    make_tree(root)
    return root


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def index(env: lmdb.Environment, export: Path, counter: Counter) -> Iterable[Index]:
    idx = Index(env, str(export), 1, transducers=default_transducers() + [counter])
    idx.scan(progress=False)
    yield idx
    idx.close()
    # whatever the test did, the places beside the postings are what these and the records give
    with env.begin() as txn:
        assert Tables(env, 1).places_differences(txn) == (0, 0)


def paths(refs: list[FileRef]) -> list[bytes]:
    return [r.path for r in refs]


def q(idx: Index, *terms: tuple[bytes, bytes], scope: int | None = None) -> list[bytes]:
    return paths(idx.query(idx.root_ino if scope is None else scope, list(terms)))


def fields_of(idx: Index, relpath: bytes) -> dict[bytes, set[bytes]]:
    """Every (field, value) the index holds for one file, through the public API."""
    ino = idx.ino_of(relpath)
    assert ino is not None
    out: dict[bytes, set[bytes]] = {}
    for field in idx.fields():
        for value in idx.values(field, idx.root_ino):
            if any(r.ino == ino for r in idx.query(idx.root_ino, [(field, value)])):
                out.setdefault(field, set()).add(value)
    return out


# -- built-in fields --------------------------------------------------------------------
def test_scan_counts_every_non_directory(env: lmdb.Environment, export: Path) -> None:
    fresh = Index(env, str(export), 2)
    stats = fresh.scan(progress=False)
    assert (stats.seen, stats.added, stats.updated, stats.removed, stats.failed) == (13, 13, 0, 0, 0)
    fresh.close()


def test_name_ext_size_mtime(index: Index) -> None:
    f = fields_of(index, b"archive.tar.gz")
    assert f[b"name"] == {b"archive.tar.gz"}
    assert f[b"ext"] == {b"gz"}
    assert f[b"size"] == {b"tiny"}
    assert f[b"mtime"] == {b"2026", b"2026-11", b"2026-11-21"}
    for no_ext in (b"README", b".bashrc"):
        assert b"ext" not in fields_of(index, no_ext)
    assert index.values(b"size", index.root_ino) == [b"empty", b"medium", b"tiny"]
    assert q(index, (b"size", b"medium")) == [b"medium.bin"]
    assert q(index, (b"size", b"empty")) == [b"empty", b"pipe"]


def test_size_buckets() -> None:
    cases = {0: b"empty", 1: b"tiny", 1023: b"tiny", 1024: b"small", (64 << 10) - 1: b"small",
             64 << 10: b"medium", (1 << 20) - 1: b"medium", 1 << 20: b"large", (64 << 20) - 1: b"large",
             64 << 20: b"huge", 1 << 40: b"huge"}
    assert {n: size_bucket(n) for n in cases} == cases


def test_owner_and_group(index: Index) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name.encode()
    mine = grp.getgrgid(os.getgid()).gr_name.encode()
    assert index.values(b"owner", index.root_ino) == [me]
    assert index.values(b"group", index.root_ino) == [mine]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_without_a_name_is_the_number(index: Index, export: Path) -> None:
    os.chown(export / "README", 54321, 54320, follow_symlinks=False)
    index.scan(progress=False)
    f = fields_of(index, b"README")
    assert f[b"owner"] == {b"54321"} and f[b"group"] == {b"54320"}


def test_type_values_hold_slashes(index: Index) -> None:
    types = index.values(b"type", index.root_ino)
    for expected in (b"text/x-c", b"text/plain", b"image/png", b"application/x-empty",
                     b"inode/symlink", b"inode/fifo", b"application/gzip"):
        assert expected in types
    assert q(index, (b"type", b"image/png")) == [b"docs/pic.png"]
    assert q(index, (b"type", b"inode/symlink")) == [b"link.txt"]
    assert q(index, (b"type", b"inode/fifo")) == [b"pipe"]


def test_unknown_content_is_octet_stream(index: Index) -> None:
    assert fields_of(index, b"medium.bin")[b"type"] == {b"application/octet-stream"}


def test_progress_modes(env: lmdb.Environment, export: Path, capsys: pytest.CaptureFixture[str],
                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pysfsd.index")
    idx = Index(env, str(export), 8)
    idx.scan(progress=True)
    assert "indexing" in capsys.readouterr().err  # a tqdm bar
    idx.scan(progress=None)  # stderr is no terminal here: log lines, no bar
    assert "indexing" not in capsys.readouterr().err
    assert "indexed " in caplog.text and "unchanged=13" in caplog.text
    idx.close()


def test_special_files_get_stat_fields_only(index: Index) -> None:
    f = fields_of(index, b"link.txt")
    assert set(f) == {b"name", b"ext", b"owner", b"group", b"size", b"mtime", b"type"}
    # the symlink's target is never read through the link
    assert b"text" not in f and b"counted" not in f
    assert set(fields_of(index, b"pipe")) == {b"name", b"owner", b"group", b"size", b"mtime", b"type"}


def test_text_words(index: Index) -> None:
    f = fields_of(index, b"docs/readme.txt")
    assert f[b"text"] == {b"hello", b"world", b"the", b"semantic", b"file", b"system", b"again"}
    assert q(index, (b"text", b"smith")) == [b"docs/notes.md"]
    assert q(index, (b"text", b"python")) == [b"src/lib/util.py"]
    assert b"text" not in fields_of(index, b"docs/pic.png")
    assert b"text" not in fields_of(index, b"medium.bin")


def test_word_rules() -> None:
    assert words(b"A aa AB_c 123 x_1 " + b"y" * 65 + b" " + b"z" * 64, True) == \
        [b"aa", b"ab_c", b"123", b"x_1", b"z" * 64]
    assert words("Café STRASSE straße naïve ß".encode(), True) == \
        ["café".encode(), b"strasse", "straße".encode(), "naïve".encode()]
    # NFC: a decomposed é is the same word as a composed one
    assert words("cafe\u0301".encode(), True) == ["café".encode()]
    assert words(b"hello wor", False) == [b"hello"]  # a word cut by the read limit is dropped
    many = b" ".join(b"w%d" % i for i in range(20_000))
    assert len(words(many, True)) == 10_000


def test_text_reads_the_first_mib_only(env: lmdb.Environment, tmp_path: Path) -> None:
    root = tmp_path / "big"
    write(root / "big.txt", "early " * 200_000 + "lateword\n")  # 1.2 MB
    idx = Index(env, str(root), 7)
    idx.scan(progress=False)
    assert q(idx, (b"text", b"early")) == [b"big.txt"]
    assert q(idx, (b"text", b"lateword")) == []
    idx.close()


def test_c_exports_and_imports(index: Index) -> None:
    f = fields_of(index, b"src/x.c")
    assert f[b"exports"] == {b"shared", b"shared_ptr", b"callback", b"make", b"feature", b"main"}
    # called functions the file defines (helper), pointers it defines (callback) and its own
    # macros (MAX) are no imports
    assert f[b"imports"] == {b"stdio.h", b"sys/stat.h", b"local.h", b"printf", b"malloc", b"puts", b"stat"}
    assert q(index, (b"imports", b"sys/stat.h")) == [b"src/x.c"]
    assert q(index, (b"exports", b"helper")) == [b"src/lib/util.py"]  # static in x.c, a def in util.py


def test_header_exports_declarations(index: Index) -> None:
    f = fields_of(index, b"src/lib/lib.h")
    assert f[b"exports"] == {b"lib_errno", b"lib_len"}
    assert f[b"imports"] == {b"stddef.h"}


# -- queries and values ---------------------------------------------------------------
def test_queries_with_terms_and_scopes(index: Index) -> None:
    src = index.ino_of(b"src")
    lib = index.ino_of(b"src/lib")
    docs = index.ino_of(b"docs")
    assert src and lib and docs
    assert q(index, (b"ext", b"c")) == [b"src/x.c"]
    assert q(index, (b"size", b"tiny"), (b"ext", b"txt")) == [b"docs/readme.txt", b"link.txt"]
    assert q(index, (b"size", b"tiny"), (b"ext", b"txt"), (b"type", b"text/plain")) == [b"docs/readme.txt"]
    assert q(index, (b"size", b"tiny"), scope=lib) == [b"src/lib/lib.h", b"src/lib/util.py"]
    assert q(index, (b"size", b"tiny"), scope=src) == [b"src/lib/lib.h", b"src/lib/util.py", b"src/x.c"]
    assert q(index, (b"ext", b"c"), scope=docs) == []
    assert q(index, (b"ext", b"nosuch")) == []
    assert q(index, (b"nosuch", b"x")) == []
    assert index.query(999_999_999, [(b"size", b"tiny")]) == []
    assert index.query(index.ino_of(b"README") or 0, [(b"size", b"tiny")]) == []  # not a directory
    everything = q(index)
    assert everything == sorted(everything) and len(everything) == 13
    assert not {b"src", b"docs", b"src/lib"} & set(everything)  # directories are no results
    assert q(index, scope=lib) == [b"src/lib/lib.h", b"src/lib/util.py"]


def test_query_results_carry_inodes(index: Index, export: Path) -> None:
    [ref] = index.query(index.root_ino, [(b"ext", b"c")])
    assert ref.ino == os.stat(export / "src" / "x.c").st_ino


def test_values_in_scope_and_with_terms(index: Index) -> None:
    src = index.ino_of(b"src")
    assert src is not None
    assert index.values(b"ext", src) == [b"c", b"h", b"py"]
    assert index.values(b"ext", src, [(b"type", b"text/x-c")]) == [b"c", b"h"]
    assert index.values(b"ext", src, [(b"type", b"text/x-c"), (b"exports", b"main")]) == [b"c"]
    assert index.values(b"ext", index.root_ino, [(b"size", b"tiny"), (b"text", b"hello")]) == [b"c", b"txt"]
    assert index.values(b"exports", index.root_ino) == sorted(
        [b"callback", b"feature", b"lib_errno", b"lib_len", b"main", b"make", b"shared", b"shared_ptr",
         b"helper"])  # util.py's
    assert index.values(b"ext", 999_999_999) == []
    assert index.values(b"nosuch", index.root_ino) == []


def test_fields_and_is_field(env: lmdb.Environment, index: Index) -> None:
    fields = index.fields()
    assert fields == sorted(fields)
    # the built-in fields some file of the tree has (pic.png its size), and the counter's
    assert set(fields) == {b"name", b"ext", b"owner", b"group", b"type", b"size", b"mtime", b"text",
                           b"exports", b"imports", b"width", b"height", b"counted"}
    assert set(fields) <= set(BUILTIN_FIELDS) | {b"counted"}
    assert index.is_field(b"counted") and index.is_field(b"exports")
    assert not index.is_field(b"nosuch")
    empty = Index(env, index.root_path, 99, transducers=[])
    assert empty.fields() == [] and empty.is_field(b"text") and not empty.is_field(b"counted")
    empty.close()


def test_counts(index: Index) -> None:
    counts = index.counts()
    assert counts[b"name"] == (13, 13)
    assert counts[b"mtime"] == (3, 39)
    assert counts[b"ext"] == (8, 9)


def test_paths_and_inodes(index: Index, export: Path) -> None:
    ino = os.stat(export / "src" / "lib" / "lib.h").st_ino
    assert index.ino_of(b"src/lib/lib.h") == ino
    assert index.ino_of(b"/src/lib/lib.h") == ino
    assert index.path_of(ino) == b"src/lib/lib.h"
    assert index.path_of(index.root_ino) == b""
    assert index.ino_of(b"") == index.root_ino
    assert index.path_of(index.ino_of(b"src/lib") or 0) == b"src/lib"
    assert index.ino_of(b"src/nosuch") is None
    assert index.path_of(123_456_789) is None


# -- changes ----------------------------------------------------------------------------
def test_second_scan_touches_nothing(index: Index, counter: Counter) -> None:
    runs, version = counter.total, index.version
    stats = index.scan(progress=False)
    assert (stats.seen, stats.unchanged, stats.added, stats.updated, stats.removed) == (13, 13, 0, 0, 0)
    assert counter.total == runs and index.version == version


def test_restart_keeps_the_index(env: lmdb.Environment, export: Path, index: Index, counter: Counter) -> None:
    index.close()
    again = Index(env, str(export), 1, transducers=default_transducers() + [counter])
    runs = counter.total
    stats = again.scan(progress=False)
    assert stats.unchanged == 13 and counter.total == runs
    assert q(again, (b"ext", b"c")) == [b"src/x.c"]
    again.close()


def test_new_transducer_set_re_extracts(env: lmdb.Environment, export: Path, index: Index, counter: Counter) -> None:
    index.close()
    runs = counter.total
    again = Index(env, str(export), 1, transducers=[StatFields(), counter])
    stats = again.scan(progress=False)
    assert stats.updated == 13 and counter.total == runs + 11  # every regular file
    assert again.values(b"type", again.root_ino) == [] and again.values(b"text", again.root_ino) == []
    assert again.scan(progress=False).unchanged == 13
    again.close()
    stat_only = Index(env, str(export), 1, transducers=[StatFields()])
    assert stat_only.scan(progress=False).updated == 13
    assert stat_only.fields() == [b"ext", b"group", b"mtime", b"name", b"owner", b"size"]
    assert stat_only.scan(progress=False).unchanged == 13
    stat_only.close()


def test_rename_and_move_keep_content_fields(index: Index, export: Path, counter: Counter) -> None:
    runs = counter.total
    os.rename(export / "docs" / "readme.txt", export / "docs" / "renamed.txt")
    os.rename(export / "src" / "x.c", export / "docs" / "moved.c")
    stats = index.scan(progress=False)
    assert stats.updated == 2 and stats.added == 0 and stats.removed == 0
    assert counter.total == runs  # no re-extraction
    assert q(index, (b"text", b"semantic")) == [b"docs/renamed.txt"]
    assert q(index, (b"exports", b"main")) == [b"docs/moved.c"]
    assert q(index, (b"name", b"readme.txt")) == []
    assert q(index, (b"name", b"renamed.txt")) == [b"docs/renamed.txt"]


def test_directory_rename_moves_its_subtree(index: Index, export: Path, counter: Counter) -> None:
    runs, version = counter.total, index.version
    os.rename(export / "src", export / "source")
    index.scan(progress=False)
    assert counter.total == runs
    assert index.version != version
    assert q(index, (b"exports", b"lib_len")) == [b"source/lib/lib.h"]
    assert index.ino_of(b"src") is None and index.path_of(index.ino_of(b"source/lib") or 0) == b"source/lib"


def test_modified_file_is_re_extracted(index: Index, export: Path, counter: Counter) -> None:
    write(export / "docs" / "readme.txt", "completely different words\n", mtime=None)
    stats = index.scan(progress=False)
    assert stats.updated == 1 and counter.runs[b"readme.txt"] == 2
    assert q(index, (b"text", b"semantic")) == []
    assert q(index, (b"text", b"different")) == [b"docs/readme.txt"]


def test_chmod_rederives_stat_tier_only(index: Index, export: Path, counter: Counter) -> None:
    runs = counter.total
    os.chmod(export / "docs" / "readme.txt", 0o600)
    stats = index.scan(progress=False)
    assert stats.updated == 1 and counter.total == runs
    assert q(index, (b"text", b"semantic")) == [b"docs/readme.txt"]


def test_deleted_file_is_gone(index: Index, export: Path) -> None:
    ino = index.ino_of(b"docs/notes.md")
    os.unlink(export / "docs" / "notes.md")
    stats = index.scan(progress=False)
    assert stats.removed == 1
    assert q(index, (b"text", b"smith")) == []
    assert b"md" not in index.values(b"ext", index.root_ino)
    assert index.path_of(ino or 0) is None and index.ino_of(b"docs/notes.md") is None


def test_deleted_directory_takes_its_subtree(index: Index, export: Path) -> None:
    for p in (export / "src" / "lib").iterdir():
        p.unlink()
    (export / "src" / "lib").rmdir()
    stats = index.scan(progress=False)
    assert stats.removed == 2
    assert index.values(b"ext", index.root_ino).count(b"h") == 0
    assert index.ino_of(b"src/lib") is None


def test_replaced_file_is_a_new_file(index: Index, export: Path) -> None:
    target = export / "docs" / "notes.md"
    os.unlink(target)
    write(export / "docs" / "tmp", "replacement words here\n")
    os.rename(export / "docs" / "tmp", target)
    index.scan(progress=False)
    assert q(index, (b"text", b"smith")) == []
    assert q(index, (b"text", b"replacement")) == [b"docs/notes.md"]
    assert q(index, (b"name", b"tmp")) == []


def test_hard_links_are_indexed_under_every_name(index: Index, export: Path, counter: Counter) -> None:
    """Each name of a file is a result where it lies, with its own name fields; the content
    is extracted once; removing one name removes that path only."""
    os.link(export / "docs" / "notes.md", export / "src" / "alias.md")
    os.link(export / "docs" / "notes.md", export / "src" / "lib" / "notes.txt")
    runs = counter.total
    index.scan(progress=False)
    assert counter.total == runs
    assert q(index, (b"text", b"smith")) == [b"docs/notes.md", b"src/alias.md", b"src/lib/notes.txt"]
    src = index.ino_of(b"src")
    assert src is not None
    assert q(index, (b"text", b"smith"), scope=src) == [b"src/alias.md", b"src/lib/notes.txt"]
    assert q(index, (b"ext", b"md")) == [b"docs/notes.md", b"src/alias.md"]
    assert q(index, (b"ext", b"txt"), scope=src) == [b"src/lib/notes.txt"]
    assert q(index, (b"name", b"alias.md")) == [b"src/alias.md"]
    assert b"alias.md" in index.values(b"name", src) and b"notes.md" not in index.values(b"name", src)
    assert index.values(b"ext", src, [(b"text", b"smith")]) == [b"md", b"txt"]
    os.unlink(export / "src" / "lib" / "notes.txt")  # another name goes
    index.scan(progress=False)
    assert q(index, (b"text", b"smith")) == [b"docs/notes.md", b"src/alias.md"]
    assert q(index, (b"name", b"notes.txt")) == []
    os.unlink(export / "docs" / "notes.md")  # the first name goes: the other one stays
    index.scan(progress=False)
    assert q(index, (b"text", b"smith")) == [b"src/alias.md"]
    assert q(index, (b"name", b"notes.md")) == []
    assert index.paths_of(index.ino_of(b"src/alias.md") or 0) == [b"src/alias.md"]
    assert counter.total == runs
    # the first name of a C file goes, the one left is no C file: its content is re-read
    os.link(export / "src" / "x.c", export / "src" / "x.txt")
    index.scan(progress=False)
    assert q(index, (b"exports", b"main")) == [b"src/x.c", b"src/x.txt"]
    os.unlink(export / "src" / "x.c")
    index.note_entry(index.ino_of(b"src") or 0, b"x.c")  # as inotify tells it: x.txt is not noted
    index.flush()
    assert q(index, (b"exports", b"main")) == []
    assert q(index, (b"text", b"argc")) == [b"src/x.txt"]


def test_symlinked_directory_is_not_followed(env: lmdb.Environment, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret.txt", "secret words\n")
    root = tmp_path / "ex2"
    write(root / "inside.txt", "inside\n")
    os.symlink(outside, root / "escape")
    idx = Index(env, str(root), 5)
    idx.scan(progress=False)
    assert q(idx) == [b"escape", b"inside.txt"]
    assert q(idx, (b"text", b"secret")) == []
    idx.close()


# -- notes and flush ------------------------------------------------------------------
def test_note_entry_adds_changes_and_removes(index: Index, export: Path, counter: Counter) -> None:
    docs = index.ino_of(b"docs")
    assert docs is not None
    assert index.flush() is False
    write(export / "docs" / "new.txt", "freshly noted\n")
    index.note_entry(docs, b"new.txt")
    assert q(index, (b"text", b"freshly")) == []  # notes only queue work
    assert index.flush() is True
    assert q(index, (b"text", b"freshly")) == [b"docs/new.txt"]
    assert index.flush() is False  # idempotent

    write(export / "docs" / "new.txt", "rewritten content\n", mtime=None)
    index.note_ino(index.ino_of(b"docs/new.txt") or 0)
    assert index.flush() is True
    assert q(index, (b"text", b"rewritten")) == [b"docs/new.txt"] and q(index, (b"text", b"freshly")) == []
    assert counter.runs[b"new.txt"] == 2

    os.unlink(export / "docs" / "new.txt")
    index.note_entry(docs, b"new.txt")
    version = index.version
    assert index.flush() is True and index.version > version
    assert q(index, (b"text", b"rewritten")) == []


def test_an_index_is_idle_until_a_note_or_a_due_purge(index: Index, export: Path) -> None:
    """``idle`` (the server's periodic flush skips its thread hop then): nothing queued; a
    note makes it busy until flushed; a tombstone purge come due too."""
    docs = index.ino_of(b"docs")
    assert docs is not None
    assert index.idle()
    write(export / "docs" / "new.txt", "noted\n")
    index.note_entry(docs, b"new.txt")
    assert not index.idle()
    assert index.flush() is True
    assert index.idle()
    index._last_purge -= 10 * 3600  # (as if the server had run for ten hours since)
    assert not index.idle()


def test_noted_removal_leaves_a_name_taken_by_another_file_at_once(index: Index, export: Path) -> None:
    """A file removed and its name at once given to another inode, both seen in one flush:
    the old file leaves every posting (both tiers), the name lists the new inode."""
    docs = index.ino_of(b"docs")
    old = index.ino_of(b"docs/notes.md")
    assert docs is not None and old is not None
    write(export / "docs" / "tmp", "replacement words here\n")
    os.unlink(export / "docs" / "notes.md")
    os.rename(export / "docs" / "tmp", export / "docs" / "notes.md")
    new = (export / "docs" / "notes.md").stat().st_ino
    assert new != old
    for name in (b"notes.md", b"tmp"):
        index.note_entry(docs, name)
    assert index.flush() is True
    assert index.ino_of(b"docs/notes.md") == new and index.path_of(new) == b"docs/notes.md"
    assert index.path_of(old) is None
    assert q(index, (b"text", b"smith")) == []
    assert q(index, (b"text", b"replacement")) == [b"docs/notes.md"]
    assert q(index, (b"name", b"notes.md")) == [b"docs/notes.md"]
    assert q(index, (b"name", b"tmp")) == []


def test_noted_move_leaves_its_old_name_to_a_new_file(index: Index, export: Path) -> None:
    """A file moved away and a new file created under its old name, both noted in one
    flush: each name lists its own inode."""
    docs = index.ino_of(b"docs")
    moved = index.ino_of(b"docs/notes.md")
    assert docs is not None and moved is not None
    os.rename(export / "docs" / "notes.md", export / "docs" / "renamed.md")
    write(export / "docs" / "notes.md", "a newcomer\n")
    new = (export / "docs" / "notes.md").stat().st_ino
    for name in (b"notes.md", b"renamed.md"):
        index.note_entry(docs, name)
    assert index.flush() is True
    assert index.ino_of(b"docs/renamed.md") == moved and index.ino_of(b"docs/notes.md") == new
    assert q(index, (b"text", b"smith")) == [b"docs/renamed.md"]
    assert q(index, (b"text", b"newcomer")) == [b"docs/notes.md"]


def test_noted_move_keeps_content(index: Index, export: Path, counter: Counter) -> None:
    runs = counter.total
    docs, src = index.ino_of(b"docs"), index.ino_of(b"src")
    assert docs and src
    os.rename(export / "docs" / "notes.md", export / "src" / "notes.md")
    index.note_entry(docs, b"notes.md")
    index.note_entry(src, b"notes.md")
    assert index.flush() is True
    assert q(index, (b"text", b"smith")) == [b"src/notes.md"] and counter.total == runs


def test_move_seen_across_two_flushes_reuses_content(index: Index, export: Path, counter: Counter) -> None:
    runs = counter.total
    docs, src = index.ino_of(b"docs"), index.ino_of(b"src")
    assert docs and src
    os.rename(export / "docs" / "notes.md", export / "src" / "notes.md")
    index.note_entry(docs, b"notes.md")
    index.flush()
    assert q(index, (b"text", b"smith")) == []
    index.note_entry(src, b"notes.md")
    index.flush()
    assert q(index, (b"text", b"smith")) == [b"src/notes.md"] and counter.total == runs


def test_note_dir_relists_and_walks_new_directories(index: Index, export: Path) -> None:
    write(export / "fresh" / "deep" / "a.txt", "alpha\n")
    write(export / "fresh" / "b.txt", "beta\n")
    os.unlink(export / "README")
    index.note_dir(index.root_ino)
    assert index.flush() is True
    assert q(index, (b"ext", b"txt"), scope=index.ino_of(b"fresh")) == [b"fresh/b.txt", b"fresh/deep/a.txt"]
    assert q(index, (b"name", b"README")) == []


def test_noted_new_directory_is_walked(index: Index, export: Path) -> None:
    write(export / "docs" / "made" / "inner" / "c.txt", "gamma\n")
    index.note_entry(index.ino_of(b"docs") or 0, b"made")
    index.flush()
    assert q(index, (b"text", b"gamma")) == [b"docs/made/inner/c.txt"]


def test_note_after_directory_rename_finds_the_new_path(index: Index, export: Path) -> None:
    lib = index.ino_of(b"src/lib")
    os.rename(export / "src", export / "code")
    write(export / "code" / "lib" / "added.h", "int added;\n")
    index.note_entry(index.root_ino, b"src")
    index.note_entry(index.root_ino, b"code")
    index.note_entry(lib or 0, b"added.h")
    index.flush()
    assert q(index, (b"exports", b"added")) == [b"code/lib/added.h"]


def test_notes_ignore_bad_names_and_unknown_inodes(index: Index) -> None:
    index.note_entry(index.root_ino, b"../etc")
    index.note_entry(index.root_ino, b"..")
    index.note_ino(987_654_321)
    index.note_dir(987_654_321)
    assert index.flush() is False


def test_flush_during_scan(env: lmdb.Environment, tmp_path: Path) -> None:
    root = tmp_path / "busy"
    for d in range(20):
        for i in range(100):
            write(root / f"d{d}" / f"f{i}.txt", f"word{i} common\n", mtime=None)
    idx = Index(env, str(root), 11)
    done = threading.Event()
    def scan() -> None:
        idx.scan(progress=False)
        done.set()
    scanner = threading.Thread(target=scan)
    scanner.start()
    n = 0
    while not done.is_set() and n < 300:
        write(root / "extra" / f"e{n}.txt", "extra\n", mtime=None)
        idx.note_entry(idx.root_ino, b"extra")
        idx.flush()
        n += 1
        done.wait(0.002)
    scanner.join()
    idx.scan(progress=False)
    assert len(q(idx, (b"text", b"common"))) == 2000
    assert len(q(idx, (b"text", b"extra"))) == n
    idx.close()


# -- transducers ------------------------------------------------------------------------
class Exploding:
    name = "exploding"
    version = 1
    tier: Tier = "content"

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return name == b"readme.txt"

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        yield (b"partial", b"never")
        raise RuntimeError("boom")


class Sloppy:
    name = "sloppy"
    version = 1
    tier: Tier = "stat"

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return name == b"notes.md"

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        return [(b"Bad-Field", b"x"), (b"good", b"x" * 256), (b"good", b"a\0b"), (b"good", "str"),  # type: ignore[list-item]  # on purpose
                (b"good", b""), (b"good", b"fine")]


def test_failing_transducer_is_counted_and_logged_once(env: lmdb.Environment, export: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pysfsd.index")
    idx = Index(env, str(export), 3, transducers=default_transducers() + [Exploding(), Sloppy()])
    stats = idx.scan(progress=False)
    assert stats.failed == 2 and idx.failures() == 2
    assert "boom" in caplog.text and "docs/readme.txt" in caplog.text
    assert "6 malformed" not in caplog.text and "5 malformed" in caplog.text
    # the failing file keeps every other field; nothing of the failed run got in
    assert q(idx, (b"text", b"semantic")) == [b"docs/readme.txt"]
    assert idx.values(b"partial", idx.root_ino) == []
    assert idx.values(b"good", idx.root_ino) == [b"fine"]
    caplog.clear()
    idx.scan(progress=False)
    assert "boom" not in caplog.text and idx.failures() == 2
    os.unlink(export / "docs" / "readme.txt")
    idx.scan(progress=False)
    assert idx.failures() == 1
    idx.close()


def test_transducer_names_must_be_unique(env: lmdb.Environment, export: Path) -> None:
    with pytest.raises(ValueError):
        Index(env, str(export), 4, transducers=[StatFields(), StatFields()])


def test_tombstones_last_until_the_next_scan(env: lmdb.Environment, index: Index, export: Path) -> None:
    ino = index.ino_of(b"README")
    os.unlink(export / "README")
    index.note_entry(index.root_ino, b"README")
    index.flush()
    tables = index._tables
    with env.begin() as txn:
        assert txn.stat(tables.tombs)["entries"] == 1 and tables.file(txn, ino or 0) is not None
    index.scan(progress=False)
    with env.begin() as txn:
        assert txn.stat(tables.tombs)["entries"] == 0 and tables.file(txn, ino or 0) is None
        assert txn.get((ino or 0).to_bytes(8, "big"), db=tables.attrs) is None


def test_empty_files_get_the_content_tier_reading_them_would(env: lmdb.Environment, tmp_path: Path) -> None:
    """A new empty file is indexed without being read (the built-in transducers' output on
    no content depends on the extension only): the fields are those a read gives."""
    from nfsd.index.extract import Extractor
    from nfsd.index.fsread import open_regular
    from nfsd.index.transducers.interface import Content as Seen
    root = tmp_path / "empties"
    root.mkdir()
    names = [b"a.c", b"b.h", b"c.txt", b"d", b"e.py", b"f.mp3", b"g.pdf", b"h.eml", b".hidden"]
    for n in names:
        write(root / n.decode(), b"")
    x = Extractor(default_transducers())
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in names:
            st = os.stat(n, dir_fd=fd)
            todo = [t for t in x.content_tier if t.applies(n, st)]
            f = open_regular(fd, n, st.st_ino)
            assert f is not None
            try:
                read = x._run(todo, n, st, Seen(f, x.sniffer))
            finally:
                f.close()
            known = x.empty_content(n, st)
            assert known is not None and known.keys == read.keys and known.failures == read.failures
    finally:
        os.close(fd)
    idx = Index(env, str(root), 7, transducers=default_transducers())
    try:
        idx.scan(progress=False)
        assert q(idx, (b"type", b"application/x-empty")) == sorted(names)
        write(root / "c.txt", "now with words\n", mtime=None)  # no longer empty: read
        idx.note_entry(idx.root_ino, b"c.txt")
        assert idx.flush() is True
        assert q(idx, (b"text", b"words")) == [b"c.txt"]
        assert b"c.txt" not in q(idx, (b"type", b"application/x-empty"))
    finally:
        idx.close()


def test_empty_files_still_reach_other_transducers(index: Index, export: Path, counter: Counter) -> None:
    """A transducer that is not built in sees every file, empty ones included."""
    assert counter.runs[b"empty"] == 1
    write(export / "docs" / "blank.md", b"")
    docs = index.ino_of(b"docs")
    assert docs is not None
    index.note_entry(docs, b"blank.md")
    assert index.flush() is True
    assert counter.runs[b"blank.md"] == 1
    assert fields_of(index, b"docs/blank.md")[b"counted"] == {b"yes"}


def test_content_passes_give_each_field_then_the_whole_content_tier(tmp_path: Path, export: Path) -> None:
    """A first index in passes (stat tier, then Index.content_passes) ends as one full scan
    would, runs every transducer once per file, and each pass's fields are complete when it
    is done; a full scan afterwards finds nothing to do."""
    whole_env = lmdb.open(str(tmp_path / "whole"), max_dbs=128, map_size=1 << 30, sync=False)
    whole = Index(whole_env, str(export), 1, transducers=default_transducers() + [Counter()])
    whole.scan(progress=False)
    env = lmdb.open(str(tmp_path / "passes"), max_dbs=128, map_size=1 << 30, sync=False)
    counter = Counter()
    idx = Index(env, str(export), 1, transducers=default_transducers() + [counter])
    idx.scan(progress=False, stat_only=True)
    passes = idx.content_passes()
    assert [[t.name for t in p.transducers] for p in passes] == [
        ["counter"], ["c", "python", "mail", "image", "audio", "pdf"], ["type", "text"]]
    idx.scan(progress=False, part=passes[0])
    # the counter declares no fields: once it ran, what it gave is complete (and nothing else)
    assert idx.ready_after(passes[0]) >= {b"counted"} and not idx.ready_after(passes[0]) & {b"text", b"exports"}
    assert q(idx, (b"counted", b"yes")) == q(whole, (b"counted", b"yes"))
    idx.scan(progress=False, part=passes[1])
    assert idx.ready_after(passes[1]) >= {b"exports", b"imports", b"width", b"title"}
    assert q(idx, (b"exports", b"main")) == [b"src/x.c"] and q(idx, (b"text", b"hello")) == []
    assert idx.scan(progress=False, part=passes[2]).updated == 13  # every file: its content tier is complete
    assert idx.ready_after(passes[2]) == {b"text", b"type"}
    for rel in (b"src/x.c", b"src/lib/util.py", b"docs/readme.txt", b"docs/pic.png", b"empty", b"pipe"):
        assert fields_of(idx, rel) == fields_of(whole, rel), rel
    assert counter.total == 11  # once per regular file
    assert idx.scan(progress=False).unchanged == 13 and counter.total == 11
    for i in (idx, whole):
        i.close()
    whole_env.close()
    env.close()


def test_progress_line_tells_files_done_rate_and_eta() -> None:
    from nfsd.index.progress import Progress
    p = Progress(False, "x", total=1000)
    assert p.line(250, p._start + 10) == "250 of 1000 files (25 %, 25/s), ETA 30 s"
    assert Progress(False, "x").line(250, p._start + 10).startswith("250 files (")


def _mapped_kb(data_path: str) -> int:
    """Resident KiB of this process's mappings of ``data_path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:
                inside = line.rstrip("\n").endswith(data_path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def test_mapped_index_pages_leave_the_resident_set_past_the_limit(index: Index, env: lmdb.Environment) -> None:
    """Queries map LMDB's pages into the process; past a limit of file-backed resident
    memory they are dropped (they stay in the page cache): the RSS stays bounded."""
    from nfsd.index.residency import MapTrimmer, rss_file
    data = os.path.join(os.path.realpath(env.path()), "data.mdb")
    assert q(index, (b"ext", b"c")) == [b"src/x.c"]
    assert _mapped_kb(data) > 0 and rss_file() > 0
    trimmer = MapTrimmer(env)
    assert not trimmer.trim_over(1 << 40)  # under the limit: left alone
    assert _mapped_kb(data) > 0
    assert trimmer.trim_over(0)
    assert _mapped_kb(data) == 0
    assert q(index, (b"ext", b"c")) == [b"src/x.c"]  # read again through the page cache


def test_scattered_reads_map_only_the_pages_they_read(tmp_path: Path) -> None:
    """A read of LMDB's map faults in one page, not its 64 KiB neighbourhood (the kernel's
    fault-around, off once the map is registered: nfsd/index/residency.py): a 10,000-result
    query at 1M files reads 10,000 scattered records, and with fault-around mapped 440 MB
    for them.  Here: one record in every 16th page of a 32 MiB table."""
    from nfsd.index.residency import MapTrimmer
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 30, readahead=False)
    value = b"v" * 1800  # two records a page: record i lies in page ~i/2
    with env.begin(write=True) as txn:
        for i in range(16384):
            txn.put(b"%08d" % i, value)
    trimmer = MapTrimmer(env)
    if trimmer.fault_around:
        pytest.skip("this kernel keeps fault-around on LMDB's map (no userfaultfd WP_ASYNC)")
    data = os.path.join(os.path.realpath(env.path()), "data.mdb")
    trimmer.trim()
    assert _mapped_kb(data) == 0
    with env.begin() as txn:
        for i in range(0, 16384, 32):  # 512 records, each 16 pages (64 KiB) from the next
            assert txn.get(b"%08d" % i) == value
    # with fault-around: ~512 x 64 KiB = 32 MiB; without: ~512 x 4 KiB plus the branch pages
    assert _mapped_kb(data) < 4 << 10
    env.close()


def test_buffered_postings_and_their_removal_in_one_batch(env: lmdb.Environment) -> None:
    """Posting additions wait in the writer's buffer; a removal of a file's postings in the
    same transaction writes that file's waiting additions first, so none comes back after
    it, whatever other files' additions still wait."""
    t = Tables(env, 7)
    w = Writer(t)
    a, b = 100, 200
    k1, k2, k3 = b"name\0one", b"name\0two", b"ext\0c"
    rec = FileRecord(1, stat.S_IFREG, 0, 0, 0, 0, 0, NO_XVER, b"a")
    w.add_new(a, rec, frozenset({k1, k3}), EMPTY)
    w.add_new(b, rec._replace(name=b"b"), frozenset({k3}), EMPTY)
    w.set_keys(b, (frozenset({k3}), EMPTY), (frozenset({k2, k3}), EMPTY))
    w.set_keys(b, (frozenset({k2, k3}), EMPTY), (frozenset({k3}), EMPTY))  # k2 added, then taken back
    w.tombstone(a, rec)  # a's buffered k1 and k3 must not outlive it
    w.commit()
    with env.begin() as txn:
        def inos(k: bytes) -> list[int]:
            cur = txn.cursor(db=t.postings)
            return [INO.unpack(v)[0] for v in cur.iternext_dup()] if cur.set_key(k) else []
        assert inos(k1) == [] and inos(k2) == [] and inos(k3) == [b]


def test_a_new_file_tombstoned_before_its_records_are_written(env: lmdb.Environment) -> None:
    """A removal writes out the buffered records of new files only when the removed file is
    among them (others stay batched): then it is a tombstone, out of every posting and place."""
    t = Tables(env, 7)
    w = Writer(t)
    a, b = 100, 200
    keys = frozenset({b"name\0a", b"ext\0c", b"owner\0u"})
    rec = FileRecord(1, stat.S_IFREG, 0, 0, 0, 0, 0, NO_XVER, b"a.c")
    w.add_new(b, rec._replace(name=b"b.c"), frozenset({b"name\0b", b"ext\0c", b"owner\0u"}), EMPTY)
    w.del_child_of(1, b"gone", 300)  # nothing of b's: its buffered records stay
    w.tombstone(300, rec._replace(name=b"gone"))
    w.add_new(a, rec, keys, EMPTY)
    w.tombstone(a, rec)
    w.commit()
    with env.begin() as txn:
        def inos(k: bytes) -> list[int]:
            cur = txn.cursor(db=t.postings)
            return [INO.unpack(v)[0] for v in cur.iternext_dup()] if cur.set_key(k) else []
        assert inos(b"name\0a") == [] and inos(b"ext\0c") == [b] and inos(b"owner\0u") == [b]
        rec_a, rec_b = t.file(txn, a), t.file(txn, b)
        assert rec_a is not None and rec_a.tomb and rec_b is not None and not rec_b.tomb
        assert t.places_differences(txn) == (0, 0)
        assert t.child(txn, 1, b"b.c") == (b, stat.S_IFREG)


def test_creates_and_removals_in_one_flush_stay_exact(env: lmdb.Environment, export: Path) -> None:
    # new files' records wait in the writer's buffers while removals in the same flush
    # (names sorted after theirs) and inode numbers taken again go straight to the tables:
    # every table must come out as a fresh check of the disk says
    from nfsd.check.disk import DiskTree
    from nfsd.check.index import check
    from nfsd.index.extract import Extractor

    transducers = default_transducers()
    idx = Index(env, str(export), 1, transducers=transducers)
    idx.scan(progress=False)
    d = export / "mix"
    d.mkdir()
    idx.note_entry(idx.root_ino, b"mix")
    idx.flush()
    for i in range(40):
        (d / f"z{i}.c").write_bytes(b"")
        (d / f"y{i}").write_bytes(b"")
    for i in range(40):
        idx.note_entry(d.stat().st_ino, f"z{i}.c".encode())
        idx.note_entry(d.stat().st_ino, f"y{i}".encode())
    idx.flush()
    for rnd in range(3):
        for i in range(40):
            (d / f"z{i}.c").unlink()  # freed numbers, taken again below (ext4, tmpfs)
            (d / f"a{rnd}-{i}.c").write_bytes(b"")
            idx.note_entry(d.stat().st_ino, f"a{rnd}-{i}.c".encode())
            idx.note_entry(d.stat().st_ino, f"z{i}.c".encode())
        for i in range(40):
            (d / f"a{rnd}-{i}.c").rename(d / f"z{i}.c")
            idx.note_entry(d.stat().st_ino, f"a{rnd}-{i}.c".encode())
            idx.note_entry(d.stat().st_ino, f"z{i}.c".encode())
            (d / f"y{i}").unlink()
            (d / f"y{i}").write_bytes(b"%d" % rnd)
            idx.note_entry(d.stat().st_ino, f"y{i}".encode())
        idx.flush()
        with env.begin() as txn:
            assert Tables(env, 1).places_differences(txn) == (0, 0)
        tree = DiskTree(str(export))
        assert check(env, 1, tree, Extractor(transducers)) == []
        names = set(q(idx, (b"ext", b"c"), scope=idx.ino_of(b"mix")))
        assert names == {b"mix/z%d.c" % i for i in range(40)}
    idx.close()


def test_the_index_listing_a_directory_keeps_its_access_time(tmp_path: Path) -> None:
    """The server's own reading of its export (index scans, the watcher) opens directories
    with O_NOATIME where allowed: an access time a client set stays (relatime would move
    one older than a day on every listing)."""
    from nfsd.index import fsread
    d = tmp_path / "sub"
    d.mkdir()
    (d / "f").write_bytes(b"x")
    os.utime(d, ns=(1_000_000_000_000_000_005, 1_000_000_000_000_000_005))
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = fsread.open_path(root_fd, b"sub")
        assert fd is not None
        try:
            assert [name for name, _ in fsread.list_dir(fd)] == [b"f"]
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    assert os.stat(d).st_atime_ns == 1_000_000_000_000_000_005


def test_notes_being_applied_still_count_as_unapplied(index: Index, export: Path) -> None:
    """A flush in another thread empties the queue before it commits: until then the index
    version does not show the notes, so ``has_notes`` must still say so (a query directory's
    attributes would otherwise be those of the results before an acknowledged CREATE, and
    the kernel client would keep its stale listing; seen once in the VM's fresh_cto step)."""
    write(export / "fresh.c", "int fresh;")
    index.note_entry(index.root_ino, b"fresh.c")
    entered, release = threading.Event(), threading.Event()
    apply_notes = index._apply_notes

    def slow_apply(*args: Any) -> None:
        entered.set()
        release.wait(10)
        apply_notes(*args)

    index._apply_notes = slow_apply  # type: ignore[method-assign,assignment]
    flusher = threading.Thread(target=index.flush)
    flusher.start()
    try:
        assert entered.wait(10)
        assert not index._entries          # the queue was taken...
        assert index.has_notes()           # ...but its notes are not applied yet
    finally:
        release.set()
        flusher.join(10)
    assert not index.has_notes()
