"""Built-in fields, the exact formats of their values, and what any field may hold.

Every value is bytes, 1 to 255 of them, without NUL; a field name matches
``[a-z][a-z0-9_]{0,31}``.  The built-in fields:

``name``
    the file name, as stored on disk.
``ext``
    the extension, lower-cased (ASCII only), without the dot: what follows the last ``.``
    when the name has something before that dot: ``x.tar.gz`` -> ``gz``, ``README`` and
    ``.bashrc`` and ``x.`` have none (no value).  FIFOs, sockets and devices have none
    either: ``ext:/txt/*`` are files one can read.
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

    Python sources too (``.py``, ``.pyi``, or libmagic's ``text/x-script.python``), parsed
    with ``ast`` from their first 1 MiB.  ``exports``: the names ``from m import *`` gives,
    that is the strings of ``__all__`` when the module sets it to a literal list or tuple
    (``=`` or ``+=``), else the public names (no leading ``_``) bound at top level, inside
    top-level ``if``/``try``/``with`` blocks too: ``def``, ``async def``, ``class`` and
    assigned names, not imported ones.  ``imports``: every module imported anywhere in the
    file, dotted as written (``import os.path`` and ``from os.path import join`` both give
    ``os.path``); relative imports keep their dots (``from .models import x`` gives
    ``.models``, ``from . import views`` gives ``.views``).  A file that does not parse gets
    neither.

Values read from inside files below are "tidied": runs of whitespace become one space, the
ends are stripped, the UTF-8 is cut to 255 bytes on a character boundary, and a value that
ends up empty, ``.`` or ``..`` is dropped.  Dates have the three values of ``mtime``.

``from``, ``to``, ``subject``, ``date``
    mail: a single message (``.eml``, or what libmagic calls ``message/rfc822``) or an mbox
    (``.mbox``, ``application/mbox``, or content starting with ``From ``: each message of
    its first 16 MiB, up to 10,000 messages, 1 MiB of header values and 10,000 values; see
    ``mail``).  ``from``: the address of
    each ``From`` mailbox; ``to``: of each ``To``, ``Cc`` and ``Bcc`` mailbox (everyone the
    message was addressed to); addresses are the addr-spec only, lower-cased
    (``smith@example.org``), one value per address, group members included.  ``subject``:
    the subject, RFC 2047 encoded words decoded, tidied.  ``date``: the UTC day of the
    ``Date`` header (a zone of ``-0000`` counts as UTC).
``camera``, ``taken``, ``width``, ``height``
    images Pillow reads (JPEG, PNG, GIF, TIFF, WebP, BMP; whatever libmagic calls
    ``image/*``), from their header only.  ``width``, ``height``: the pixel size in decimal,
    as stored (an EXIF orientation does not swap them).  ``camera``: EXIF ``Make`` and
    ``Model`` joined by a space, the make left out when the model already starts with its
    first word (``Canon EOS 5D``, ``NIKON D750``, ``Apple iPhone 12``), tidied.  ``taken``:
    the day of EXIF ``DateTimeOriginal``, else of ``DateTime``; in UTC when the file records
    the clock's offset (``OffsetTimeOriginal`` / ``OffsetTime``), else the day the camera's
    clock showed.
``artist``, ``album``, ``title``, ``year``
    audio tags read by mutagen (ID3, Vorbis comments, MP4 atoms, APEv2) from the first 16 MiB
    (see ``audio``): each value of the artist, album and title tags, tidied (up to 32 per
    field), and ``year`` the four digits that start the date tag (``2026`` of
    ``2026-11-21``).
``author``, ``title``, ``pages``
    PDF documents (``.pdf`` or ``application/pdf``) of at most 64 MiB that are not
    encrypted, read by pypdf: the ``/Author`` and ``/Title`` of the document information
    dictionary, tidied, and the number of pages in decimal.
"""
from __future__ import annotations

import datetime
import grp
import pwd
import re
import unicodedata
from itertools import islice
from typing import Any, Callable, Sequence

from ..query.names import FIELD_NAME

BUILTIN_FIELDS: tuple[bytes, ...] = (b"name", b"ext", b"owner", b"group", b"type", b"size",
                                     b"mtime", b"text", b"exports", b"imports",
                                     b"from", b"to", b"subject", b"date",
                                     b"camera", b"taken", b"width", b"height",
                                     b"artist", b"album", b"title", b"year", b"author", b"pages")
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
