"""The transducer options shared by the server and ``pysfsd index``, and what they build:
the built-in transducers plus the user ones, and the sandbox pool that runs the latter."""
from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import pwd
from dataclasses import dataclass, field

from ..index.transducers.builtin import default_transducers
from ..index.transducers.interface import Transducer
from ..index.transducers.user import CommandSpec, TransducerSpecError, user_transducers
from ..sandbox import Identity, Limits, WorkerPool
from ..sandbox.worker import ENTRY_POINT_GROUP


@dataclass
class TransducerSettings:
    commands: list[str] = field(default_factory=list)   # GLOB=COMMAND
    timeout: float = 5.0
    cpu_seconds: int | None = None                       # None: the timeout, rounded up
    memory_mib: int = 512
    user: str | None = None                              # None: nobody, when the server is root
    plugins: bool = True                                 # load entry points of pysfsd.transducers
    workers: int = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("user transducers (docs/namespace.rst: User transducers)")
    g.add_argument("--transducer", action="append", default=[], metavar="GLOB=COMMAND",
                   help="run COMMAND on files whose name matches GLOB, content on its standard input, "
                        "field=value lines on its standard output (repeatable)")
    g.add_argument("--transducer-timeout", type=float, default=5.0, metavar="S",
                   help="wall-clock limit per file (default 5 s)")
    g.add_argument("--transducer-cpu", type=int, default=None, metavar="S",
                   help="CPU-time limit per file (default: the timeout)")
    g.add_argument("--transducer-memory", type=int, default=512, metavar="MIB",
                   help="address-space limit of each transducer process (default 512 MiB)")
    g.add_argument("--transducer-user", default=None, metavar="USER",
                   help="run transducers as USER when the server runs as root (default nobody)")
    g.add_argument("--no-plugins", dest="plugins", action="store_false",
                   help="do not load the transducers Python packages register (entry points "
                        f"'{ENTRY_POINT_GROUP}')")


def settings_from(args: argparse.Namespace, workers: int) -> TransducerSettings:
    return TransducerSettings(commands=list(args.transducer), timeout=args.transducer_timeout,
                              cpu_seconds=args.transducer_cpu, memory_mib=args.transducer_memory,
                              user=args.transducer_user, plugins=args.plugins, workers=workers)


def sandbox_identity(user: str | None) -> Identity | None:
    """Whom transducers run as: ``user`` (default nobody) when we are root; else ourselves."""
    if os.geteuid() != 0:
        if user is not None and user != pwd.getpwuid(os.geteuid()).pw_name:
            raise TransducerSpecError("--transducer-user needs the server to run as root")
        return None
    try:
        entry = pwd.getpwnam(user or "nobody")
    except KeyError:
        raise TransducerSpecError(f"--transducer-user: no user {user or 'nobody'!r}") from None
    return Identity(entry.pw_uid, entry.pw_gid)


def build(settings: TransducerSettings) -> tuple[list[Transducer], WorkerPool | None]:
    """The transducers an index runs, and the pool to close when it is done (or None)."""
    specs = [CommandSpec.parse(text) for text in settings.commands]
    if settings.timeout <= 0 or settings.memory_mib <= 0:
        raise TransducerSpecError("transducer limits must be positive")
    plugins = settings.plugins and bool(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    builtins: list[Transducer] = list(default_transducers())
    if not specs and not plugins:
        return builtins, None
    cpu = settings.cpu_seconds if settings.cpu_seconds is not None else math.ceil(settings.timeout)
    limits = Limits(timeout=settings.timeout, cpu_seconds=max(1, cpu), memory_bytes=settings.memory_mib << 20)
    pool = WorkerPool(limits, [list(s.argv) for s in specs], sandbox_identity(settings.user), settings.workers)
    try:
        return builtins + list(user_transducers(specs, pool, entry_points=plugins)), pool
    except BaseException:
        pool.close()
        raise
