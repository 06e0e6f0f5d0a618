"""Built-in fields, the exact formats of their values, and what any field may hold.

Every value is bytes, 1 to 255 of them, without NUL; a field name matches
``[a-z][a-z0-9_]{0,31}``.  The built-in fields:

``name``
    the file name, as stored on disk.
``ext``
    the extension, lower-cased (ASCII only), without the dot: what follows the last ``.``
    when the name has something before that dot: ``x.tar.gz`` -> ``gz``, ``README`` and
    ``.bashrc`` and ``x.`` have none (no value).
``owner``, ``group``
    the user and group name (``pwd``, ``grp``), or the uid / gid in decimal when the system
    has no name for it.
``type``
    the MIME type of the content, sniffed by libmagic from the first 16 KiB
    (``text/x-c``, ``image/png``, ``application/x-empty`` for an empty file); when libmagic
    cannot tell, ``application/octet-stream``.  Objects that are not regular files get their
    kind: ``inode/symlink``, ``inode/fifo``, ``inode/socket``, ``inode/chardevice``,
    ``inode/blockdevice``.
``size``
    a bucket: ``empty`` (0 bytes), ``tiny`` (< 1 KiB), ``small`` (< 64 KiB),
    ``medium`` (< 1 MiB), ``large`` (< 64 MiB), ``huge`` (64 MiB or more).
``mtime``
    three values per file, in UTC: the year, the month and the day of the last
    modification (``2026``, ``2026-11``, ``2026-11-21``).
``text``
    the distinct words of a text file, lower-cased: runs of 2 to 64 word characters
    (letters, digits, ``_``) in the first 1 MiB, the first 10,000 distinct ones.  A text
    file is one whose type is ``text/*`` (or JSON, XML, JavaScript) or whose extension is a
    known text one, and whose first 16 KiB hold no NUL byte.  Content is read as UTF-8
    (undecodable bytes separate words); Unicode letters and digits count as word
    characters, words are NFC-normalized and stored as UTF-8 (``café``, ``straße``), and a
    run longer than 64 characters (a hash, base64) is not a word at all.
``exports``, ``imports``
    C sources and headers (``.c``, ``.h``), parsed with tree-sitter.  ``exports``: the
    functions and file-scope variables defined without ``static``; in a header, also the
    non-static functions and ``extern`` variables it declares (its interface).  ``imports``:
    every header included, as written between the ``<>`` or quotes (``stdio.h``,
    ``sys/stat.h``), and every function called by name that the file does not define itself.
"""
from __future__ import annotations

import datetime
import grp
import pwd
import re
import unicodedata
from itertools import islice
from typing import Any, Callable, Sequence

from ..query import FIELD_NAME

BUILTIN_FIELDS: tuple[bytes, ...] = (b"name", b"ext", b"owner", b"group", b"type", b"size",
                                     b"mtime", b"text", b"exports", b"imports")
MAX_VALUE = 255

KIB, MIB = 1 << 10, 1 << 20
_SIZE_BUCKETS = ((0, b"empty"), (KIB - 1, b"tiny"), (64 * KIB - 1, b"small"),
                 (MIB - 1, b"medium"), (64 * MIB - 1, b"large"))

TEXT_READ = MIB
MAX_WORDS = 10_000
MIN_WORD, MAX_WORD = 2, 64
_ASCII_WORD = re.compile(rb"[a-z0-9_]+")
_WORD = re.compile(r"\w+")


def valid_field(field: bytes) -> bool:
    return FIELD_NAME.match(field) is not None


def valid_value(value: bytes) -> bool:
    return 0 < len(value) <= MAX_VALUE and b"\0" not in value


def ext_of(name: bytes) -> bytes | None:
    stem, dot, ext = name.rpartition(b".")
    if not dot or not stem or not ext:
        return None
    return ext.lower()


def size_bucket(size: int) -> bytes:
    for limit, label in _SIZE_BUCKETS:
        if size <= limit:
            return label
    return b"huge"


class Names:
    """uid/gid -> name, remembered (a scan asks for the same few ids a million times)."""

    def __init__(self) -> None:
        self._users: dict[int, bytes] = {}
        self._groups: dict[int, bytes] = {}

    def user(self, uid: int) -> bytes:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name.encode()
            except (KeyError, UnicodeEncodeError):
                name = str(uid).encode()
            self._users[uid] = name
        return name

    def group(self, gid: int) -> bytes:
        name = self._groups.get(gid)
        if name is None:
            try:
                name = grp.getgrgid(gid).gr_name.encode()
            except (KeyError, UnicodeEncodeError):
                name = str(gid).encode()
            self._groups[gid] = name
        return name

    def forget(self) -> None:
        """Accounts may be renamed: a new scan asks again."""
        self._users.clear()
        self._groups.clear()


_NS_PER_DAY = 86_400 * 10**9
_EPOCH = datetime.date(1970, 1, 1)


class Days:
    """mtime in ns -> its (year, month, day) values, remembered per day."""

    def __init__(self) -> None:
        self._days: dict[int, tuple[bytes, ...]] = {}

    def values(self, mtime_ns: int) -> tuple[bytes, ...]:
        day = mtime_ns // _NS_PER_DAY
        found = self._days.get(day)
        if found is None:
            try:
                d = _EPOCH + datetime.timedelta(days=day)
            except OverflowError:
                found = ()
            else:
                found = (b"%04d" % d.year, b"%04d-%02d" % (d.year, d.month),
                         b"%04d-%02d-%02d" % (d.year, d.month, d.day))
            if len(self._days) > 100_000:
                self._days.clear()
            self._days[day] = found
        return found


def words(data: bytes, complete: bool) -> list[bytes]:
    """The distinct words of ``data`` (see ``text`` above), in order of first appearance.
    When ``data`` is only the head of the file, a word cut at its end is dropped."""
    if data.isascii():
        data = data.lower()
        if not complete:
            data = data[:len(data) - _trailing(data, lambda c: 97 <= c <= 122 or 48 <= c <= 57 or c == 95)]
        tokens = (w for w in _ASCII_WORD.findall(data) if MIN_WORD <= len(w) <= MAX_WORD)
        return list(islice(dict.fromkeys(tokens), MAX_WORDS))
    text = unicodedata.normalize("NFC", data.decode("utf-8", errors="replace")).lower()
    if not complete:
        text = text[:len(text) - _trailing(text, lambda c: c.isalnum() or c == "_")]
    out: dict[bytes, None] = {}
    for w in _WORD.findall(text):
        if MIN_WORD <= len(w) <= MAX_WORD:
            b = w.encode()
            if len(b) <= MAX_VALUE:
                out[b] = None
                if len(out) >= MAX_WORDS:
                    break
    return list(out)


def _trailing(seq: Sequence[Any], is_word: Callable[[Any], bool]) -> int:
    """How many word characters end ``seq`` (the word a truncated read may have cut)."""
    n = 0
    for c in reversed(seq):
        if not is_word(c):
            break
        n += 1
    return n
