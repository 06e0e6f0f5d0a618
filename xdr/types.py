"""Declarative XDR (RFC 4506) types compiled to Python.

A protocol is written as a tree of type objects (``Struct``, ``Union``, ``Enum``...), in the
same shape and with the same names as the ``.x`` text of its RFC.  Each type compiles itself,
on first use, into two generated functions:

* ``pack(buf: bytearray, value) -> None`` appends the encoding to ``buf``;
* ``unpack(data, off) -> (value, new_off)`` decodes from ``bytes``/``memoryview``.

The generated code groups every run of fixed-size fields into one precompiled
``struct.Struct`` so that, for instance, a whole ``fattr3`` is one ``pack`` call, and inlines
nested types rather than calling their functions.  That is what makes the hot paths
(attributes, directory listings) cheap in CPython.

Value model: integers and enums are ``int`` (enum members are ``IntEnum`` and compare equal),
``bool`` is ``bool``, opaque and string data are ``bytes`` (file names are not always UTF-8),
structs are generated ``NamedTuple``-style classes, optional data (``T *``) is ``None`` or the
value, discriminated unions are ``(discriminant, arm_value)`` tuples, and linked lists (the
``entry *nextentry`` idiom) are Python lists.
"""
from __future__ import annotations

import enum
import itertools
import struct
from collections import namedtuple
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

__all__ = [
    "XdrError", "XdrType", "Int32", "UInt32", "Int64", "UInt64", "Bool", "Void", "Enum",
    "Opaque", "FixedOpaque", "String", "Optional", "Struct", "Union", "VarArray",
    "FixedArray", "List", "Encoded", "Preencoded", "int32", "uint32", "int64", "uint64", "boolean", "void",
    "encode", "decode",
]


class XdrError(ValueError):
    """Raised for any input that is not a valid encoding of the expected type."""


_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_U32 = struct.Struct(">I")
_counter = itertools.count()


class _Gen:
    """Accumulates the constants a generated function refers to."""

    def __init__(self) -> None:
        # _tnew builds a decoded struct in one C call (the generated class's own __new__ is
        # a Python function: a frame per decoded struct).
        self.ns: dict[str, Any] = {"XdrError": XdrError, "_PAD": _PAD, "_U32": _U32,
                                   "_struct_error": struct.error, "_tnew": tuple.__new__}

    def const(self, obj: Any, hint: str = "c") -> str:
        name = f"_{hint}{next(_counter)}"
        self.ns[name] = obj
        return name

    @staticmethod
    def tmp(hint: str = "t") -> str:
        return f"{hint}{next(_counter)}"


def _indent(lines: Iterable[str], by: str = "    ") -> list[str]:
    return [by + line for line in lines]


# Pack emitters return ``PackCode``: source lines mixed with the items below, which
# ``_render`` turns into as few ``struct.pack`` calls as the encoding allows.  A run of fixed-size
# values that no write to ``buf`` separates (a list's continuation flag, an entry's fileid and
# its name's length) becomes one call; an opaque's padding becomes pad bytes of the next run's
# layout; and a pending run moves into every arm of a following if/else instead of costing a
# call of its own.  Runs of constants become byte literals.

class _Fixed(NamedTuple):
    """Fixed-size values still to be packed, in ``fmt`` order."""

    fmt: str
    exprs: list[str]


class _Pad(NamedTuple):
    """The zero padding after opaque data of length ``length`` (an expression)."""

    length: str


class _Branch(NamedTuple):
    """An if/elif/else chain (``heads``) whose ``arms`` are still pack code."""

    heads: list[str]
    arms: list["PackCode"]


PackCode = list["str | _Fixed | _Pad | _Branch"]
_PAD_FMT = ("", "3x", "2x", "x")


def _name(g: _Gen, expr: str, code: PackCode) -> str:
    """A local name holding ``expr``'s value: ``expr`` itself if it already is one."""
    if expr.isidentifier():
        return expr
    x = g.tmp("x")
    code.append(f"{x} = {expr}")
    return x


