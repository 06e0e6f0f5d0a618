"""The ``pysfsd`` command."""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys

from .app import ConfigError, NfsServer, ServerConfig, default_state_dir
from .server import raise_open_files_limit
from .index.index import EXTRACT_THREADS
from .config_file import parse_with_config
from .dirlist import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES
from .transducer_options import add_arguments as add_transducer_arguments, settings_from


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pysfsd", description="Semantic file system served over NFSv3.")
    p.add_argument("--export", action="append", default=[], metavar="DIR",
                   help="directory to export (repeatable): alone it means 'DIR *(rw,root_squash,insecure)'; "
                        "or a whole exports(5) line, 'DIR CLIENT(OPTIONS)...'")
    p.add_argument("--exports", metavar="FILE",
                   help="exports in the /etc/exports syntax (see README: Exports)")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=2049,
                   help="TCP and UDP port for NFS and MOUNT (default 2049; 0 picks a free one)")
    p.add_argument("--state-dir", default=default_state_dir(),
                   help="where the LMDB environment lives (default %(default)s)")
    p.add_argument("--threads", type=int, default=8, help="I/O worker threads (default 8)")
    p.add_argument("--results", choices=("links", "files"), default="links",
                   help="value directories hold symlinks to the files (default) or the files themselves")
    p.add_argument("--no-watch", dest="watch", action="store_false",
                   help="do not follow changes made behind the server's back (inotify)")
    p.add_argument("--portmap", action="store_true",
                   help="when no portmapper runs, serve one (portmap v2 on port 111, TCP and UDP)")
    p.add_argument("--portmap-port", type=int, default=111, metavar="N",
                   help="port of the --portmap portmapper (default 111; for tests)")
    p.add_argument("--idle-timeout", type=float, default=360.0, metavar="SECONDS",
                   help="close a TCP connection with nothing pending after this long (default 360)")
    p.add_argument("--stall-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="close a TCP connection stuck this long in a partial record or not reading "
                        "its replies (default 120)")
    p.add_argument("--attr-cache-seconds", type=float, default=DEFAULT_MAX_AGE, metavar="SECONDS",
                   help="longest a listed entry's attributes are served from the cache without a change "
                        "event (changes inotify cannot see: default %(default)g; 0 disables the cache)")
    p.add_argument("--attr-cache-mib", type=float, default=DEFAULT_MAX_BYTES / (1 << 20), metavar="MIB",
                   help="memory for cached directory entries (default %(default)g)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.add_argument("--config", metavar="FILE",
                   help="read options from a TOML file, one key per long option (see README: Configuration file)")
    add_transducer_arguments(p)
    return p


def tune_malloc() -> None:
    """Keep 1 MiB buffers on the heap: with glibc's defaults each one is a fresh mmap whose
    pages fault in again on every READ/WRITE record (measured 1.5 ms vs 0.25 ms per MiB).

    And at most two malloc arenas: by default each I/O thread gets its own, which keeps the
    freed buffers it held, so resident memory crept up for as long as the load lasted
    (scripts/load/soak.py without the VM: +17 MiB in 3 minutes and still rising; with two
    arenas flat from the second minute on, 40 MiB lower).  Threads mostly hold the GIL
    anyway, so they hardly contend for an arena.  MALLOC_ARENA_MAX in the environment wins."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(m_arena_max, 2)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("index", "query"):
        from .cli_index import main as index_main  # the index commands serve nothing
        return index_main(argv)
    if argv and argv[0] == "check":
        from .check import main as check_main  # compares (and repairs) the state, serves nothing
        return check_main(argv)
    parser = build_parser()
    args = parse_with_config(parser, argv)
    if not args.export and not args.exports:
        parser.error("give --export DIR (repeatable) or --exports FILE")
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2) if not _tracing() else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    tune_malloc()
    raise_open_files_limit()
    config = ServerConfig(exports=args.export, exports_file=args.exports, bind=args.bind, port=args.port,
                          state_dir=args.state_dir, threads=args.threads, results=args.results,
                          watch=args.watch, portmap=args.portmap, portmap_port=args.portmap_port,
                          idle_timeout=args.idle_timeout, stall_timeout=args.stall_timeout,
                          attr_cache_seconds=args.attr_cache_seconds,
                          attr_cache_bytes=int(args.attr_cache_mib * (1 << 20)),
                          transducers=settings_from(args, workers=EXTRACT_THREADS))
    try:
        import uvloop  # noqa: F401  (optional: a faster event loop)
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(_serve(config))
    except ConfigError as exc:
        print(f"pysfsd: {exc}", file=sys.stderr)
        return 2


async def _announce_index(server: NfsServer) -> None:
    """The line scripts wait for before relying on query directories."""
    started = asyncio.get_running_loop().time()
    await server.indexed.wait()
    files = sum(getattr(s, "seen", 0) for s in server.scan_stats.values())
    elapsed = asyncio.get_running_loop().time() - started
    print(f"pysfsd: index ready ({files} files, {elapsed:.1f} s)", flush=True)


def _tracing() -> bool:
    from .trace import trace_level
    return trace_level() > 0


async def _serve(config: ServerConfig) -> int:
    server = NfsServer(config)
    host, port = await server.start()
    for i, fs in enumerate(server.exports.values()):
        word = "listening on" if i == 0 else "           "
        print(f"pysfsd: {word} {host}:{port} export {fs.root_path}", flush=True)
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
