"""The query language inside one value component (``FIELD:/EXPR``): OR, NOT, ranges, globs.

Grammar (operators are recognised only where written as themselves; ``%XX`` escapes always
stand for a literal byte, so every value stays reachable)::

    EXPR   := ["!"] ALT ("|" ALT)*        "!" negates the whole component
    ALT    := (">" | ">=" | "<" | "<=") BOUND
            | [BOUND] ".." [BOUND]        at least one bound; both inclusive
            | GLOB                        holds a raw "*", "?" or "[...]"
            | VALUE                       anything else: a plain value

Bounds are byte counts with an optional unit (``K``, ``M``, ``G``, ``T``: powers of 1024) for
``size``, UTC dates ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` for the date fields (a bound
covers the whole period written), and decimal integers for any other field.  Fields whose
values are stored lower-cased (``ext``, ``text``, ``from``, ``to``) are matched
case-insensitively: the expression is lower-cased the same way.

An expression has a *canonical form*: alternatives normalised (ranges to inclusive bounds in
base units, literals re-escaped, case folded), sorted and deduplicated.  A lone plain value
is just that value (so ``ext:/C`` is the query ``ext:/c``, with the same handle as ever);
anything else is stored as a NUL (which no value holds) followed by the canonical text.
"""
from __future__ import annotations

import calendar
import datetime
import re
import unicodedata
from typing import NamedTuple

MAX_VALUE = 255
SIZE_FIELD = b"size"
DATE_FIELDS = frozenset({b"mtime", b"date", b"taken"})
ASCII_LOWER_FIELDS = frozenset({b"ext"})
UNICODE_LOWER_FIELDS = frozenset({b"text", b"from", b"to"})
# exact sizes, kept as hidden posting keys in an order-preserving form (see ``size_key``)
EXACT_SIZE_FIELD = b"#size"
# files without an ext, kept as a hidden posting key, so that ext:/!c reads postings, not every file
NO_EXT_KEY = b"#none\0ext"
# stat fields every file has one value of (ext: one or none)
SINGLE_STAT_FIELDS = frozenset({b"name", b"ext", b"owner", b"group", b"size"})
EXPR_MARK = b"\0"

_UNITS = {b"": 1, b"k": 1 << 10, b"m": 1 << 20, b"g": 1 << 30, b"t": 1 << 40}
_SIZE = re.compile(rb"(-?\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\Z", re.IGNORECASE)
_DATE = re.compile(rb"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?\Z")
_INT = re.compile(rb"-?\d{1,19}\Z")
_ESCAPE_HEX = re.compile(rb"%([0-9A-Fa-f]{2})")
# bytes that are operators somewhere in a component: written escaped in canonical text
_SPECIAL = frozenset(b"%/|!*?[<>")


class QueryError(ValueError):
    """A malformed value component; the message says why, for people."""


class Atom(NamedTuple):
    kind: str          # "eq", "glob" or "range"
    text: bytes        # canonical text of this alternative
    value: bytes = b""  # eq: the value; glob: the pattern's literal prefix
    lo: bytes = b""    # range: inclusive bounds in canonical form ("" = open)
    hi: bytes = b""
    regex: bytes = b""  # glob: the pattern as a regular expression


class Expr(NamedTuple):
    field: bytes
    negated: bool
    atoms: tuple[Atom, ...]

    def canonical(self) -> bytes:
        return (b"!" if self.negated else b"") + b"|".join(a.text for a in self.atoms)

    def term_value(self) -> bytes:
        """What the query stores for this term (see the module docstring)."""
        if not self.negated and len(self.atoms) == 1 and self.atoms[0].kind == "eq":
            return self.atoms[0].value
        return EXPR_MARK + self.canonical()


def is_expression(value: bytes) -> bool:
    return value[:1] == EXPR_MARK


def component_of(value: bytes) -> bytes:
    """The path component that names a stored term value (its canonical text)."""
    return value[1:] if is_expression(value) else escape(value)


def expr_of(field: bytes, value: bytes) -> Expr:
    """The expression a stored term value denotes."""
    if is_expression(value):
        return parse(field, value[1:])
    return Expr(field, False, (Atom("eq", escape(value), value),))


# -- escapes -------------------------------------------------------------------------------
def escape(value: bytes) -> bytes:
    """A literal value as a component that reads back as exactly that value: ``%``, ``/``
    and every operator byte escaped, and the second of two dots (``..`` is a range)."""
    out = bytearray()
    for i, c in enumerate(value):
        if c in _SPECIAL or c == 0 or (c == 0x2E and i and value[i - 1] == 0x2E):
            out += b"%%%02X" % c
        else:
            out.append(c)
    return bytes(out)


