"""``pysfsd index`` and ``pysfsd query``: the semantic index without NFS.

Both open the LMDB environment the server would use for the same ``--export`` set and
``--state-dir``, so they work on the server's index (LMDB lets several processes share it).

    pysfsd index --export DIR            build or refresh the index, print what it holds
    pysfsd query --export DIR 'owner:/smith/ext:/c'    matching paths, one per line
    pysfsd query --export DIR 'src/owner:'             the values of a field (escaped)
    pysfsd query --export DIR 'src/:extension=.c'      entries of src ending with .c
    pysfsd query --export DIR --count 'owner:'         each value with its number of files
    pysfsd query --export DIR --explain 'ext:/c|h'     the canonical query and its plan

A bad query gets one line saying why (over NFS it could only be "No such file").
"""
from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
import textwrap
from typing import Callable

from .. import __version__
from ..app import default_state_dir, store_path
from ..config.errors import ConfigError
from ..index import Index, ScanStats, fsread
from ..index.search import Plan
from ..query.names import QuerySyntaxError, encode_value, parse_query_path
from ..config.preflight import check_export, open_store
from ..query.language import component_of
from ..state.store import Store
from ..config.file import parse_with_config
from ..config.options import Parser, build_parser
from ..index.index import EXTRACT_THREADS
from ..sandbox import WorkerPool
from ..config.transducers import add_arguments as add_transducer_arguments, build, settings_from


_DESCRIPTIONS = {
    "index": "Build or refresh the semantic index of the exports without serving them, then print "
             "what it holds: files seen, added, updated, removed; values and postings per field; "
             "the files each transducer failed on.  It uses (and updates) the server's own state "
             "for the same --export set and --state-dir, and may run beside the server.",
    "query": "Print what a query path names, without NFS: the matching paths one per line "
             "('owner:/smith/ext:/c'), the values of a field ('src/owner:'), or the lab view of a "
             "directory ('src/:extension=.c').  It refreshes the server's index for the same "
             "--export set and --state-dir first (--no-refresh: as it is).",
}
_EPILOGS = {
    "index": "example:\n  pysfsd index --export /srv/data\n\nsee also: pysfsd query --help, docs/running.rst",
    "query": "examples:\n  pysfsd query --export /srv/data 'owner:/smith/ext:/c'\n"
             "  pysfsd query --export /srv/data 'src/owner:'\n\nsee also: docs/namespace.rst",
}