def _block(g: _Gen, code: PackCode, by: str = "    ") -> list[str]:
    """Pack code as an indented block of source lines."""
    return _indent(_render(g, code) or ["pass"], by)


def _render(g: _Gen, code: PackCode) -> list[str]:
    lines: list[str] = []
    run: PackCode = []  # pending _Pad (first, if any) and _Fixed items
    for item in code:
        if isinstance(item, _Fixed):
            run.append(item)
        elif isinstance(item, _Pad):
            lines += _write_run(g, run)
            run = [item]
        elif isinstance(item, _Branch):
            if item.heads[-1] != "else:":  # not every path takes an arm: write the run first
                lines += _write_run(g, run)
                run = []
            for head, arm in zip(item.heads, item.arms):
                raises = bool(arm) and isinstance(arm[0], str) and arm[0].startswith("raise ")
                lines.append(head)
                lines += _block(g, arm if raises else run + arm)
            run = []
        else:
            # Statements that neither write to buf nor open a block may run before the run.
            if "buf" in item or item.endswith(":") or item.startswith(" "):
                lines += _write_run(g, run)
                run = []
            lines.append(item)
    return lines + _write_run(g, run)


def _write_run(g: _Gen, run: PackCode) -> list[str]:
    """One statement packing a pending run (padding first, if it starts with a _Pad)."""
    pad = run[0].length if run and isinstance(run[0], _Pad) else None
    fixed = [f for f in run if isinstance(f, _Fixed)]
    fmt = "".join(f.fmt for f in fixed)
    exprs = [e for f in fixed for e in f.exprs]
    if pad is not None:
        if not fmt:
            return [f"buf += _PAD[{pad} & 3]"]
        layouts = g.const(tuple(struct.Struct(">" + p + fmt) for p in _PAD_FMT), "S")
        return [f"buf += {layouts}[{pad} & 3].pack({', '.join(exprs)})"]
    if not fmt:
        return []
    if all(e.isdigit() for e in exprs):
        return [f"buf += {struct.pack('>' + fmt, *map(int, exprs))!r}"]
    return [f"buf += {g.const(struct.Struct('>' + fmt), 'S')}.pack({', '.join(exprs)})"]


