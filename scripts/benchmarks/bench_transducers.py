#!/usr/bin/env python3
"""What isolating a user transducer costs: per file and for a whole index build.

The same logic (count the words, report the first one) runs four ways:

* in-process: a plain function call, the floor;
* entry point: in a persistent, confined worker (the Sprockets way: no fork per file);
* command (python3): a fresh confined process per file, the fork-based isolation;
* command (sh + wc): the same, with a process that starts faster than Python.

    python scripts/benchmarks/bench_transducers.py [--files 2000] [--calls 300]
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nfsd.index import Index  # noqa: E402
from nfsd.index.transducers.user_output import parse_lines, parse_packed  # noqa: E402
from nfsd.sandbox.wire import RUN_COMMAND, RUN_ENTRY_POINT  # noqa: E402
from nfsd.config.transducers import TransducerSettings, build  # noqa: E402

LOGIC = '''
def words(data):
    parts = data.split()
    yield "words", str(len(parts))
    if parts:
        yield "first", parts[0][:64].decode("utf-8", "replace").replace("%", "%25").replace("/", "%2F")
words.globs = ["*.txt"]
'''
COMMAND_PY = shlex.join(["python3", "-c", "import sys\nparts = sys.stdin.buffer.read().split()\n"
                         "print('words=%d' % len(parts))\n"
                         "print('first=' + parts[0][:64].decode('utf-8', 'replace').replace('%', '%25')"
                         ".replace('/', '%2F')) if parts else None\n"])
COMMAND_SH = "sh -c 'echo words=$(wc -w)'"


def plugin_dir() -> Path:
    base = Path(tempfile.mkdtemp(prefix="pysfsd-bench-plugin-", dir="/tmp"))
    (base / "bench_words.py").write_text(LOGIC)
    info = base / "bench_words-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-words\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pysfsd.transducers]\nwords = bench_words:words\n")
    for p in (base, info, *base.iterdir(), *info.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return base


def per_call(label: str, fn, calls: int, baseline: float | None) -> float:
    fn()  # warm up (starts the worker)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    each = (time.perf_counter() - start) / calls
    ratio = f"  {each / baseline:8.1f}x in-process" if baseline else ""
    print(f"  {label:<28} {each * 1e6:10.1f} us/file{ratio}")
    return each


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000, help="files in the index build (default 2000)")
    ap.add_argument("--calls", type=int, default=300, help="calls per per-file measurement (default 300)")
    args = ap.parse_args()
    plugins = plugin_dir()
    sys.path.insert(0, str(plugins))
    namespace: dict = {}
    exec(LOGIC, namespace)
    content = b"semantic file systems index what files say " * 20

    print(f"per file ({len(content)} bytes of content; {os.cpu_count()} CPUs; as uid {os.geteuid()}):")
    transducers, pool = build(TransducerSettings(commands=[f"*.txt={COMMAND_PY}", f"*.txt={COMMAND_SH}"]))
    assert pool is not None
    try:
        base = per_call("in-process function", lambda: list(namespace["words"](content)), args.calls * 20, None)
        ep = per_call("entry point (worker pool)", lambda: parse_packed(pool.call(RUN_ENTRY_POINT, b"words", content)),
                      args.calls, base)
        fork_py = per_call("command, python3 per file", lambda: parse_lines(pool.call(RUN_COMMAND, b"0", content)),
                           max(args.calls // 5, 20), base)
        fork_sh = per_call("command, sh + wc per file", lambda: parse_lines(pool.call(RUN_COMMAND, b"1", content)),
                           max(args.calls // 3, 20), base)
        print(f"  fork-based / worker pool: {fork_py / ep:.1f}x (python3), {fork_sh / ep:.1f}x (sh + wc)")
    finally:
        pool.close()

    print(f"index build, {args.files} text files (files/s):")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "export"
        root.mkdir()
        for i in range(args.files):
            (root / f"f{i:06d}.txt").write_bytes(b"word%d " % i * 50)
        rates: dict[str, float] = {}
        for label, commands, plugins_on in (("built-ins only", [], False),
                                            ("+ entry point (isolated)", [], True),
                                            ("+ command python3 (isolated)", [f"*.txt={COMMAND_PY}"], False)):
            transducers, pool = build(TransducerSettings(commands=commands, plugins=plugins_on))
            env = lmdb.open(os.path.join(tmp, f"state-{len(rates)}"), max_dbs=128, map_size=1 << 30, sync=False)
            index = Index(env, str(root), 1, transducers=transducers)
            try:
                stats = index.scan()
                assert stats.failed == 0, stats
                if commands or plugins_on:
                    assert index.values(b"words", index.root_ino) == [b"50"]
            finally:
                index.close()
                if pool is not None:
                    pool.close()
                env.close()
            rates[label] = stats.rate
            print(f"  {label:<30} {stats.rate:10.0f} files/s  ({stats.seconds:.2f} s)")
    for p in sorted(plugins.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    plugins.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