def _parser(command: str) -> argparse.ArgumentParser:
    p = Parser(prog=f"pysfsd {command}", description=textwrap.fill(_DESCRIPTIONS[command], 79),
               epilog=_EPILOGS[command])
    p.add_argument("--export", action="append", required=True, metavar="DIR",
                   help="the export (repeat to name the same set as the server, whose state is shared;"
                        " a query runs in the first)")
    p.add_argument("--state-dir", default=default_state_dir(), metavar="DIR",
                   help="where the LMDB environment lives (default %(default)s)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.add_argument("--config", metavar="FILE", help="the server's TOML configuration file (its exports are not used)")
    p.add_argument("--version", action="version", version=f"pysfsd {__version__}")
    add_transducer_arguments(p)  # the server's own: other transducers re-extract every file
    if command == "query":
        p.add_argument("query", help="a query path: 'owner:/smith/ext:/c', 'src/owner:', 'src/:extension=.c'")
        p.add_argument("--no-refresh", action="store_true", help="query the index as it is, without rescanning")
        p.add_argument("--count", action="store_true",
                       help="print the number of results; for a field, each value with its number of files")
        p.add_argument("--explain", action="store_true",
                       help="print the canonical query, the plan and the number of postings read")
    p.other_settings = frozenset({a.dest for a in build_parser()._actions} - {a.dest for a in p._actions})
    return p


class UsageError(ConfigError):
    """A command line that names no index or no valid query: one line, exit status 2."""


def _open(exports: list[str], state_dir: str, args: argparse.Namespace | None = None
          ) -> tuple[Store, list[Index], WorkerPool | None]:
    roots = list(dict.fromkeys(os.path.realpath(e) for e in exports))  # as the server merges them
    for root in roots:
        check_export(root, state_dir)
    transducers, pool = build(settings_from(args, EXTRACT_THREADS)) if args is not None else (None, None)
    try:
        store = open_store(state_dir, store_path(state_dir, roots))
    except ConfigError:
        if pool is not None:
            pool.close()
        raise
    return store, [Index(store.env, root, store.export_id(root), transducers=transducers) for root in roots], pool


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    args = parse_with_config(_parser(command), rest)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    store, indexes, pool = _open(args.export, args.state_dir, args)  # ConfigError: nfsd.cli.main prints it
    try:
        if command == "index":
            for index in indexes:
                _report(index, index.build_first(None, _announcer(index)) if index.is_new() else index.scan())
            return 0
        return _query(indexes[0], os.fsencode(args.query), refresh=not args.no_refresh,
                      count=args.count, explain=args.explain)
    finally:
        for index in indexes:
            index.close()
        if pool is not None:
            pool.close()
        store.close()


def _announcer(index: Index) -> Callable[[frozenset[bytes] | None, ScanStats], None]:
    """What the server logs as a first index gets ready, field by field, on stderr."""
    def ready(fields: frozenset[bytes] | None, s: ScanStats) -> None:
        if fields is None:
            print(f"{index.root_path}: name, ext, owner, group, size and mtime ready ({s.seen} files, "
                  f"{s.seconds:.1f} s, {s.rate:.0f} files/s); content fields follow", file=sys.stderr, flush=True)
        elif fields:
            print(f"{index.root_path}: {', '.join(f.decode() for f in sorted(fields))} ready "
                  f"({s.seconds:.1f} s, {s.rate:.0f} files/s)", file=sys.stderr, flush=True)
    return ready


def _report(index: Index, s: ScanStats) -> None:
    print(f"{index.root_path}: {s.seen} files seen, {s.added} added, {s.updated} updated, "
          f"{s.removed} removed, {s.unchanged} unchanged, {s.failed} failed "
          f"in {s.seconds:.2f} s ({s.rate:.0f} files/s)")
    counts = index.counts()
    width = max([len(f) for f in counts] + [5])
    print(f"{'field':<{width}}  {'values':>10}  {'postings':>10}")
    for field in sorted(counts):
        values, postings = counts[field]
        print(f"{field.decode():<{width}}  {values:>10}  {postings:>10}")
    print(f"files whose extraction failed: {index.failures()}")
    for name, count in sorted(index.failures_by_transducer().items()):
        print(f"  {name}: {count}")


def _query(index: Index, path: bytes, refresh: bool, count: bool = False, explain: bool = False) -> int:
    try:
        real, terms, open_field, suffix = parse_query_path(path)
    except QuerySyntaxError as exc:
        raise UsageError(str(exc)) from None
    if refresh:
        index.scan()
    relpath = b"/".join(real)
    out = sys.stdout.buffer
    if suffix is not None:
        names = _lab(index, relpath, suffix)
        if explain:
            out.write(b"query: " + relpath + b"/:extension=" + suffix + b"\nplan: list the directory"
                      b" on disk, keep the names ending with the suffix\n")
        if count:
            out.write(b"%d\n" % len(names))
        else:
            for name in names:
                out.write(name + b"\n")
        return 0
    scope = _scope(index, relpath)
    for field in [f for f, _ in terms] + ([open_field] if open_field else []):
        if not index.is_field(field):
            raise UsageError(f"no field named {field.decode(errors='replace')!r}"
                             f" (fields: {', '.join(f.decode(errors='replace') for f in index.fields())})")
    plan = Plan() if explain else None
    if open_field is not None:
        counts = index.value_counts(open_field, scope, terms, plan)
        lines = [(b"%d " % counts[v] if count else b"") + encode_value(v) for v in sorted(counts)]
        total = len(counts)
    else:
        refs = index.query_plan(scope, terms, plan) if plan is not None else index.query(scope, terms)
        lines = [b"%d" % len(refs)] if count else [ref.path for ref in refs]
        total = len(refs)
    if plan is not None:
        canonical = b"/".join(real + [c for f, v in terms for c in (f + b":", component_of(v))]
                              + ([open_field + b":"] if open_field else []))
        out.write(b"query: " + canonical + b"\n")
        for step in plan.steps:
            out.write(b"plan: " + step.encode("utf-8", "backslashreplace") + b"\n")
        out.write(b"postings read: %d\nresults: %d\n" % (plan.postings_read, total))
    for line in lines:
        out.write(line + b"\n")
    return 0


def _scope(index: Index, relpath: bytes) -> int:
    """The inode of the real directory a query starts from, or a UsageError saying why not."""
    shown = relpath.decode(errors="replace")
    scope = index.ino_of(relpath)
    if scope is None or (scope != index.root_ino and index.path_of(scope) is None):
        raise UsageError(f"{shown}: no such directory in the index")
    if scope != index.root_ino:
        try:
            is_dir = stat.S_ISDIR(os.lstat(os.path.join(os.fsencode(index.root_path), relpath)).st_mode)
        except OSError:
            raise UsageError(f"{shown}: no such directory") from None
        if not is_dir:
            raise UsageError(f"{shown} is a file, not a directory: a query starts from a directory")
    return scope


def _lab(index: Index, relpath: bytes, suffix: bytes) -> list[bytes]:
    """Entries directly in the real directory ``relpath`` (not directories) ending with
    ``suffix``, read from the disk as the server's lab view does."""
    root = os.open(index.root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = fsread.open_path(root, relpath)
    finally:
        os.close(root)
    if fd is None:
        raise UsageError(f"{relpath.decode(errors='replace')}: no such directory")
    try:
        return sorted(name for name, st in fsread.list_dir(fd)
                      if name.endswith(suffix) and not stat.S_ISDIR(st.st_mode))
    finally:
        os.close(fd)