class XdrType:
    """Base of all XDR types.

    Fixed-size types whose encoding is a flat run of integers set ``fmt`` (``struct`` codes)
    and implement ``flatten``/``rebuild`` so that enclosing structs can merge them into a
    single ``struct.Struct``.  Other types emit pack/unpack code directly.
    """

    name: str = "?"
    fmt: str | None = None

    _pack_fn: Callable[[bytearray, Any], None] | None = None
    _unpack_fn: Callable[[Any, int], tuple[Any, int]] | None = None

    # -- code generation hooks ------------------------------------------------------------
    def flatten(self, g: _Gen, expr: str, pre: list[str]) -> list[str]:
        """Expressions, in ``fmt`` order, for the flat values of ``expr``.

        Statements that must run first (tuple unpacking, cheaper than attribute access)
        are appended to ``pre``."""
        raise NotImplementedError

    def rebuild(self, g: _Gen, names: Iterator[str], checks: list[str]) -> str:
        """Expression building the value from flat names; appends validation lines."""
        raise NotImplementedError

    def emit_pack(self, g: _Gen, expr: str) -> PackCode:
        """Code appending ``expr``'s encoding to ``buf``.  Composite types are inlined, not
        called: a call per directory entry or handle costs more than the packing itself."""
        if self.fmt is not None:
            pre: PackCode = []
            flat = self.flatten(g, expr, pre)  # type: ignore[arg-type]  # pre: validation lines (str) only
            return pre + [_Fixed(self.fmt, flat)]
        return self.emit_pack_body(g, expr)

    def emit_unpack(self, g: _Gen, target: str) -> list[str]:
        if self.fmt is not None:
            return _emit_fixed_unpack(g, [(self, target)])
        return self.emit_unpack_body(g, target)

    # -- compiled entry points -------------------------------------------------------------
    def _compile(self) -> None:
        """Generate both functions and install them as this instance's ``pack``/``unpack``,
        so that calls through the type cost no more than calls to the functions."""
        g = _Gen()
        name = g.const(self.name, "name")
        pack_src = (["def pack(buf, v):", "    try:"]
                    + _block(g, self.emit_pack_body(g, "v"), " " * 8)
                    + ["    except _struct_error as exc:",
                       f"        raise XdrError('%s: cannot encode %r: %s' % ({name}, v, exc)) from None"])
        g2 = _Gen()
        name = g2.const(self.name, "name")
        unpack_src = (["def unpack(data, off=0):", "    try:"]
                      + _indent(self.emit_unpack_body(g2, "r"), " " * 8)
                      + ["        return r, off",
                         "    except (_struct_error, IndexError, TypeError) as exc:",
                         f"        raise XdrError('%s: truncated or malformed: %s' % ({name}, exc)) from None"])
        self.pack = self._pack_fn = _build(pack_src, g.ns, "pack", self.name)  # type: ignore[method-assign]  # generated code replaces the stand-in
        self.unpack = self._unpack_fn = _build(unpack_src, g2.ns, "unpack", self.name)  # type: ignore[method-assign]  # as above

    def emit_pack_body(self, g: _Gen, expr: str) -> PackCode:
        if self.fmt is not None:
            return XdrType.emit_pack(self, g, expr)
        raise NotImplementedError

    def emit_unpack_body(self, g: _Gen, target: str) -> list[str]:
        if self.fmt is not None:
            return _emit_fixed_unpack(g, [(self, target)])
        raise NotImplementedError

    # Until the first call compiles the type, these stand in for the generated functions.
    def pack(self, buf: bytearray, value: Any) -> None:
        """Append the encoding of ``value`` to ``buf``."""
        if self._pack_fn is None:
            self._compile()
        self._pack_fn(buf, value)  # type: ignore[misc]  # set by _compile

    def unpack(self, data: Any, off: int = 0) -> tuple[Any, int]:
        """Decode one value at ``off``; returns it and the offset just past it."""
        if self._unpack_fn is None:
            self._compile()
        return self._unpack_fn(data, off)  # type: ignore[misc]  # set by _compile

    def compiled(self) -> tuple[Callable[[bytearray, Any], None], Callable[[Any, int], tuple[Any, int]]]:
        """The generated functions themselves (they raise only ``XdrError`` on bad input)."""
        if self._pack_fn is None:
            self._compile()
        return self._pack_fn, self._unpack_fn  # type: ignore[return-value]  # set by _compile

    def __repr__(self) -> str:
        return f"<xdr {self.name}>"


def _build(src: list[str], ns: dict[str, Any], fname: str, tname: str) -> Callable[..., Any]:
    code = "\n".join(src)
    exec(compile(code, f"<xdr {tname}.{fname}>", "exec"), ns)
    fn = ns[fname]
    fn.__source__ = code
    return fn


def _emit_fixed_unpack(g: _Gen, items: Sequence[tuple[XdrType, str]]) -> list[str]:
    """One ``unpack_from`` for a run of fixed-size items, then rebuild each value."""
    fmt = "".join(t.fmt for t, _ in items)  # type: ignore[misc]  # fixed-size items: fmt is set
    st = struct.Struct(">" + fmt)
    s = g.const(st, "S")
    count = len(st.unpack(bytes(st.size)))
    names = [g.tmp() for _ in range(count)]
    lines = []
    lhs = ", ".join(names) + ("," if count == 1 else "")
    lines.append(f"{lhs} = {s}.unpack_from(data, off)")
    lines.append(f"off += {st.size}")
    it = iter(names)
    for t, target in items:
        checks: list[str] = []
        expr = t.rebuild(g, it, checks)
        lines.extend(checks)
        lines.append(f"{target} = {expr}")
    return lines


