"""Python sources -> ``exports`` and ``imports`` (the rules: see ``fields``).

Parsed with the standard library's ``ast``: Python's own parser, so strings, comments,
continuation lines and decorators never fool it.  The source is handed over as bytes, so a
coding declaration or BOM is honoured as by the interpreter.  Only the first 1 MiB is parsed;
a longer file is cut before its last top-level statement in that MiB (what follows the cut is
not seen).  A file that does not parse (a syntax error, nesting too deep for the parser) gives
no fields.
"""
from __future__ import annotations

import ast
import os
import re
import stat
from typing import Iterable, Iterator

from ..fields import MAX_VALUE, ext_of
from .interface import Content, Tier

PY_READ = 1 << 20
PYTHON_MIMES = frozenset({"text/x-script.python", "text/x-python"})
_TOP_LEVEL_LINE = re.compile(rb"\n(?=[^\s#])")
_BLOCKS = (ast.If, ast.Try, ast.TryStar, ast.With, ast.AsyncWith)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class PythonSymbols:
    name = "python"
    version = 1
    tier: Tier = "content"
    fields = (b"exports", b"imports")

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None or (ext_of(name) not in (b"py", b"pyi") and content.mime not in PYTHON_MIMES):
            return []
        source = content.head(PY_READ)
        if not content.complete(PY_READ):
            cuts = [m.start() for m in _TOP_LEVEL_LINE.finditer(source)]
            source = source[:cuts[-1] + 1] if cuts else b""
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return []  # not Python, or nested deeper than the parser goes (MemoryError: its stack)
        return [(b"exports", v) for v in _encoded(exports(tree))] + \
               [(b"imports", v) for v in _encoded(imports(tree))]


def exports(tree: ast.Module) -> list[str]:
    """The names ``from module import *`` gives: those listed in ``__all__`` when the module
    sets it to literal lists or tuples of strings only (``=``, ``+=``), else the public names
    it binds at top level (functions, classes, assigned names), imported names excepted."""
    public: list[str] = []
    listed: list[str] | None = None
    computed = False  # some part of __all__ is not a literal: fall back to the public names
    for node in _top_level(tree.body):
        if isinstance(node, _DEFINITIONS):
            public.append(node.name)
            continue
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            for name in _bound_names(target):
                if name == "__all__":
                    names = _literal_strings(value)
                    if names is None:
                        computed = True
                    else:
                        listed = names if not isinstance(node, ast.AugAssign) else (listed or []) + names
                elif not isinstance(node, ast.AugAssign):
                    public.append(name)
    if listed is not None and not computed:
        return listed
    return [n for n in public if not n.startswith("_")]


def imports(tree: ast.Module) -> list[str]:
    """Every module imported anywhere in the file, dotted as written: ``import os.path`` and
    ``from os.path import join`` give ``os.path``.  A relative import keeps its dots:
    ``from .models import User`` gives ``.models``, and ``from . import views`` (which can
    only name a module or the package's attribute) gives ``.views``."""
    out: list[str] = []
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            dots = "." * (node.level or 0)
            if node.module:
                out.append(dots + node.module)
            else:
                out.extend(dots + alias.name for alias in node.names if alias.name != "*")
    return out


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module's statements, looking inside ``if``, ``try`` and ``with`` blocks (what they
    define is still defined at module level), never inside functions or classes."""
    for node in body:
        if isinstance(node, _BLOCKS):
            for part in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(node, part, []))
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)
        else:
            yield node


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, at any depth (imports are statements: expressions, most of a tree,
    are never visited)."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        for part in ("body", "orelse", "finalbody"):
            stack.extend(getattr(node, part, ()))
        for clauses in (getattr(node, "handlers", ()), getattr(node, "cases", ())):  # except, case
            for clause in clauses:
                stack.extend(clause.body)


def _bound_names(target: ast.expr) -> Iterator[str]:
    """The plain names an assignment target binds (``a``, ``a, (b, *c)``; not ``x.y`` or
    ``x[0]``)."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _bound_names(element)
    elif isinstance(target, ast.Starred):
        yield from _bound_names(target.value)


def _literal_strings(value: ast.expr | None) -> list[str] | None:
    if isinstance(value, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts):
        return [e.value for e in value.elts]  # type: ignore[attr-defined]  # all() above: str Constants
    return None


def _encoded(names: list[str]) -> list[bytes]:
    out = dict.fromkeys(n.encode("utf-8", errors="replace") for n in names)
    return [v for v in out if 0 < len(v) <= MAX_VALUE and b"\0" not in v]
