"""``pysfsd check [--repair]``: is the LMDB state consistent with the exported files?

    pysfsd check --export DIR [--state-dir D] [the server's other options]
    pysfsd check --repair --export DIR ...

It opens the state the server would use for the same exports (``nfsd.app.store_path``),
walks the exports once (``check_disk``) and compares them with the server's own tables
(``check_handles``: export ids, the handle table, exclusive-create verifiers, placeholders)
and with each export's index (``check_index``).  Every difference is printed on a line,
``AREA: KIND: SUBJECT: DETAIL``, then a summary.  Exit status: 0 consistent, 1 differences
found, 2 nothing to check or the check could not run.

``--repair`` fixes what it found (dropping dead entries, rewriting misplaced ones, rescanning
the index, rebuilding its derived tables where they disagree), checks again and prints what
is left (nothing, normally); it still exits 1, since differences were found.  It needs the
state alone, so it refuses to run beside a server on the same state (``nfsd.state.statelock``),
and a server does not start while it runs.  Without ``--repair`` the check only reads, and
may run beside a server: as the server applies its own changes within a second, a
difference is then reported only if a second look, ``SETTLE_SECONDS`` later, finds it too.

The index is compared with the transducers the server runs: give the check the same
transducer options (or ``--config`` file), or every file counts as extracted by others.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Sequence

from . import handles as check_handles, index as check_index
from ..app import store_path
from .disk import DiskTree
from .report import Difference, summary
from ..config.options import build_parser
from ..config.file import parse_with_config
from ..exports.rules import ExportsError, load_exports
from ..index.extract import Extractor
from ..index.index import EXTRACT_THREADS
from ..index.transducers.interface import Transducer
from ..index.transducers.user import TransducerSpecError
from ..sandbox import WorkerPool
from ..state.statelock import StateBusy, hold_exclusive, in_use, release
from ..state.store import Store
from ..config.transducers import build, settings_from

SETTLE_SECONDS = 2.0


def _parser() -> argparse.ArgumentParser:
    """The server's options that name its state and transducers (so the same command line,
    or ``--config`` file, names the same state), and ``--repair``."""
    p = build_parser(server=False)
    p.prog = "pysfsd check"
    p.description = "Compare the server's LMDB state (handle table, index) with the exported files."
    p.add_argument("--repair", action="store_true",
                   help="fix the differences found (refused while a server runs on the same state)")
    return p


def _transducers(args: argparse.Namespace) -> tuple[list[Transducer], WorkerPool | None]:
    """The server's transducers for these options (and a pool to close, if they need one)."""
    transducers, pool = build(settings_from(args, EXTRACT_THREADS))
    return list(transducers), pool


class Checker:
    """One state store and the exports it serves."""

    def __init__(self, store: Store, roots: list[str], transducers: Sequence[Transducer]) -> None:
        self.store, self.roots = store, roots
        self.transducers = transducers
        self.extractor = Extractor(transducers)

    def run(self) -> tuple[list[Difference], dict[int, list[Difference]]]:
        """(differences in the server's tables, export id -> differences in its index)."""
        ids = check_handles.export_ids(self.store, self.roots)
        trees = {eid: DiskTree(root) for eid, root in ids.items()}
        try:
            own = check_handles.check(self.store, self.roots, trees)
            index = {eid: check_index.check(self.store.env, eid, tree, self.extractor) for eid, tree in trees.items()}
        finally:
            for tree in trees.values():
                tree.close()
        return own, index

    def repair(self, own: list[Difference], index: dict[int, list[Difference]]) -> int:
        fixed = check_handles.repair(self.store, own)
        ids = check_handles.export_ids(self.store, self.roots)
        for eid, diffs in index.items():
            fixed += check_index.repair(self.store.env, eid, ids[eid], diffs, self.transducers)
        return fixed


def _flat(own: list[Difference], index: dict[int, list[Difference]]) -> list[Difference]:
    return own + [d for diffs in index.values() for d in diffs]


def main(argv: list[str]) -> int:
    args = parse_with_config(_parser(), argv[1:] if argv and argv[0] == "check" else argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        roots = [e.path for e in load_exports(args.export, args.exports)]
    except ExportsError as exc:
        print(f"pysfsd check: {exc}", file=sys.stderr)
        return 2
    path = store_path(args.state_dir, roots)
    if not os.path.exists(os.path.join(path, "data.mdb")):
        print(f"pysfsd check: no state for these exports in {args.state_dir} ({path}): nothing to check "
              "(give every --export of the server, and its --state-dir)", file=sys.stderr)
        return 2
    hold = None
    if args.repair:
        try:
            hold = hold_exclusive(path)
        except StateBusy as exc:
            print(f"pysfsd check: {exc}", file=sys.stderr)
            return 2
    try:
        return _check(args, path, roots, hold is not None)
    finally:
        if hold is not None:
            release(hold)


def _check(args: argparse.Namespace, path: str, roots: list[str], alone: bool) -> int:
    try:
        transducers, pool = _transducers(args)
    except TransducerSpecError as exc:
        print(f"pysfsd check: {exc}", file=sys.stderr)
        return 2
    store = Store(path)
    try:
        if alone:  # no server on it: take in the places a killed one journaled (nfsd/state/store.py)
            store.open_journal(append=False)
        checker = Checker(store, roots, transducers)
        beside_server = not alone and in_use(path)
        own, index = checker.run()
        diffs = _flat(own, index)
        if diffs and beside_server:
            print(f"pysfsd check: a server is running on this state; {len(diffs)} possible differences, "
                  f"looking again in {SETTLE_SECONDS:.0f} s", file=sys.stderr)
            time.sleep(SETTLE_SECONDS)
            again = set(_flat(*checker.run()))
            own = [d for d in own if d in again]
            index = {eid: [d for d in ds if d in again] for eid, ds in index.items()}
            diffs = _flat(own, index)
        for d in diffs:
            print(d.line())
        print(f"pysfsd check: {summary(diffs)}", flush=True)
        if diffs and args.repair:
            fixed = checker.repair(own, index)
            left = _flat(*checker.run())
            for d in left:
                print(f"not repaired: {d.line()}")
            print(f"pysfsd check: applied {fixed} fixes; now {summary(left)}")
        return 1 if diffs else 0
    finally:
        store.close()
        if pool is not None:
            pool.close()
