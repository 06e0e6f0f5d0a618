"""Query directory names: their grammar, and the canonical query they denote.

Two forms live inside any real directory D (the *scope*):

* the lab form ``D/:extension=SUFFIX`` -- the entries directly in D whose names end with
  SUFFIX, served as the real files themselves;
* Gifford's form -- ``D/FIELD:`` lists the values FIELD takes among the files of D's subtree,
  ``D/FIELD:/VALUE`` holds those files whose FIELD has VALUE, and nesting narrows (AND):
  ``D/owner:/smith/ext:/c``.  Order does not matter: terms are kept sorted, so both orders
  are the same query, hence the same file handle.  A field used twice is refused, so no
  path is infinite.

Values are bytes.  A value holding "/" (a MIME type) is written in one path component with
"%" escapes: "%" -> "%25", "/" -> "%2F" (and NUL -> "%00"); nothing else is escaped, so
ordinary values read as themselves.
A value whose escaped form is not a usable name (longer than 255 bytes; empty, "." or "..")
is listed under a shortened name that ends with "%~" and a hash (``value_name``).
"""
from __future__ import annotations

import functools
import hashlib
import re
import struct
from typing import NamedTuple

from . import language as query_lang

FIELD_NAME = re.compile(rb"[a-z][a-z0-9_]{0,31}\Z")
LAB_PREFIX = b":extension="


class Query(NamedTuple):
    scope: int                                  # inode of the real directory D
    terms: tuple[tuple[bytes, bytes], ...] = ()  # (field, value), sorted by field
    open_field: bytes | None = None             # a field directory: list this field's values
    suffix: bytes | None = None                 # the lab form: names ending with this

    @property
    def is_lab(self) -> bool:
        return self.suffix is not None

    @property
    def is_field_dir(self) -> bool:
        return self.open_field is not None

    @property
    def depth(self) -> int:
        """Levels between D and this directory (for relative symlinks back to D)."""
        if self.suffix is not None:
            return 1
        return 2 * len(self.terms) + (1 if self.open_field is not None else 0)

    def fields_used(self) -> set[bytes]:
        used = {f for f, _ in self.terms}
        if self.open_field is not None:
            used.add(self.open_field)
        return used

    def is_legal(self) -> bool:
        """Whether the namespace could have made this query (a handle names only such)."""
        if self.suffix is not None:
            return bool(self.suffix) and not self.terms and self.open_field is None
        fields = [f for f, _ in self.terms]
        if self.open_field is not None:
            fields.append(self.open_field)
        return (bool(fields) and len(set(fields)) == len(fields) and list(self.terms) == sorted(self.terms)
                and all(FIELD_NAME.match(f) for f in fields))

    def key(self) -> bytes:
        """Canonical serialization: equal queries, equal keys (and handles)."""
        parts = [struct.pack(">Q", self.scope)]
        if self.suffix is not None:
            parts.append(b"L" + _lp(self.suffix))
        for field, value in self.terms:
            parts.append(b"T" + _lp(field) + _lp(value))
        if self.open_field is not None:
            parts.append(b"F" + _lp(self.open_field))
        return b"".join(parts)

    @staticmethod
    def from_key(key: bytes) -> "Query":
        scope, = struct.unpack_from(">Q", key)
        pos = 8
        terms: list[tuple[bytes, bytes]] = []
        open_field = suffix = None
        while pos < len(key):
            tag = key[pos:pos + 1]
            pos += 1
            if tag == b"L":
                suffix, pos = _read_lp(key, pos)
            elif tag == b"T":
                field, pos = _read_lp(key, pos)
                value, pos = _read_lp(key, pos)
                terms.append((field, value))
            elif tag == b"F":
                open_field, pos = _read_lp(key, pos)
            else:
                raise ValueError(f"bad query key tag {tag!r}")
        return Query(scope, tuple(terms), open_field, suffix)

    def qid(self) -> bytes:
        """A 16-byte identifier of the query, for handles."""
        return _qid(self)

    def with_value(self, value: bytes) -> "Query":
        """The value directory ``VALUE`` inside this field directory."""
        assert self.open_field is not None
        terms = tuple(sorted(self.terms + ((self.open_field, value),)))
        return Query(self.scope, terms)

    def with_field(self, field: bytes) -> "Query | None":
        """The field directory ``FIELD:`` inside this value directory, or None if the field
        is already used on this path."""
        if field in self.fields_used():
            return None
        return Query(self.scope, self.terms, field)

    def parent(self) -> "Query | None":
        """The logical parent, or None when it is the real directory D.

        Order-free paths share one handle, so the parent is canonical: a value directory's
        parent is the field directory of its greatest term.  Every chain of parents climbs
        ``depth`` levels to D, which is what relative result symlinks need."""
        if self.suffix is not None:
            return None
        if self.open_field is not None:
            return Query(self.scope, self.terms) if self.terms else None
        if not self.terms:
            return None
        *rest, (field, _value) = self.terms
        return Query(self.scope, tuple(rest), field)


@functools.lru_cache(maxsize=8192)
def _qid(q: Query) -> bytes:
    return hashlib.blake2b(q.key(), digest_size=16, person=b"pysfsd-query").digest()


