"""C sources and headers -> ``exports`` and ``imports`` (see ``fields`` for the rules).

Parsed with tree-sitter's C grammar: a real, error-tolerant parser, so macros, comments,
strings and half-written code never confuse it the way regular expressions would.  Only the
first 4 MiB of a file are parsed (enough for all but amalgamations).
"""
from __future__ import annotations

import os
import stat
import threading
from typing import Iterable

import tree_sitter
import tree_sitter_c

from ..fields import MAX_VALUE, ext_of
from .interface import Content, Tier

C_READ = 4 << 20
_LANGUAGE = tree_sitter.Language(tree_sitter_c.language())
_QUERY = tree_sitter.Query(_LANGUAGE, """
    (call_expression function: (identifier) @call)
    (preproc_include path: [(system_lib_string) (string_literal)] @include)
""")
_CONDITIONALS = {"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef"}
_DERIVED = {"pointer_declarator": False, "array_declarator": False, "function_declarator": True}


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
        parser = getattr(self._local, "parser", None)
        if parser is None:
            parser = self._local.parser = tree_sitter.Parser(_LANGUAGE)
        root = parser.parse(content.head(C_READ)).root_node
        header = ext_of(name) == b"h"
        defined: set[bytes] = set()
        exports: set[bytes] = set()
        _top_level(root, header, defined, exports)
        captures = tree_sitter.QueryCursor(_QUERY).captures(root)
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
