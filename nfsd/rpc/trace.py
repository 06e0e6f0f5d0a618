"""Protocol tracing (PYSFSD_TRACE=N), in the spirit of SFS's ASRV_TRACE.

Level 1: one line per call (client, xid, procedure, key arguments, status, latency).
Levels 2-9: also the fully decoded arguments and results.  Level 10: also the raw bytes.
Nothing here runs when tracing is off: the dispatcher checks the level first.
"""
from __future__ import annotations

import enum

import logging
import os
from typing import Any

from xdr import Enum

log = logging.getLogger("pysfsd.trace")


def trace_level() -> int:
    try:
        return max(0, min(10, int(os.environ.get("PYSFSD_TRACE", "0") or 0)))
    except ValueError:
        return 0


def _short(value: Any, limit: int = 48) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value[:limit])
        more = f"...+{len(value) - limit}" if len(value) > limit else ""
        try:
            text = raw.decode()
            if text.isprintable():
                return repr(text) + more
        except UnicodeDecodeError:
            pass
        return raw.hex() + more
    return repr(value)


def summarize(value: Any) -> str:
    """Key arguments on one line: handles as short hex, names as text, numbers as is."""
    if value is None:
        return ""
    if hasattr(value, "_fields"):
        parts = []
        for name in value._fields:
            v = getattr(value, name)
            if hasattr(v, "_fields"):
                inner = summarize(v)
                if inner:
                    parts.append(f"{name}={{{inner}}}")
            elif isinstance(v, (bytes, bytearray, memoryview)):
                parts.append(f"{name}={_short(v, 20)}")
            elif name == "mode" and isinstance(v, int) and not isinstance(v, bool):
                parts.append(f"{name}={mode_text(v)}")
            elif isinstance(v, (int, bool)):
                parts.append(f"{name}={v}")
        return " ".join(parts)
    return _short(value)


def credentials(sent: Any, service: Any, proc: str, ctx: Any, args: Any) -> str:
    """The credentials the client sent and, where the service can say (the export guard),
    those the call ran with after squashing: the latter explain an NFS3ERR_ACCES."""
    text = f"sent uid={sent.uid} gid={sent.gid} gids={list(sent.gids)}"
    describe = getattr(service, "trace_credentials", None)
    effective = describe(proc, ctx, args) if describe is not None else None
    return text if effective is None else f"{text} -> ran as {effective}"


def mode_text(mode: int) -> str:
    """A mode as chmod and ls show it: octal (0644, 01777)."""
    return f"0{mode:o}" if mode else "0"


def pretty(value: Any, indent: int = 2, depth: int = 0) -> str:
    """A decoded value, fully, one field per line (modes in octal)."""
    pad = " " * (indent * (depth + 1))
    if hasattr(value, "_fields"):
        lines = [f"{type(value).__name__} {{"]
        for name in value._fields:
            v = getattr(value, name)
            if name == "mode" and isinstance(v, int) and not isinstance(v, bool):
                lines.append(f"{pad}{name} = {mode_text(v)}")
                continue
            lines.append(f"{pad}{name} = {pretty(v, indent, depth + 1)}")
        lines.append(" " * (indent * depth) + "}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        inner = [f"{pad}{pretty(v, indent, depth + 1)}" for v in value]
        return "[\n" + "\n".join(inner) + "\n" + " " * (indent * depth) + "]"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
        return f"<{value[0]}> {pretty(value[1], indent, depth)}"
    return _short(value, 256)


def status_name(result: Any, status_enum: Enum | None) -> str:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int) and status_enum is not None:
        try:
            return status_enum.values(result[0]).name
        except ValueError:
            return str(result[0])
    stat = getattr(result, "stat", None)   # NLM results: a struct with a status field
    stat = getattr(result, "test_stat", (stat,))[0] if stat is None else stat
    if isinstance(stat, enum.IntEnum):
        return stat.name
    return "OK"


def hexdump(data: bytes | bytearray | memoryview, limit: int = 512) -> str:
    raw = bytes(data[:limit])
    rows = [f"    {i:04x}  {raw[i:i + 16].hex(' ')}" for i in range(0, len(raw), 16)]
    if len(data) > limit:
        rows.append(f"    ... {len(data) - limit} more bytes")
    return "\n".join(rows)
