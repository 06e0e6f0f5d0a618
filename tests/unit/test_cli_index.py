"""``pysfsd index`` and ``pysfsd query`` as a person runs them (subprocesses, real trees)."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pysfsd(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "nfsd", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    (root / "src" / "lib").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "src" / "main.c").write_text('#include <sys/stat.h>\nint main(void) { return helper(); }\n')
    (root / "src" / "lib" / "helper.c").write_text("int helper(void) { return 0; }\n")
    (root / "src" / "notes.txt").write_text("semantic notes\n")
    (root / "docs" / "guide.txt").write_text("a semantic guide\n")
    return root


def run(command: str, tree: Path, tmp_path: Path, *rest: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return pysfsd(command, "--export", tree, "--state-dir", tmp_path / "state", *rest, check=check)


def test_index_prints_counts(tree: Path, tmp_path: Path) -> None:
    out = run("index", tree, tmp_path).stdout
    assert re.search(r"4 files seen, 4 added, 0 updated, 0 removed, 0 unchanged, 0 failed in [\d.]+ s "
                     r"\(\d+ files/s\)", out), out
    assert re.search(r"^ext\s+2\s+4$", out, re.M), out
    assert re.search(r"^exports\s+2\s+2$", out, re.M), out
    assert "files whose extraction failed: 0" in out
    again = run("index", tree, tmp_path).stdout
    assert "4 files seen, 0 added, 0 updated, 0 removed, 4 unchanged" in again


def test_first_index_takes_the_stat_fields_first(tree: Path, tmp_path: Path) -> None:
    """As the server does: a stat pass (name, ext... answer after it), then the content
    passes, each saying which fields it made ready; the counts are those of one index."""
    proc = run("index", tree, tmp_path)
    lines = proc.stderr.splitlines()
    stat_line = next(i for i, line in enumerate(lines) if "name, ext, owner, group, size and mtime ready (4 files" in line)
    later = [line for line in lines[stat_line + 1:] if " ready (" in line]
    assert any("exports" in line for line in later) and any("text" in line for line in later), proc.stderr
    assert "4 files seen, 4 added, 0 updated" in proc.stdout
    assert re.search(r"^text\s+\d+\s+\d+$", proc.stdout, re.M), proc.stdout
    assert run("query", tree, tmp_path, "--no-refresh", "text:/guide").stdout.split() == ["docs/guide.txt"]
    again = run("index", tree, tmp_path)
    assert " ready (" not in again.stderr and "4 unchanged" in again.stdout


def test_query_prints_matching_paths(tree: Path, tmp_path: Path) -> None:
    assert run("query", tree, tmp_path, "ext:/c").stdout == "src/lib/helper.c\nsrc/main.c\n"
    assert run("query", tree, tmp_path, "text:/semantic/ext:/txt").stdout == "docs/guide.txt\nsrc/notes.txt\n"
    assert run("query", tree, tmp_path, "src/text:/semantic").stdout == "src/notes.txt\n"
    assert run("query", tree, tmp_path, "imports:/sys%2Fstat.h").stdout == "src/main.c\n"
    assert run("query", tree, tmp_path, "ext:/nosuch").stdout == ""


def test_query_ending_in_a_field_prints_escaped_values(tree: Path, tmp_path: Path) -> None:
    assert run("query", tree, tmp_path, "type:").stdout == "text%2Fplain\ntext%2Fx-c\n"
    assert run("query", tree, tmp_path, "src/lib/exports:").stdout == "helper\n"
    assert run("query", tree, tmp_path, "ext:/c/imports:").stdout == "helper\nsys%2Fstat.h\n"


def test_lab_form_lists_the_directory(tree: Path, tmp_path: Path) -> None:
    assert run("query", tree, tmp_path, "src/:extension=.c").stdout == "main.c\n"
    assert run("query", tree, tmp_path, ":extension=.c").stdout == ""


def test_query_refreshes_unless_told_not_to(tree: Path, tmp_path: Path) -> None:
    run("index", tree, tmp_path)
    (tree / "docs" / "late.c").write_text("int late;\n")
    assert run("query", tree, tmp_path, "--no-refresh", "ext:/c").stdout == "src/lib/helper.c\nsrc/main.c\n"
    assert run("query", tree, tmp_path, "ext:/c").stdout == "docs/late.c\nsrc/lib/helper.c\nsrc/main.c\n"


def test_query_errors(tree: Path, tmp_path: Path) -> None:
    for query, message in [("src", "no query"), ("nosuch/ext:", "no such directory"), ("bogus:/x", "no field"),
                           ("ext:/c/ext:/h", "field ext used twice")]:
        proc = run("query", tree, tmp_path, query, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (query, proc.stderr)
    inside = pysfsd("index", "--export", tree, "--state-dir", tree / "state", check=False)
    assert inside.returncode == 2 and "must not be inside" in inside.stderr


def test_query_language_in_the_cli(tree: Path, tmp_path: Path) -> None:
    """The forms the server answers over NFS, the same from the command line."""
    def q(query: str) -> str:
        return run("query", tree, tmp_path, "--no-refresh", query).stdout

    run("index", tree, tmp_path)
    assert q("ext:/c|txt") == "docs/guide.txt\nsrc/lib/helper.c\nsrc/main.c\nsrc/notes.txt\n"
    assert q("ext:/C") == q("ext:/c") == "src/lib/helper.c\nsrc/main.c\n"
    assert q("src/ext:/!c") == "src/notes.txt\n"
    assert q("text:/SEMANTIC/ext:/!c") == "docs/guide.txt\nsrc/notes.txt\n"
    assert q("size:/>31") == "src/main.c\n"
    assert q("size:/<=15|17") == "src/notes.txt\n"
    assert q("name:/*e[lr]*.c") == "src/lib/helper.c\n"
    assert q("mtime:/<1990") == ""
    assert q("ext:/c|txt/name:") == "guide.txt\nhelper.c\nmain.c\nnotes.txt\n"


def test_query_count_and_explain(tree: Path, tmp_path: Path) -> None:
    assert run("query", tree, tmp_path, "--count", "ext:").stdout == "2 c\n2 txt\n"
    assert run("query", tree, tmp_path, "--count", "ext:/c|txt").stdout == "4\n"
    assert run("query", tree, tmp_path, "--count", "src/ext:/!c/name:").stdout == "1 notes.txt\n"
    out = run("query", tree, tmp_path, "--explain", "ext:/TXT|c/text:/semantic").stdout.splitlines()
    assert out[0] == "query: ext:/c|txt/text:/semantic"  # canonical: sorted, case folded
    assert "plan: ext:/c|txt: 2 posting keys, 4 postings" in out
    assert "plan: text:/semantic: 1 posting key, 2 postings" in out
    assert "postings read: 6" in out and "results: 2" in out
    assert out[-2:] == ["docs/guide.txt", "src/notes.txt"]


def test_query_refuses_what_would_be_silently_empty(tree: Path, tmp_path: Path) -> None:
    for query, message in [
            ("ext:/", "ext:/ has no value: write ext: to list the values of ext, or ext:/VALUE"),
            ("name:/" + "x" * 256, "a value is at most 255 bytes; this one has 256"),
            ("src/main.c/ext:", "src/main.c is a file, not a directory"),
            ("size:/>lots", "size:/>lots: lots is not a size"),
            ("mtime:/2024-13..2025", "2024-13 is not a date"),
            ("ext:/c|", "empty alternative"),
            ("name:/caf%C3%A9%zz", "bad escape %zz"),
            ("name:/[ab", "unclosed ["),
            ("pages:/>1.5", "1.5 is not a whole number")]:
        proc = run("query", tree, tmp_path, query, check=False)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (query, proc.stderr)
        assert "b'" not in proc.stderr and 'b"' not in proc.stderr and len(lines[0]) < 200


def test_server_command_still_starts_the_server(tree: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "nfsd", "--export", str(tree), "--bind", "127.0.0.1",
                             "--port", "0", "--no-register", "--state-dir", str(tmp_path / "state")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("pysfsd: listening on 127.0.0.1:")
        # the commands open the server's LMDB environment: the server's own scan shows up
        deadline = time.monotonic() + 30
        found = ""
        while time.monotonic() < deadline and not found:
            found = run("query", tree, tmp_path, "--no-refresh", "ext:/c").stdout
        assert found == "src/lib/helper.c\nsrc/main.c\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