# --- primitives --------------------------------------------------------------------------

class _Int(XdrType):
    def __init__(self, name: str, fmt: str) -> None:
        self.name, self.fmt = name, fmt

    def flatten(self, g: _Gen, expr: str, pre: list[str]) -> list[str]:
        return [expr]

    def rebuild(self, g: _Gen, names: Iterator[str], checks: list[str]) -> str:
        return next(names)


def Int32() -> XdrType:
    return _Int("int", "i")


def UInt32() -> XdrType:
    return _Int("unsigned int", "I")


def Int64() -> XdrType:
    return _Int("hyper", "q")


def UInt64() -> XdrType:
    return _Int("unsigned hyper", "Q")


class Bool(XdrType):
    name, fmt = "bool", "I"

    def flatten(self, g: _Gen, expr: str, pre: list[str]) -> list[str]:
        if expr.isdigit():  # a union's known discriminant
            return ["1" if int(expr) else "0"]
        return [f"(1 if {expr} else 0)"]

    def rebuild(self, g: _Gen, names: Iterator[str], checks: list[str]) -> str:
        n = next(names)
        checks.append(f"if {n} > 1: raise XdrError('bool out of range')")
        return f"({n} == 1)"


class Void(XdrType):
    name, fmt = "void", ""

    def flatten(self, g: _Gen, expr: str, pre: list[str]) -> list[str]:
        return []

    def rebuild(self, g: _Gen, names: Iterator[str], checks: list[str]) -> str:
        return "None"

    def emit_pack(self, g: _Gen, expr: str) -> PackCode:
        return []

    def emit_unpack(self, g: _Gen, target: str) -> list[str]:
        return [f"{target} = None"]

    emit_pack_body = emit_pack
    emit_unpack_body = emit_unpack


class Enum(XdrType):
    """An XDR enum; ``members`` becomes an ``IntEnum`` (``.values``) for names in traces."""

    def __init__(self, name: str, members: Mapping[str, int]) -> None:
        self.name, self.fmt = name, "i"
        self.values = enum.IntEnum(name, dict(members))  # type: ignore[misc]  # functional API, name known at run time
        self.allowed = frozenset(members.values())

    def flatten(self, g: _Gen, expr: str, pre: list[str]) -> list[str]:
        return [expr]

    def rebuild(self, g: _Gen, names: Iterator[str], checks: list[str]) -> str:
        n = next(names)
        allowed = g.const(self.allowed, "E")
        checks.append(f"if {n} not in {allowed}: raise XdrError('bad {self.name} value %d' % {n})")
        return n

    def __getattr__(self, item: str) -> Any:
        if item.startswith("_"):
            raise AttributeError(item)
        return getattr(self.values, item)


# --- opaque data and strings -----------------------------------------------------------

class Opaque(XdrType):
    """Variable-length ``opaque<max>``; ``view=True`` decodes to a zero-copy memoryview."""

    def __init__(self, max_len: int | None = None, name: str = "opaque", view: bool = False) -> None:
        self.name, self.max_len, self.view = name, max_len, view

    def emit_pack(self, g: _Gen, expr: str) -> PackCode:
        lines: PackCode = []
        x, n = _name(g, expr, lines), g.tmp("n")
        lines.append(f"{n} = len({x})")
        if self.max_len is not None:
            lines.append(f"if {n} > {self.max_len}: raise XdrError('{self.name} too long')")
        lines += [_Fixed("I", [n]), f"buf += {x}", _Pad(n)]
        return lines

    def emit_unpack(self, g: _Gen, target: str) -> list[str]:
        n = g.tmp("n")
        limit = f"{n} > {self.max_len} or " if self.max_len is not None else ""
        conv = "" if self.view else "bytes"
        return [
            f"{n}, = _U32.unpack_from(data, off)",
            "off += 4",
            f"if {limit}off + (({n} + 3) & ~3) > len(data): raise XdrError('{self.name}: bad length %d' % {n})",
            f"{target} = {conv}(data[off:off + {n}])",
            f"off += ({n} + 3) & ~3",
        ]

    emit_pack_body = emit_pack
    emit_unpack_body = emit_unpack


