#!/usr/bin/env python3
"""Tree churn: the VM soak's shape (copy a tree in, list and read it, remove it) without the VM.

scripts/vm/workloads/soak.sh copies a source tree into the export, reads every file back
and removes the tree, again and again: every iteration makes new directories and files
(new inode numbers) under the same names.  This does the same through nfs-rs clients
(``--threads``, each on its own copy) against one pysfsd started here, for ``--minutes``,
and prints each server process's RssAnon once a minute; at the end the anonymous memory's
verdict the soak uses (``memory.anon_verdict``).  With ``PYSFSD_TRACEMALLOC=DIR`` in the
environment (docs/running.rst) ``--snapshot-every K`` sends the workers SIGUSR2 every K
minutes.

    python scripts/load/treechurn.py --minutes 10
    PYSFSD_TRACEMALLOC=/tmp/snaps python scripts/load/treechurn.py --minutes 6 --snapshot-every 2
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadcli import REPO, doc_parser  # noqa: E402  (first: it sets the import paths)

from driver import read_memory, server_pids  # noqa: E402
from engine import server_memory_now  # noqa: E402
from memory import Memory, anon_verdict  # noqa: E402
from soak import ANON_RISE_MAX, ANON_SLOPE_MAX  # noqa: E402
from servers import Pysfsd  # noqa: E402

DEFAULT_ROOT = Path("/tmp/load/treechurn")
DEFAULT_SOURCE = REPO / "nfsd"


def source_tree(root: Path) -> tuple[list[str], list[tuple[str, bytes]]]:
    """Directories (parents first) and files (path, content) of ``root``, relative to it."""
    dirs, files = [], []
    for here, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        rel = os.path.relpath(here, root)
        if rel != ".":
            dirs.append(rel)
        for name in sorted(names):
            files.append((os.path.normpath(os.path.join(rel, name)), (Path(here) / name).read_bytes()))
    return dirs, files


def churn(url: str, index: int, tree: tuple[list[str], list[tuple[str, bytes]]], stop: threading.Event,
          counts: list[int], errors: list[str]) -> None:
    """Copy the tree to t<index>/cur, list every directory, read every file back, remove it."""
    from nfs_rs import Client
    dirs, files = tree
    base = f"treechurn/t{index}/cur"
    with Client.connect(url, connect_timeout=10, operation_timeout=120) as client:
        while not stop.is_set():
            client.mkdir(base, parents=True, exist_ok=True)
            for d in dirs:
                client.mkdir(f"{base}/{d}")
            for path, data in files:
                with client.open(f"{base}/{path}", "wb") as f:
                    f.write(data)
            for d in ["", *dirs]:
                client.listdir(f"{base}/{d}".rstrip("/"))
            for path, data in files:
                with client.open(f"{base}/{path}", "rb") as f:
                    if f.read() != data:
                        errors.append(f"{base}/{path} read back differs")
            for path, _ in files:
                client.remove(f"{base}/{path}")
            for d in reversed(dirs):
                client.rmdir(f"{base}/{d}")
            client.rmdir(base)
            counts[index] += 1


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=3, help="nfs-rs clients, each on its own copy (default 3)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the tree copied (default nfsd/)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"work directory (default {DEFAULT_ROOT})")
    parser.add_argument("--workers", type=int, help="the server's --workers (default: its own)")
    parser.add_argument("--snapshot-every", type=int, default=0, metavar="K",
                        help="SIGUSR2 to the workers every K minutes (with PYSFSD_TRACEMALLOC)")
    args = parser.parse_args(argv)
    tree = source_tree(args.source)
    export = args.root.resolve() / "export"
    export.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with Pysfsd(export, args.root.resolve() / "run", workers=args.workers) as server:
        assert server.pid is not None
        pid = server.pid
        print(f"pysfsd pid {pid}; tree of {len(tree[0])} directories, {len(tree[1])} files; "
              f"{args.threads} threads", flush=True)
        url = f"nfs://127.0.0.1{export}?version=3&nfsport={server.port}&mountport={server.port}"
        stop, counts = threading.Event(), [0] * args.threads

        def run(i: int) -> None:
            try:
                churn(url, i, tree, stop, counts, errors)
            except Exception as exc:  # noqa: BLE001 - reported
                errors.append(f"thread {i}: {type(exc).__name__}: {exc}")
        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.threads)]
        for t in threads:
            t.start()
        start, memories = time.monotonic(), {}
        for minute in range(int(args.minutes)):
            if args.snapshot_every and minute % args.snapshot_every == 0:
                for p in server_pids(pid)[1:]:
                    os.kill(p, signal.SIGUSR2)
            stop.wait(max(0.0, start + 60 * (minute + 1) - time.monotonic()))
            memories[minute] = server_memory_now(pid)
            each = [read_memory(p) for p in server_pids(pid)]
            print(f"{minute + 1:>4} iterations {sum(counts):>6}  anon " + "  ".join(
                f"{m.anon:6.1f}" for m in each if isinstance(m, Memory)) + f"  summed {memories[minute]}",
                flush=True)
        if args.snapshot_every:
            for p in server_pids(pid)[1:]:
                os.kill(p, signal.SIGUSR2)
        stop.set()
        for t in threads:
            t.join(60)
    flat, text = anon_verdict(memories, ANON_SLOPE_MAX, ANON_RISE_MAX)
    print(f"iterations {sum(counts)}; {text}; errors {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
    return 0 if flat and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
