"""C sources and headers -> ``exports`` and ``imports`` (see ``fields`` for the rules).

Parsed with tree-sitter's C grammar: a real, error-tolerant parser, so macros, comments,
strings and half-written code never confuse it the way regular expressions would.  Only the
first 4 MiB of a file are parsed (enough for all but amalgamations).

tree-sitter and the grammar are loaded at the first C file parsed, not with this module:
only the index writer extracts, and they cost 1.5 MiB in every process that loads them
(docs/design.rst, "Memory at rest").
"""
from __future__ import annotations

import functools
import os
import stat
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Iterable

from ..fields import MAX_VALUE, ext_of
from .interface import Content, Tier

if TYPE_CHECKING:
    import tree_sitter

C_READ = 4 << 20
_QUERY_TEXT = """
    (call_expression function: (identifier) @call)
    (preproc_include path: [(system_lib_string) (string_literal)] @include)
"""
_CONDITIONALS = {"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef"}
_DERIVED = {"pointer_declarator": False, "array_declarator": False, "function_declarator": True}


@functools.cache
def _grammar() -> tuple[ModuleType, tree_sitter.Language, tree_sitter.Query]:
    """(tree_sitter, the C language, the imports query), made at the first C file (two
    threads at once may both make them: one pair is kept, the other dropped)."""
    import tree_sitter
    import tree_sitter_c
    language = tree_sitter.Language(tree_sitter_c.language())
    return tree_sitter, language, tree_sitter.Query(language, _QUERY_TEXT)


class CSymbols:
    name = "c"
    version = 1
    tier: Tier = "content"
    fields = (b"exports", b"imports")

    def __init__(self) -> None:
        self._local = threading.local()  # a Parser is not thread-safe

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and ext_of(name) in (b"c", b"h")

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None:
            return []
        ts, language, query = _grammar()
        parser = getattr(self._local, "parser", None)
        if parser is None:
            parser = self._local.parser = ts.Parser(language)
        root = parser.parse(content.head(C_READ)).root_node
        header = ext_of(name) == b"h"
        defined: set[bytes] = set()
        exports: set[bytes] = set()
        _top_level(root, header, defined, exports)
        captures = ts.QueryCursor(query).captures(root)
        imports = {_include_path(n.text or b"") for n in captures.get("include", [])}
        imports.update(n.text or b"" for n in captures.get("call", []))
        imports -= defined
        return [(b"exports", v) for v in exports if 0 < len(v) <= MAX_VALUE] + \
               [(b"imports", v) for v in imports if 0 < len(v) <= MAX_VALUE]


def _top_level(node: tree_sitter.Node, header: bool, defined: set[bytes], exports: set[bytes]) -> None:
    """Collect what the file defines (functions, variables, function-like macros) and what
    of it is exported, at file scope (looking inside #if blocks, which stay file scope)."""
    for item in node.named_children:
        if item.type in _CONDITIONALS:
            _top_level(item, header, defined, exports)
        elif item.type == "function_definition":
            found = _declared(item.child_by_field_name("declarator"))
            if found is not None:
                defined.add(found[0])
                if _storage(item) != b"static":
                    exports.add(found[0])
        elif item.type == "preproc_function_def":
            name = item.child_by_field_name("name")
            if name is not None and name.text:
                defined.add(name.text)  # MAX(a, b) is no import
        elif item.type == "declaration":
            storage = _storage(item)
            for decl in item.children_by_field_name("declarator"):
                found = _declared(decl)
                if found is None:
                    continue
                symbol, is_function = found
                definition = not (is_function or storage == b"extern")
                if definition:
                    defined.add(symbol)  # calling a function pointer defined here imports nothing
                # a prototype or an extern variable declares: it exports only from a header
                if storage != b"static" and (definition or header):
                    exports.add(symbol)


def _storage(node: tree_sitter.Node) -> bytes | None:
    for child in node.children:
        if child.type == "storage_class_specifier":
            return child.text
    return None


def _declared(node: tree_sitter.Node | None) -> tuple[bytes, bool] | None:
    """(name, is a function) of a declarator.  What a name *is* follows the derivation
    nearest to it: ``int *f(void)`` is a function, ``int (*fp)(void)`` a pointer."""
    is_function = False
    while node is not None:
        kind = node.type
        if kind == "identifier":
            return node.text or b"", is_function
        if kind in _DERIVED:
            is_function = _DERIVED[kind]
        inner = node.child_by_field_name("declarator")
        if inner is None and kind in ("parenthesized_declarator", "attributed_declarator"):
            inner = node.named_children[0] if node.named_children else None
        node = inner
    return None


def _include_path(text: bytes) -> bytes:
    return text.strip().strip(b'<>"')