def String(max_len: int | None = None, name: str = "string") -> Opaque:
    """``string<max>``: kept as bytes, since file names need not be UTF-8."""
    return Opaque(max_len, name)


class FixedOpaque(XdrType):
    def __init__(self, size: int, name: str = "opaque[]") -> None:
        self.name, self.size = name, size
        self.padded = (size + 3) & ~3

    def emit_pack(self, g: _Gen, expr: str) -> PackCode:
        code: PackCode = []
        x = _name(g, expr, code)
        return code + [f"if len({x}) != {self.size}: raise XdrError('{self.name} must be {self.size} bytes')",
                       f"buf += {x}", _Fixed(_PAD_FMT[self.size & 3], [])]

    def emit_unpack(self, g: _Gen, target: str) -> list[str]:
        return [f"if off + {self.padded} > len(data): raise XdrError('{self.name} truncated')",
                f"{target} = bytes(data[off:off + {self.size}])",
                f"off += {self.padded}"]

    emit_pack_body = emit_pack
    emit_unpack_body = emit_unpack


# --- composites ---------------------------------------------------------------------------

class Optional(XdrType):
    """``T *name``: ``None`` or a value, encoded as a bool then the value."""

    def __init__(self, inner: XdrType, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or f"{inner.name} *"

    def emit_pack(self, g: _Gen, expr: str) -> PackCode:
        code: PackCode = []
        x = _name(g, expr, code)
        absent: PackCode = [_Fixed("I", ["0"])]
        present: PackCode = [_Fixed("I", ["1"])]
        return code + [_Branch([f"if {x} is None:", "else:"], [absent, present + self.inner.emit_pack(g, x)])]

    def emit_unpack(self, g: _Gen, target: str) -> list[str]:
        f = g.tmp("f")
        return [f"{f}, = _U32.unpack_from(data, off)", "off += 4",
                f"if {f} == 0:", f"    {target} = None",
                f"elif {f} == 1:"] + _indent(self.inner.emit_unpack(g, target)) + [
                "else:", "    raise XdrError('optional flag out of range')"]

    emit_pack_body = emit_pack
    emit_unpack_body = emit_unpack


class Struct(XdrType):
    """An XDR struct; values are instances of the generated ``NamedTuple``-like ``cls``."""

    def __init__(self, name: str, fields: Sequence[tuple[str, XdrType]]) -> None:
        self.name = name
        self.fields = list(fields)
        self.cls: Any = namedtuple(name, [f for f, _ in self.fields])  # type: ignore[misc]  # name known at run time
        self.cls.__xdr__ = self  # type: ignore[attr-defined]  # values find their XDR type
        if all(t.fmt is not None for _, t in self.fields):
            self.fmt = "".join(t.fmt for _, t in self.fields)  # type: ignore[misc]  # all fixed-size: fmt is set

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cls(*args, **kwargs)

    def flatten(self, g: _Gen, expr: str, pre: list[str]) -> list[str]:
        later: list[str] = []
        target, flat = self._target(g, later)
        pre.append(f"{target} = {expr}")
        pre.extend(later)
        return flat

    def _target(self, g: _Gen, later: list[str]) -> tuple[str, list[str]]:
        """A target unpacking a value in one statement, nested structs included, and the
        flat expressions; statements the fields need afterwards are appended to ``later``."""
        parts: list[str] = []
        flat: list[str] = []
        for _, t in self.fields:
            if isinstance(t, Struct):
                part, exprs = t._target(g, later)
            else:
                part = g.tmp("f")
                exprs = t.flatten(g, part, later)
            parts.append(part)
            flat += exprs
        return f"({', '.join(parts)},)", flat

    def rebuild(self, g: _Gen, names: Iterator[str], checks: list[str]) -> str:
        cls = g.const(self.cls, "K")
        parts = [t.rebuild(g, names, checks) for _, t in self.fields]
        return f"_tnew({cls}, ({', '.join(parts)},))"

    def _runs(self) -> list[list[tuple[str, XdrType]]]:
        """Consecutive fields grouped: runs of fixed-size ones, singles otherwise."""
        runs: list[list[tuple[str, XdrType]]] = []
        for f in self.fields:
            if f[1].fmt is not None and runs and runs[-1][-1][1].fmt is not None:
                runs[-1].append(f)
            else:
                runs.append([f])
        return runs

    def emit_pack_body(self, g: _Gen, expr: str) -> PackCode:
        if self.fmt is not None:
            return XdrType.emit_pack(self, g, expr)
        # Tuple unpacking: cheaper than an attribute access per field.
        names = [g.tmp("f") for _ in self.fields]
        code: PackCode = [f"{', '.join(names)}, = {expr}"]
        for name, (_, t) in zip(names, self.fields):
            code += t.emit_pack(g, name)
        return code

    def emit_unpack_body(self, g: _Gen, target: str) -> list[str]:
        if self.fmt is not None:
            return _emit_fixed_unpack(g, [(self, target)])
        lines: list[str] = []
        names = {fname: g.tmp("m") for fname, _ in self.fields}
        for run in self._runs():
            if run[0][1].fmt is not None:
                lines.extend(_emit_fixed_unpack(g, [(t, names[f]) for f, t in run]))
            else:
                fname, t = run[0]
                lines.extend(t.emit_unpack(g, names[fname]))
        cls = g.const(self.cls, "K")
        lines.append(f"{target} = _tnew({cls}, ({', '.join(names[f] for f, _ in self.fields)},))")
        return lines


class Union(XdrType):
    """Discriminated union; values are ``(discriminant, arm_value)`` tuples.

    ``arms`` maps each case value to the arm type (``Void()`` for ``void``); ``default`` is
    the type of the ``default:`` arm, or ``None`` when the union has none.
    """

    _NO_DEFAULT = object()

    def __init__(self, name: str, disc: XdrType, arms: Mapping[int, XdrType],
                 default: XdrType | None = None) -> None:
        self.name, self.disc, self.arms, self.default = name, disc, dict(arms), default

    def arm_type(self, d: int) -> XdrType | None:
        return self.arms.get(d, self.default)

    def emit_pack_body(self, g: _Gen, expr: str) -> PackCode:
        d, a = g.tmp("d"), g.tmp("a")
        tail: PackCode = (self.disc.emit_pack(g, d) + self.default.emit_pack(g, a) if self.default is not None
                          else [f"raise XdrError('{self.name}: no arm for %r' % ({d},))"])
        if not self.arms:
            return [f"{d}, {a} = {expr}"] + tail
        heads = [f"{'if' if i == 0 else 'elif'} {d} == {int(case)}:" for i, case in enumerate(self.arms)]
        # The discriminant is known in each arm: a void arm packs to a constant.
        arms = [self.disc.emit_pack(g, str(int(case))) + t.emit_pack(g, a) for case, t in self.arms.items()]
        return [f"{d}, {a} = {expr}", _Branch(heads + ["else:"], arms + [tail])]

    def emit_unpack_body(self, g: _Gen, target: str) -> list[str]:
        d, a = g.tmp("d"), g.tmp("a")
        lines = self.disc.emit_unpack(g, d) if not isinstance(self.disc, Enum) else \
            _emit_fixed_unpack(g, [(_Int("int", "i"), d)])
        chains: list[str] = []
        for i, (case, t) in enumerate(self.arms.items()):
            kw = "if" if i == 0 else "elif"
            chains.append(f"{kw} {d} == {int(case)}:")
            chains.extend(_indent(t.emit_unpack(g, a)))
        if self.default is not None:
            tail = self._default_unpack(g, d, a)
        else:
            tail = [f"raise XdrError('{self.name}: bad discriminant %d' % {d})"]
        if chains:
            chains.append("else:")
            chains.extend(_indent(tail))
        else:
            chains = tail
        return lines + chains + [f"{target} = ({d}, {a})"]

    def _default_unpack(self, g: _Gen, d: str, a: str) -> list[str]:
        lines: list[str] = []
        if isinstance(self.disc, Enum):
            allowed = g.const(self.disc.allowed, "E")
            lines.append(f"if {d} not in {allowed}: raise XdrError('bad {self.disc.name} %d' % {d})")
        return lines + self.default.emit_unpack(g, a)  # type: ignore[union-attr]  # called only with a default arm

    emit_pack = XdrType.emit_pack
    emit_unpack = XdrType.emit_unpack


class VarArray(XdrType):
    """``T name<max>``: a counted array, as a Python list."""

    def __init__(self, inner: XdrType, max_len: int | None = None, name: str | None = None) -> None:
        self.inner, self.max_len = inner, max_len
        self.name = name or f"{inner.name}<>"

    def emit_pack_body(self, g: _Gen, expr: str) -> PackCode:
        code: PackCode = []
        x, e = _name(g, expr, code), g.tmp("e")
        if self.max_len is not None:
            code.append(f"if len({x}) > {self.max_len}: raise XdrError('{self.name} too long')")
        return code + [_Fixed("I", [f"len({x})"]), f"for {e} in {x}:"] + _block(g, self.inner.emit_pack(g, e))

    def emit_unpack_body(self, g: _Gen, target: str) -> list[str]:
        n, lst, e = g.tmp("n"), g.tmp("l"), g.tmp("e")
        limit = f"{n} > {self.max_len} or " if self.max_len is not None else ""
        # Every element takes at least 4 bytes (or is void): bound the count by what remains
        # so a forged count cannot make us loop or allocate past the record.
        return [f"{n}, = _U32.unpack_from(data, off)", "off += 4",
                f"if {limit}{n} * 4 > len(data) - off: raise XdrError('{self.name}: bad count %d' % {n})",
                f"{lst} = []",
                f"for _ in range({n}):"] + _indent(self.inner.emit_unpack(g, e) + [f"{lst}.append({e})"]) + [
                f"{target} = {lst}"]

    emit_pack = XdrType.emit_pack
    emit_unpack = XdrType.emit_unpack


class FixedArray(XdrType):
    def __init__(self, inner: XdrType, size: int, name: str | None = None) -> None:
        self.inner, self.size = inner, size
        self.name = name or f"{inner.name}[{size}]"
        if inner.fmt is not None:
            self.fmt = inner.fmt * size

    def flatten(self, g: _Gen, expr: str, pre: list[str]) -> list[str]:
        return [e for i in range(self.size) for e in self.inner.flatten(g, f"{expr}[{i}]", pre)]

    def rebuild(self, g: _Gen, names: Iterator[str], checks: list[str]) -> str:
        return "[" + ", ".join(self.inner.rebuild(g, names, checks) for _ in range(self.size)) + "]"

    def emit_pack_body(self, g: _Gen, expr: str) -> PackCode:
        if self.fmt is not None:
            return XdrType.emit_pack(self, g, expr)
        code: PackCode = []
        x, e = _name(g, expr, code), g.tmp("e")
        return code + [f"if len({x}) != {self.size}: raise XdrError('{self.name}: wrong length')",
                       f"for {e} in {x}:"] + _block(g, self.inner.emit_pack(g, e))

    def emit_unpack_body(self, g: _Gen, target: str) -> list[str]:
        if self.fmt is not None:
            return _emit_fixed_unpack(g, [(self, target)])
        lst, e = g.tmp("l"), g.tmp("e")
        return [f"{lst} = []", f"for _ in range({self.size}):"] + _indent(
            self.inner.emit_unpack(g, e) + [f"{lst}.append({e})"]) + [f"{target} = {lst}"]


class List(XdrType):
    """The ``struct entry { ...; entry *next; }`` idiom as a Python list of ``inner``.

    ``inner`` is the struct without its ``next`` pointer; on the wire each element is preceded
    by TRUE and the list ends with FALSE, exactly as the recursive optional encodes.
    """

    def __init__(self, inner: XdrType, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or f"{inner.name} *list"

    def emit_pack_body(self, g: _Gen, expr: str) -> PackCode:
        e = g.tmp("e")
        more: PackCode = [_Fixed("I", ["1"])]
        end: PackCode = [_Fixed("I", ["0"])]
        head: PackCode = [f"for {e} in {expr}:"]
        return head + _block(g, more + self.inner.emit_pack(g, e)) + end

    def emit_unpack_body(self, g: _Gen, target: str) -> list[str]:
        lst, e, f = g.tmp("l"), g.tmp("e"), g.tmp("f")
        return [f"{lst} = []", "while True:",
                f"    {f}, = _U32.unpack_from(data, off)", "    off += 4",
                f"    if {f} == 0: break",
                f"    if {f} != 1: raise XdrError('list flag out of range')"] + _indent(
            self.inner.emit_unpack(g, e) + [f"{lst}.append({e})"]) + [f"{target} = {lst}"]

    emit_pack = XdrType.emit_pack
    emit_unpack = XdrType.emit_unpack

    _END = b"\0\0\0\0"  # the FALSE that ends the list
    _MORE = b"\0\0\0\1"  # the TRUE before each element

    def encode_item(self, value: Any) -> bytes:
        """One element as it appears in the list (its leading TRUE included), to be kept
        and later handed to ``encoded``."""
        buf = bytearray(self._MORE)
        self.inner.pack(buf, value)
        return bytes(buf)

    def encoded(self, items: Sequence[bytes]) -> Encoded:
        """The whole list from items made by ``encode_item`` (or concatenations of them)."""
        return Encoded((*items, self._END))


class Encoded:
    """A value whose encoding is already known: ``parts``, bytes to append verbatim.

    Produced only by the types' own encoders (``List.encode_item``, ``List.encoded``), so a
    handler can keep encoded pieces (a directory entry that has not changed) and hand them
    back without building bytes itself; a ``Preencoded`` field packs it as it is."""

    __slots__ = ("parts",)

    def __init__(self, parts: Sequence[bytes]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __repr__(self) -> str:
        return f"<{len(self)} bytes already encoded>"


class Preencoded(XdrType):
    """``inner``, whose value may also be an ``Encoded`` of it (appended as it is); decodes
    as ``inner``."""

    def __init__(self, inner: XdrType) -> None:
        self.inner = inner
        self.name = inner.name

    def emit_pack_body(self, g: _Gen, expr: str) -> PackCode:
        code: PackCode = []
        x = _name(g, expr, code)
        enc, part = g.const(Encoded, "Enc"), g.tmp("p")
        return code + [_Branch([f"if {x}.__class__ is {enc}:", "else:"],
                               [[f"for {part} in {x}.parts: buf += {part}"], self.inner.emit_pack(g, x)])]

    def emit_unpack_body(self, g: _Gen, target: str) -> list[str]:
        return self.inner.emit_unpack(g, target)

    emit_pack = emit_pack_body
    emit_unpack = emit_unpack_body


# Shared instances, named as in the XDR language.
int32 = Int32()
uint32 = UInt32()
int64 = Int64()
uint64 = UInt64()
boolean = Bool()
void = Void()


def encode(t: XdrType, value: Any) -> bytes:
    buf = bytearray()
    t.pack(buf, value)
    return bytes(buf)


def decode(t: XdrType, data: Any, exact: bool = True) -> Any:
    """Decode a whole buffer; with ``exact``, trailing bytes are an error."""
    value, off = t.unpack(data, 0)
    if exact and off != len(data):
        raise XdrError(f"{t.name}: {len(data) - off} trailing bytes")
    return value