def unescape(raw: bytes) -> bytes:
    """Decode ``%XX`` escapes; raises QueryError on a malformed one."""
    if b"%" not in raw:
        return raw
    pos = 0
    out = bytearray()
    while True:
        i = raw.find(b"%", pos)
        if i < 0:
            out += raw[pos:]
            return bytes(out)
        m = _ESCAPE_HEX.match(raw, i)
        if m is None:
            raise QueryError(f"bad escape {_show(raw[i:i + 3])}: write %25 for a literal %")
        out += raw[pos:i]
        out.append(int(m.group(1), 16))
        pos = i + 3


# -- parsing -------------------------------------------------------------------------------
def parse(field: bytes, component: bytes) -> Expr:
    """The expression of one value component of field ``field``; raises QueryError."""
    if not component:
        raise QueryError("empty value")
    negated = component[:1] == b"!"
    body = component[1:] if negated else component
    if not body:
        raise QueryError("nothing after !")
    atoms: dict[bytes, Atom] = {}
    for alt in body.split(b"|"):
        if not alt:
            raise QueryError(f"empty alternative in {_show(component)}")
        atom = _atom(field, alt)
        atoms.setdefault(atom.text, atom)
    return Expr(field, negated, tuple(sorted(atoms.values(), key=lambda a: a.text)))


def parse_term(field: bytes, component: bytes) -> bytes:
    """The stored term value of a component: ``parse(...).term_value()``."""
    return parse(field, component).term_value()


def _atom(field: bytes, alt: bytes) -> Atom:
    for op in (b">=", b"<=", b">", b"<"):
        if alt.startswith(op):
            return _range(field, op, unescape(alt[len(op):]))
    if b".." in alt:
        lo, _, hi = alt.partition(b"..")
        if not lo and not hi:
            raise QueryError("a range needs at least one bound")
        return _between(field, unescape(lo) if lo else None, unescape(hi) if hi else None)
    if any(c in alt for c in (b"*", b"?", b"[")):
        return _glob(field, alt)
    value = fold(field, unescape(alt))
    _check_value(value)
    return Atom("eq", escape(value), value)


def _check_value(value: bytes) -> None:
    if b"\0" in value:
        raise QueryError("a value cannot hold NUL (%00)")
    if len(value) > MAX_VALUE:
        raise QueryError(f"a value is at most {MAX_VALUE} bytes; this one has {len(value)}")


def fold(field: bytes, value: bytes) -> bytes:
    """A value lower-cased as its field's values are stored."""
    if field in ASCII_LOWER_FIELDS:
        return value.lower()
    if field in UNICODE_LOWER_FIELDS:
        text = value.decode("utf-8", "surrogateescape")
        return unicodedata.normalize("NFC", text).lower().encode("utf-8", "surrogateescape")
    return value


# -- globs ---------------------------------------------------------------------------------
def _glob(field: bytes, alt: bytes) -> Atom:
    """A shell pattern: literal pieces folded and re-escaped, wildcards kept."""
    pieces: list[bytes] = []   # canonical text
    regex: list[bytes] = []
    prefix = bytearray()       # literal bytes before the first wildcard
    wild = False
    i = 0
    while i < len(alt):
        c = alt[i:i + 1]
        if c in (b"*", b"?"):
            pieces.append(c)
            regex.append(b".*" if c == b"*" else b".")
            wild = True
            i += 1
        elif c == b"[":
            start = i + 2 if alt[i + 1:i + 2] in (b"!", b"^") else i + 1
            end = alt.find(b"]", start + 1)  # a "]" right after "[" is a member
            if end < 0:
                raise QueryError(f"unclosed [ in {_show(alt)}: write %5B for a literal [")
            inner = alt[i + 1:end]
            neg = inner[:1] in (b"!", b"^")
            members = fold(field, unescape(inner[1:] if neg else inner))
            if not members:
                raise QueryError(f"empty [] in {_show(alt)}")
            pieces.append(b"[" + (b"!" if neg else b"") + _escape_class(members) + b"]")
            regex.append(b"[" + (b"^" if neg else b"") + _regex_class(members) + b"]")
            wild = True
            i = end + 1
        else:
            j = i
            while j < len(alt) and alt[j:j + 1] not in (b"*", b"?", b"["):
                j += 1
            lit = fold(field, unescape(alt[i:j]))
            pieces.append(escape(lit))
            regex.append(re.escape(lit))
            if not wild:
                prefix += lit
            i = j
    text = b"".join(pieces)
    if len(text) > 4 * MAX_VALUE:
        raise QueryError("pattern too long")
    return Atom("glob", text, bytes(prefix), regex=b"".join(regex))


