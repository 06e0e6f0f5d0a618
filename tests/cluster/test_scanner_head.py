"""The scanner head (nfsd/shared/scanner.py): changes made outside NFS reach every head.

``TreeDiff`` against a real index: a quiet tree gives no difference (else every pass would
publish rows for ever), and each kind of outside change is noted at its entry.  Then two
heads over one plain directory (``--no-watch``): a file written straight into the tree shows
in both heads' query directories after a scanner pass, and again after the scanner head is
killed (SIGKILL) and the other head has taken the advisory lock over."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from nfsd.index import Index
from nfsd.shared.scanner import TreeDiff
from nfsd.state.store import Store
from tests.cluster.test_shared_dir import head, query
from tests.nfs3_helpers import look
from tests.rpc_client import RpcClient

SCAN = "0.3"


def test_tree_diff_notes_outside_changes_only(tmp_path: Path) -> None:
    root = tmp_path / "export"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.c").write_bytes(b"int a;\n")
    (root / "src" / "sub" / "b.h").write_bytes(b"int b;\n")
    os.symlink("a.c", root / "src" / "link")
    os.mkfifo(root / "src" / "fifo")
    os.link(root / "src" / "a.c", root / "src" / "sub" / "hard.c")
    store = Store(str(tmp_path / "state"))
    index = Index(store.env, str(root), 1)
    try:
        index.scan()
        diff = TreeDiff(str(root), index)
        noted: list[tuple[int, bytes]] = []
        assert diff.walk(lambda d, n: noted.append((d, n))) == 0, noted

        src, sub = os.stat(root / "src").st_ino, os.stat(root / "src" / "sub").st_ino
        (root / "src" / "new.c").write_bytes(b"new\n")                 # created
        (root / "src" / "sub" / "b.h").write_bytes(b"int b; int c;\n")  # written
        os.rename(root / "src" / "link", root / "src" / "link2")         # renamed
        os.unlink(root / "src" / "fifo")                                  # removed
        assert diff.walk(lambda d, n: noted.append((d, n))) == 5
        assert sorted(noted) == sorted([(src, b"new.c"), (sub, b"b.h"), (src, b"link"),
                                        (src, b"link2"), (src, b"fifo")])
    finally:
        index.close()
        store.close()


def scanner_of(heads) -> int:
    """Which head holds the scanner lock (it says so on stderr)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for i, h in enumerate(heads):
            if "scanner head: this head now" in h.log_path.read_text(errors="replace"):
                return i
        time.sleep(0.1)
    raise AssertionError("no head took the scanner lock")


def test_outside_changes_reach_both_heads_and_the_scanner_role_moves(tmp_path: Path, shared_url: str) -> None:
    export = tmp_path / "export"
    (export / "src").mkdir(parents=True)
    (export / "src" / "main.c").write_bytes(b"int main;\n")
    heads = [head(tmp_path, export, tag, shared_url, "--shared-scan-seconds", SCAN) for tag in "ab"]
    try:
        for h in heads:
            h.start()
        first = scanner_of(heads)
        (export / "src" / "outside.c").write_bytes(b"int outside;\n")     # behind both heads
        clients = [RpcClient(h.port) for h in heads]
        root = clients[0].mount(heads[0].export_b)
        look(clients[0], root, b"src")
        for rpc in clients:
            within(3, lambda: b"outside.c" in query(rpc, root, b"ext:", b"c"))

        proc = heads[first].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        clients[first].close()
        other = 1 - first
        (export / "src" / "later.c").write_bytes(b"int later;\n")
        within(10, lambda: b"later.c" in query(clients[other], root, b"ext:", b"c"))
        assert "scanner head: this head now" in heads[other].log_path.read_text()
        clients[other].close()
    finally:
        for h in heads:
            h.stop()


def within(seconds: float, check) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.1)
