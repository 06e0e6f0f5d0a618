#!/usr/bin/env python3
"""Build a copy of a checkout with its hot path compiled by mypyc: a measure, not a build.

Would compiling the modules a lone call runs through buy what CPython lacks?  This copies the
tracked files of ``--source`` (default: this checkout, uncommitted edits included) to
``--dest``, applies the few minimal edits mypyc needs (listed in ``PATCHES``, each with why),
compiles ``MODULES`` with ``mypyc`` in place (the ``.so`` next to the ``.py``: the import
system prefers the extension), leaves out any module mypyc still refuses (the reason is
printed) and prints where each module went, checked by importing it from the copy.

    python scripts/benchmarks/mypyc_probe.py --dest /tmp/mypyc-tree
    python scripts/benchmarks/mypyc_probe.py --dest /tmp/mypyc-tree --xdr   # + ahead-of-time XDR

``--xdr``: the XDR codec generates its pack/unpack functions with ``exec`` at run time, which
mypyc cannot compile; this writes the generated source of every served procedure's argument
and result types to ``xdraot.py`` at the copy's root (scripts/benchmarks/xdr_aot.py), compiles
it too, and has the copy's ``xdr/types.py`` take a compiled function instead of ``exec`` when
the source it generates matches: a measure of what an ahead-of-time XDR codec would buy.

A compiled module checks its arguments' types at run time where CPython trusts the hints:
a hint narrower than what is passed is a TypeError there (two are patched below; run the
server tests against the copy before believing a figure from a path they do not cover).

Then compare, interleaved: ``PYTHONPATH=/tmp/mypyc-tree`` for bench_dispatch.py and
bench_handlers.py; ``bench_lone_think.py --tree compiled=/tmp/mypyc-tree`` for whole servers.
Nothing here changes how pysfsd is built or installed (docs/design.rst, "Protocol
behaviour", the fifteenth pass, has the figures).  Needs gcc and the Python headers.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = ".mypyc-probe"  # in --dest: this script made it, so it may wipe it

# What a GETATTR, LOOKUP, CREATE, REMOVE, SETATTR and WRITE run through (cProfile of
# bench_dispatch.py and bench_handlers.py --profile), and the transport they arrive by.
MODULES = [
    "protocol/rpc.py", "protocol/record.py", "protocol/program.py",
    "nfsd/rpc/server.py", "nfsd/rpc/dispatch.py", "nfsd/rpc/drc.py", "nfsd/rpc/call.py",
    "nfsd/exports/guard.py", "nfsd/exports/rules.py",
    "nfsd/nfs3/service.py", "nfsd/nfs3/attrs.py", "nfsd/nfs3/errors.py", "nfsd/nfs3/procedures.py",
    "nfsd/nfs3/dirlist.py", "nfsd/nfs3/entry_events.py",
    "nfsd/fs/localfs.py", "nfsd/fs/semantic.py", "nfsd/fs/handles.py", "nfsd/fs/identity.py",
    "nfsd/fs/late_close.py", "nfsd/fs/writeback.py", "nfsd/fs/fchmod.py",
    "nfsd/fs/backend.py", "nfsd/fs/journaled.py",
    "nfsd/state/store.py",
]

# Left out, found by trying: nfsd/fs/utimens.py (SETATTR's times, through ctypes): mypyc 2.4
# generates C that does not build for its ``import ctypes`` (``CPyModule__ctypes`` undeclared);
# nfsd/fs/idlefd.py (idle descriptors, off the call path): compiled, it segfaults at import
# (a NamedTuple whose field type is imported only under TYPE_CHECKING, a cycle with localfs);
# nfsd/index/index.py (the note a CREATE or REMOVE queues, 2-4 us of it): the worker's and the
# writer's Index subclasses (nfsd/index/writer_channel.py, interpreted) cannot inherit from a
# native class, writer_channel keeps state in the instance's __dict__ and passes **kwargs up
# wrongly when compiled, and as a non-native class index.py crashes mypyc 2.4 (internal
# AssertionError in Index.scan's closure).  Its own patches, kept for whoever tries again:
# CreatedStat(tuple) and Index as non-native classes, the ``continue`` inside try/finally of
# Index._apply_notes written as if/elif (mypyc has no continue there).

# (module, old text, new text, why): the least that makes mypyc accept a module and the server
# run.  A patch whose old text is not found (another tree) leaves the module to the compile
# loop below, which excludes it if mypyc refuses it.
_NON_NATIVE = "@__import__('mypy_extensions').mypyc_attr(native_class=False)\n"
PATCHES: list[tuple[str, str, str, str]] = [
    ("nfsd/state/store.py", "\nclass StoreFull(OSError):", "\n" + _NON_NATIVE + "class StoreFull(OSError):",
     "an OSError subclass with its own __init__: a plain Python class"),
    ("nfsd/exports/rules.py", "\n@dataclass(frozen=True)\nclass Options:", "\n" + _NON_NATIVE + "@dataclass(frozen=True)\nclass Options:",
     "parse_options copies an Options through its __dict__, which a native class has not"),
    ("nfsd/nfs3/dirlist.py", "\nclass Listing:", "\n" + _NON_NATIVE + "class Listing:",
     "subclassed by the (interpreted) query listings: an interpreted class cannot inherit from a compiled one"),
    # mypyc checks argument types at run time where CPython trusts the hints: two hints that
    # are narrower than what is passed (found by tests/server, each broke the server)
    ("nfsd/rpc/dispatch.py", "record: bytes", "record: Any",
     "the transport passes a bytearray for a record larger than its buffer (TypeError: a large "
     "WRITE's or READDIRPLUS's connection was dropped)"),
    ("nfsd/nfs3/dirlist.py", "def __init__(self, index: Any, cache: EntryCache, export_id: int)",
     "def __init__(self, index: Any, cache: Any, export_id: int)",
     "NotingIndex is given a PublishedEntryCache, which is no EntryCache (TypeError: the export was not indexed)"),
    ("nfsd/nfs3/entry_events.py", "def get(self, export_id: int, d_ino: int, *args: Any, **kwargs: Any) -> Any:",
     "def get(self, export_id: int, d_ino: int, dir_fh: Any, parent: Any, listing: Any, item_size: Any) -> Any:",
     "mypyc 2.4 passes super().get(a, b, *args, **kwargs) on as get(a, b, args): "
     "PublishedEntryCache.get (several workers' READDIRPLUS) raised TypeError"),
    ("nfsd/nfs3/entry_events.py", "return super().get(export_id, d_ino, *args, **kwargs)",
     "return super().get(export_id, d_ino, dir_fh, parent, listing, item_size)", "(the same)"),
    ("nfsd/rpc/server.py", "    _refused_logged = 0.0", "    _refused_logged: 'ClassVar[float]' = 0.0",
     "a class attribute assigned through the class: mypyc wants it declared ClassVar"),
    ("nfsd/rpc/server.py", "from typing import Any, Callable\n", "from typing import Any, Callable, ClassVar\n",
     "(the ClassVar above)"),
    ("nfsd/rpc/server.py", "max_transfer: int = MAX_TRANSFER) -> None:", "max_transfer: int = 32 << 10) -> None:",
     "a default naming a class attribute from inside the class body: KeyError at import when compiled"),
]

_ERROR = re.compile(r"^(?P<path>[\w/.]+\.py):(?P<line>\d+): error: (?P<msg>.*)$", re.M)


def copy_tree(source: Path, dest: Path) -> None:
    """The tracked files of ``source`` as they are on disk (edits included), nothing built."""
    if dest.exists():
        if not (dest / MARK).exists():
            sys.exit(f"{dest} exists and was not made by this script: give another --dest")
        shutil.rmtree(dest)
    files = subprocess.run(["git", "-C", str(source), "ls-files", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = source / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / MARK).write_text("made by scripts/benchmarks/mypyc_probe.py; safe to delete\n")


def apply_patches(dest: Path, modules: list[str]) -> list[str]:
    """Apply ``PATCHES`` to the copy's compiled modules; what was done, one line each."""
    notes = []
    for module, old, new, why in PATCHES:
        if module not in modules:
            continue
        path = dest / module
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))  # every occurrence
            notes.append(f"{module}: {why}")
        else:
            notes.append(f"{module}: patch not applicable here ({why})")
    return notes