def _escape_class(members: bytes) -> bytes:
    return b"".join(b"%%%02X" % c if c in _SPECIAL or c in b"]^" else bytes([c]) for c in members)


def _regex_class(members: bytes) -> bytes:
    """Members of a [...] class as a regex class: ranges a-z kept, the rest literal."""
    out = bytearray()
    for i, c in enumerate(members):
        if c == 0x2D and 0 < i < len(members) - 1:
            out += b"-"
        else:
            out += re.escape(bytes([c]))
    return bytes(out)


def glob_matcher(atom: Atom) -> "re.Pattern[bytes]":
    return re.compile(atom.regex, re.DOTALL)


# -- ranges --------------------------------------------------------------------------------
def _range(field: bytes, op: bytes, bound: bytes) -> Atom:
    if not bound:
        raise QueryError(f"nothing after {op.decode()}")
    first, last = _bound(field, bound)
    if op == b">":
        return _make_range(field, _succ(field, last), None)
    if op == b">=":
        return _make_range(field, first, None)
    if op == b"<":
        return _make_range(field, None, _pred(field, first))
    return _make_range(field, None, last)


def _between(field: bytes, lo: bytes | None, hi: bytes | None) -> Atom:
    return _make_range(field, _bound(field, lo)[0] if lo is not None else None,
                       _bound(field, hi)[1] if hi is not None else None)


def _make_range(field: bytes, lo: bytes | None, hi: bytes | None) -> Atom:
    lo_b, hi_b = lo or b"", hi or b""
    return Atom("range", lo_b + b".." + hi_b, lo=lo_b, hi=hi_b)


def _bound(field: bytes, text: bytes) -> tuple[bytes, bytes]:
    """The first and last canonical point a bound covers."""
    if field in DATE_FIELDS:
        m = _DATE.match(text)
        if m is None:
            raise QueryError(f"{_show(text)} is not a date: write YYYY, YYYY-MM or YYYY-MM-DD (UTC)")
        y, mo, d = int(m.group(1)), m.group(2), m.group(3)
        try:
            if mo is None:
                return _day(y, 1, 1), _day(y, 12, 31)
            month = int(mo)
            if d is None:
                return _day(y, month, 1), _day(y, month, calendar.monthrange(y, month)[1])
            return (_day(y, month, int(d)),) * 2
        except (ValueError, calendar.IllegalMonthError):
            raise QueryError(f"{_show(text)} is not a date") from None
    if field == SIZE_FIELD:
        m = _SIZE.match(text)
        if m is None:
            raise QueryError(f"{_show(text)} is not a size: write a byte count with an optional unit K, M, G, T")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()]) if b"." in m.group(1) \
            else int(m.group(1)) * _UNITS[m.group(2).lower()]
        return (b"%d" % n,) * 2
    if not _INT.match(text):
        raise QueryError(f"{_show(text)} is not a whole number (ranges on {field.decode(errors='replace')}"
                         f" compare numbers)")
    return (b"%d" % int(text),) * 2


def _day(y: int, m: int, d: int) -> bytes:
    return datetime.date(y, m, d).isoformat().encode()


def _succ(field: bytes, point: bytes) -> bytes:
    if field in DATE_FIELDS:
        d = datetime.date.fromisoformat(point.decode())
        return (d + datetime.timedelta(days=1)).isoformat().encode() if d < datetime.date.max else b"9999-12-31"
    return b"%d" % (int(point) + 1)


def _pred(field: bytes, point: bytes) -> bytes:
    if field in DATE_FIELDS:
        d = datetime.date.fromisoformat(point.decode())
        return (d - datetime.timedelta(days=1)).isoformat().encode() if d > datetime.date.min else b"0000-00-00"
    return b"%d" % (int(point) - 1)


def size_key(size: int) -> bytes:
    """The hidden posting key of an exact size: digit count then digits, so byte order is
    numeric order (and no NUL)."""
    digits = b"%d" % size
    return EXACT_SIZE_FIELD + b"\0" + bytes([0x60 + len(digits)]) + digits


def size_value(n: int) -> bytes:
    return size_key(n)[len(EXACT_SIZE_FIELD) + 1:]


def is_hidden_field(field: bytes) -> bool:
    return field[:1] == b"#"


def _show(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")
