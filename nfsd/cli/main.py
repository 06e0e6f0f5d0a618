"""The ``pysfsd`` command: the server, and the ``query``, ``index`` and ``check`` commands.

Every start-up problem a user can fix is a ``ConfigError``, caught once here and printed
as one line with exit status 2."""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from typing import Any, Callable, Coroutine

from ..app import NfsServer, ServerConfig
from ..config.errors import ConfigError
from ..config.preflight import unwritable_note
from ..rpc.server import raise_open_files_limit
from ..index.index import EXTRACT_THREADS
from ..config.file import parse_with_config
from ..config.options import build_parser
from ..config.transducers import settings_from


def log_format(worker: int | None = None) -> str:
    """Log and trace lines; a worker of several (``--workers``) names itself (``w1``) after
    the logger's name, so its lines stand apart from the others' in the one stderr."""
    who = "" if worker is None else f" w{worker}"
    return f"%(asctime)s %(name)s{who} %(levelname)s %(message)s"


def tune_malloc() -> None:
    """Keep 1 MiB buffers on the heap: with glibc's defaults each one is a fresh mmap whose
    pages fault in again on every READ/WRITE record (measured 1.5 ms vs 0.25 ms per MiB).

    And one malloc arena: by default each I/O thread gets its own, which keeps the freed
    buffers it held, so resident memory crept up for as long as the load lasted
    (scripts/load/soak.py without the VM: +17 MiB in 3 minutes and still rising; with two
    arenas flat from the second minute on, 40 MiB lower).  With two, the threads' arena
    still kept what a load left: ``malloc_trim`` (nfsd/heaptrim.py) gives back free pages
    inside every arena but the top of the main one only, and a threads' arena's freed
    buffers end in its top (a quiet follower: 29 MiB in that arena, 0.1 MiB of it in use).
    Threads mostly hold the GIL anyway, so they hardly contend for the one arena (ops per
    server CPU-second within noise of two arenas: docs/design.rst, "Several worker
    processes").  MALLOC_ARENA_MAX in the environment wins."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(m_arena_max, 1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except ConfigError as exc:
        print(f"pysfsd: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("index", "query"):
        from .index import main as index_main  # the index commands serve nothing
        return index_main(argv)
    if argv and argv[0] in ("tag", "untag", "tags"):
        from .tags import main as tags_main  # changes a file's tags, serves nothing
        return tags_main(argv)
    if argv and argv[0] == "check":
        from ..check.checker import main as check_main  # compares (and repairs) the state, serves nothing
        return check_main(argv)
    parser = build_parser()
    args = parse_with_config(parser, argv)
    if not args.export and not args.exports:
        parser.error("give --export DIR (repeatable) or --exports FILE")
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2) if not _tracing() else logging.INFO,
                        format=log_format(), stream=sys.stderr)
    _print_progress()
    tune_malloc()
    raise_open_files_limit()
    config = ServerConfig(exports=args.export, exports_file=args.exports, bind=args.bind, port=args.port,
                          state_dir=args.state_dir, threads=args.threads, results=args.results,
                          watch=args.watch, portmap=args.portmap, portmap_port=args.portmap_port,
                          register=args.register,
                          idle_timeout=args.idle_timeout, stall_timeout=args.stall_timeout,
                          idle_fd_seconds=args.idle_fd_seconds,
                          locks=args.locks, grace_period=args.grace_period,
                          client_portmap_port=args.client_portmap_port, nsm_name=args.nsm_name,
                          shared_state=args.shared_state, shared_scan_seconds=args.shared_scan_seconds,
                          attr_cache_seconds=args.attr_cache_seconds,
                          attr_cache_bytes=int(args.attr_cache_mib * (1 << 20)),
                          transducers=settings_from(args, workers=EXTRACT_THREADS),
                          workers=worker_count(args.workers, args.shared_state))
    if config.workers > 1:
        if config.shared_state:
            raise ConfigError("--workers N with --shared-state is not supported yet: run one "
                              "process per head (docs/cluster.rst: Limits)")
        from ..workers import serve as serve_workers
        return serve_workers(config, config.workers)
    return event_loop_runner()(_serve(config))


def worker_count(given: int | None, shared_state: str | None) -> int:
    """``--workers`` as given (command line or ``--config``), else its default: one process
    for a cluster head (``--shared-state`` does not take several yet), otherwise
    ``PYSFSD_WORKERS`` or the usable cores (``nfsd.workers.default_count``)."""
    from ..workers import MAX_COUNT, default_count
    if given is not None:
        if given > MAX_COUNT:
            raise ConfigError(f"--workers {given}: at most {MAX_COUNT} worker processes")
        return given
    if shared_state:
        return 1
    return min(default_count(), MAX_COUNT)


def event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    try:
        import uvloop  # optional: a faster event loop
        return uvloop.run
    except ImportError:
        return asyncio.run


def _print_progress() -> None:
    """Start-up progress (``nfsd.app.progress``: a first index's fields as they are ready)
    goes to stderr as ``pysfsd: ...`` lines, whatever the log level: it is news a person
    waits for, not a warning."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pysfsd: %(message)s"))
    progress = logging.getLogger("pysfsd.progress")
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False


def _print_line(line: str) -> None:
    print(line, flush=True)


async def _announce_index(server: NfsServer, emit: Callable[[str], None] = _print_line) -> None:
    """The line scripts wait for before relying on query directories."""
    started = asyncio.get_running_loop().time()
    await server.indexed.wait()
    files = sum(getattr(s, "seen", 0) for s in server.scan_stats.values())
    elapsed = asyncio.get_running_loop().time() - started
    emit(f"pysfsd: index ready ({files} files, {elapsed:.1f} s)")


def _tracing() -> bool:
    from ..rpc.trace import trace_level
    return trace_level() > 0


async def _serve(config: ServerConfig) -> int:
    server = NfsServer(config)
    try:
        host, port = await server.start()
    except ConfigError:
        await server.stop()
        raise
    for i, fs in enumerate(server.exports.values()):
        word = "listening on" if i == 0 else "           "
        print(f"pysfsd: {word} {host}:{port} export {fs.root_path}", flush=True)
    for export in server.export_rules:  # once: why the first write would be refused
        note = unwritable_note(export)
        if note is not None:
            print(f"pysfsd: note: {note}", file=sys.stderr, flush=True)
    # On stderr: stdout carries only the lines scripts wait for (listening, index ready).
    print(f"pysfsd: portmapper: {server.discovery.status}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    loop.create_task(_announce_index(server))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    print("pysfsd: stopped", flush=True)
    return 0