def mypyc(dest: Path, modules: list[str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("mypyc")
    cmd = [str(exe) if exe.exists() else "mypyc", *modules]
    return subprocess.run(cmd, cwd=dest, capture_output=True, text=True)


def compile_modules(dest: Path, modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Compile ``modules``; a module mypyc refuses is left out (with its first error) and the
    rest compiled again, until the build passes."""
    excluded: dict[str, str] = {}
    todo = list(modules)
    while todo:
        done = mypyc(dest, todo)
        if done.returncode == 0:
            return todo, excluded
        refused: dict[str, str] = {}
        for m in _ERROR.finditer(done.stdout + done.stderr):
            refused.setdefault(m["path"], f"line {m['line']}: {m['msg']}")
        refused = {p: why for p, why in refused.items() if p in todo}
        if not refused:
            sys.exit(f"mypyc failed without a module to blame:\n{done.stdout}\n{done.stderr}")
        excluded.update(refused)
        todo = [m for m in todo if m not in refused]
    return todo, excluded


def check_imports(dest: Path, modules: list[str]) -> dict[str, str]:
    """Where each module really comes from when imported from the copy (each in its own
    process: a compiled module can crash the interpreter at import)."""
    env = {**os.environ, "PYTHONPATH": str(dest)}
    where = {}
    for m in modules:
        name = m[:-3].replace("/", ".")
        done = subprocess.run([sys.executable, "-c", f"import {name}; print({name}.__file__)"],
                              cwd=dest, env=env, capture_output=True, text=True)
        where[name] = (done.stdout.strip() if done.returncode == 0 else
                       f"fails to import (status {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return where


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=HERE.parents[1], help="the checkout to compile (default: this one)")
    p.add_argument("--dest", type=Path, default=Path("/tmp/mypyc-tree"))
    p.add_argument("--modules", help="comma-separated paths instead of the default hot path")
    p.add_argument("--xdr", action="store_true", help="also compile the generated XDR codec ahead of time")
    args = p.parse_args()
    modules = args.modules.split(",") if args.modules else list(MODULES)
    dest = args.dest.resolve()
    copy_tree(args.source.resolve(), dest)
    for note in apply_patches(dest, modules):
        print(f"patched   {note}")
    if args.xdr:
        import xdr_aot  # next to this script
        modules.append(xdr_aot.dump(dest))
        print("generated xdraot.py: the codecs of every program pysfsd serves, ahead of time")
    compiled, excluded = compile_modules(dest, modules)
    where = check_imports(dest, compiled)
    for m in modules:
        name = m[:-3].replace("/", ".")
        if m in excluded:
            print(f"excluded  {m}: {excluded[m]}")
        elif where.get(name, "").endswith(".so"):
            print(f"compiled  {m} -> {os.path.relpath(where[name], dest)}")
        else:
            print(f"NOT USED  {m}: imports as {where.get(name)}")
    print(f"\n{len(compiled)} of {len(modules)} modules compiled in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