def _lp(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def _read_lp(key: bytes, pos: int) -> tuple[bytes, int]:
    n, = struct.unpack_from(">H", key, pos)
    return key[pos + 2:pos + 2 + n], pos + 2 + n


def encode_value(value: bytes) -> bytes:
    """A value as one path component that reads back as exactly that value (operators of
    the query language escaped too: see ``query_lang.escape``)."""
    return query_lang.escape(value)


NAME_MAX = 255       # bytes in one path component (what clients and check_name accept)
SHORT_MARK = b"%~"   # never in an escaped value: there "%" always begins 25, 2F or 00
_SHORT_KEEP = 200    # bytes of the escaped form a shortened name keeps


def value_name(value: bytes) -> bytes:
    """The directory entry naming a value: its escaped form when that is a usable name, else
    a shortened one -- the first bytes of the escaped form (cut between characters and
    escapes), ``%~`` and 32 hex digits of a hash of the whole value.  Stable (a function of
    the value alone), unique (the hash), and never equal to the escaped form of any value
    (``%~`` is not an escape), so a LOOKUP resolves it through the listed values."""
    name = encode_value(value)
    if len(name) <= NAME_MAX and name not in (b"", b".", b".."):
        return name
    cut = min(_SHORT_KEEP, len(name))
    while 0 < cut < len(name) and name[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
        cut -= 1
    escape = name.rfind(b"%", max(0, cut - 2), cut)         # nor inside a %XX escape
    if escape != -1:
        cut = escape
    if name[:cut] in (b".", b".."):
        cut = 0
    digest = hashlib.blake2b(value, digest_size=16, person=b"pysfsd-value").hexdigest()
    return name[:cut] + SHORT_MARK + digest.encode()


def decode_value(component: bytes) -> bytes | None:
    """The value a path component names, or None if its escapes are malformed."""
    out = bytearray()
    i = 0
    while i < len(component):
        c = component[i]
        if c == 0x25:  # "%"
            esc = component[i + 1:i + 3].upper()
            if esc == b"25":
                out += b"%"
            elif esc == b"2F":
                out += b"/"
            elif esc == b"00":
                out += b"\0"
            else:
                return None
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def may_be_query_name(name: bytes) -> bool:
    """Whether ``name`` passes the first test of ``parse_field_name`` or
    ``parse_lab_name``: a LOOKUP of a missing name that fails it is answered NOENT without
    either parser (the kernel client's LOOKUP before every create)."""
    return name[-1:] == b":" or name.startswith(LAB_PREFIX)


def parse_field_name(name: bytes) -> bytes | None:
    """``FIELD:`` -> FIELD when the name is a legal field directory name."""
    if name.endswith(b":") and FIELD_NAME.match(name[:-1]):
        return name[:-1]
    return None


def parse_lab_name(name: bytes) -> bytes | None:
    """``:extension=SUFFIX`` -> SUFFIX (non-empty)."""
    if name.startswith(LAB_PREFIX) and len(name) > len(LAB_PREFIX):
        return name[len(LAB_PREFIX):]
    return None


class QuerySyntaxError(ValueError):
    pass


def _text(b: bytes, limit: int = 60) -> str:
    text = b.decode("utf-8", "backslashreplace")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_query_path(path: bytes) -> tuple[list[bytes], list[tuple[bytes, bytes]], bytes | None, bytes | None]:
    """Split a path such as ``src/owner:/smith/ext:/c|h`` into (real directory components,
    sorted terms, open field, lab suffix), for the command line.  Term values are what
    ``query_lang.parse_term`` stores.  Raises QuerySyntaxError, saying why in words."""
    parts = [p for p in path.split(b"/") if p and p != b"."]
    real: list[bytes] = []
    i = 0
    while i < len(parts) and parse_field_name(parts[i]) is None and parse_lab_name(parts[i]) is None:
        real.append(parts[i])
        i += 1
    if i == len(parts):
        raise QuerySyntaxError(f"no query in {_text(path)!r}: expected FIELD: or :extension=SUFFIX")
    suffix = parse_lab_name(parts[i])
    if suffix is not None:
        if i != len(parts) - 1:
            raise QuerySyntaxError(":extension= must be the last component")
        return real, [], None, suffix
    terms: dict[bytes, bytes] = {}
    open_field = None
    while i < len(parts):
        field = parse_field_name(parts[i])
        if field is None:
            raise QuerySyntaxError(f"expected FIELD: at {_text(parts[i])!r} (after a value comes"
                                   " another FIELD:, not a path)")
        if field in terms:
            raise QuerySyntaxError(f"field {_text(field)} used twice: write one {_text(field)}:/A|B"
                                   " for either value")
        if i + 1 == len(parts):
            if path.rstrip(b"/") != path:
                raise QuerySyntaxError(f"{_text(parts[i])}/ has no value: write {_text(parts[i])} to list"
                                       f" the values of {_text(field)}, or {_text(parts[i])}/VALUE")
            open_field = field
            break
        if SHORT_MARK in parts[i + 1]:
            raise QuerySyntaxError(f"{_text(parts[i + 1])!r} is the shortened name of a long value: "
                                   "give the value itself")
        try:
            terms[field] = query_lang.parse_term(field, parts[i + 1])
        except query_lang.QueryError as exc:
            raise QuerySyntaxError(f"{_text(parts[i])}/{_text(parts[i + 1])}: {exc}") from None
        i += 2
    return real, sorted(terms.items()), open_field, None
