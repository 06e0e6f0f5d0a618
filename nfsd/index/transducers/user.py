"""User transducers: commands (``--transducer 'GLOB=COMMAND'``) and Python entry points
(group ``pysfsd.transducers``), both run by the sandbox's worker pool, never in the server.

Seen from the index they are content-tier transducers like the built-ins: ``applies`` matches
the file name against the globs (no I/O), ``extract`` sends the first ``MAX_INPUT`` bytes to a
worker and checks what comes back (``useroutput``).  Any failure raises, so the extractor logs
it once for that file version, counts it, and the file keeps its other fields.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import shlex
import stat
import zlib
from dataclasses import dataclass
from typing import Iterable

from ...config.errors import ConfigError
from ...sandbox import TransducerFailed, WorkerPool
from ...sandbox.wire import DESCRIBE, MAX_INPUT, RUN_COMMAND, RUN_ENTRY_POINT
from .interface import Content, Tier, Transducer
from .user_output import OutputRejected, parse_lines, parse_packed

log = logging.getLogger("pysfsd.index")


class TransducerSpecError(ConfigError):
    pass


@dataclass(frozen=True)
class CommandSpec:
    """``GLOB=COMMAND``: the command line is split like a shell would (quotes, backslashes)
    but run without one; write ``sh -c '...'`` for pipes."""

    glob: str
    argv: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "CommandSpec":
        glob, eq, command = text.partition("=")
        glob, command = glob.strip(), command.strip()
        if not eq or not glob or not command:
            raise TransducerSpecError(f"transducer {text!r}: expected GLOB=COMMAND, e.g. '*.txt=wc-fields'")
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise TransducerSpecError(f"transducer {text!r}: {exc}") from None
        return cls(glob, argv)


class _Isolated:
    tier: Tier = "content"

    def __init__(self, name: str, version: int, globs: Iterable[str], pool: WorkerPool) -> None:
        self.name, self.version, self.pool = name, version, pool
        self._globs = [os.fsencode(g) for g in globs]

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and any(fnmatch.fnmatchcase(name, g) for g in self._globs)

    def _ask(self, content: Content | None) -> bytes | None:
        if content is None:
            return None
        try:
            return self.pool.call(self.kind, self.key, content.head(MAX_INPUT))
        except TransducerFailed as exc:
            raise TransducerFailed(str(exc)) from None  # short log lines: no chained traceback

    kind: int
    key: bytes


class CommandTransducer(_Isolated):
    kind = RUN_COMMAND

    def __init__(self, number: int, spec: CommandSpec, pool: WorkerPool) -> None:
        text = spec.glob + "=" + shlex.join(spec.argv)
        super().__init__(f"command:{os.path.basename(spec.argv[0])}#{number}",
                         zlib.crc32(text.encode()), [spec.glob], pool)
        self.key = str(number).encode()

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        output = self._ask(content)
        return [] if output is None else parse_lines(output)


class EntryPointTransducer(_Isolated):
    kind = RUN_ENTRY_POINT

    def __init__(self, ep_name: str, globs: list[str], version: int, pool: WorkerPool) -> None:
        super().__init__(f"plugin:{ep_name}", version, globs, pool)
        self.key = ep_name.encode()

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        output = self._ask(content)
        return [] if output is None else parse_packed(output)


def user_transducers(specs: list[CommandSpec], pool: WorkerPool, entry_points: bool = True) -> list[Transducer]:
    """The command transducers, in order, then the entry points the worker could load (one
    that fails to import is logged and left out)."""
    found: list[Transducer] = [CommandTransducer(i, s, pool) for i, s in enumerate(specs)]
    if entry_points:
        try:
            described = pool.describe(DESCRIBE)
        except TransducerFailed as exc:
            log.error("cannot list the entry-point transducers: %s", exc)
            described = []
        for info in described:
            if info.get("error"):
                log.error("transducer plugin %s not loaded: %s", info.get("name"), info["error"])
                continue
            found.append(EntryPointTransducer(str(info["name"]), list(info["globs"]), int(info["version"]), pool))
    return found


__all__ = ["CommandSpec", "CommandTransducer", "EntryPointTransducer", "OutputRejected", "TransducerSpecError",
           "user_transducers"]
