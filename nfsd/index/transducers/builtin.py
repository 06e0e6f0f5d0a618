"""The built-in transducers (value formats: see ``fields``)."""
from __future__ import annotations

import os
import stat
import time
from typing import Iterable

from .audio import AudioTags
from .csource import CSymbols
from ..fields import TEXT_READ, Days, Names, ext_of, size_bucket, words
from .image import ImageInfo
from .mail import MailHeaders
from .pdf import PdfInfo
from .pysource import PythonSymbols
from .interface import SNIFF_BYTES, Content, Tier, Transducer

_INODE_TYPES = {stat.S_IFLNK: b"inode/symlink", stat.S_IFIFO: b"inode/fifo", stat.S_IFSOCK: b"inode/socket",
                stat.S_IFCHR: b"inode/chardevice", stat.S_IFBLK: b"inode/blockdevice"}
_SPECIAL = frozenset({stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})  # nothing to read
TEXT_EXTENSIONS = frozenset(
    b"txt text md markdown rst adoc org tex bib csv tsv log ini cfg conf toml yaml yml json xml "
    b"html htm css svg c h cc cpp cxx hh hpp hxx py pyi rs go java kt scala js mjs ts tsx jsx rb "
    b"pl pm php lua sh bash zsh fish el lisp scm clj hs ml mli erl ex exs sql r m swift cs vb "
    b"mk cmake make in am ac patch diff".split())
_TEXT_MIMES = frozenset({"application/json", "application/xml", "application/javascript",
                         "application/x-sh", "application/x-shellscript"})


class StatFields:
    """name, ext, owner, group, size, mtime.  FIFOs, sockets and devices get no ``ext``:
    whoever asks for ``*.txt`` means to read them, and these would block or misbehave."""

    name = "stat"
    version = 2
    tier: Tier = "stat"
    NAMES_TTL = 300.0

    def __init__(self) -> None:
        self._names = Names()
        self._days = Days()
        self._names_since = time.monotonic()

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return True

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        now = time.monotonic()
        if now - self._names_since > self.NAMES_TTL:  # accounts get renamed
            self._names.forget()
            self._names_since = now
        out = [(b"name", name), (b"owner", self._names.user(st.st_uid)),
               (b"group", self._names.group(st.st_gid)), (b"size", size_bucket(st.st_size))]
        ext = ext_of(name)
        if ext and stat.S_IFMT(st.st_mode) not in _SPECIAL:
            out.append((b"ext", ext))
        out.extend((b"mtime", v) for v in self._days.values(st.st_mtime_ns))
        return out


class ContentType:
    """type: libmagic's MIME type for regular files, the inode kind for the others."""

    name = "type"
    version = 1
    tier: Tier = "content"
    fields = (b"type",)
    broad = True  # applies to every file: its pass of a first index is the long one

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return True

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None:
            kind = _INODE_TYPES.get(stat.S_IFMT(st.st_mode))
            return [(b"type", kind)] if kind else []
        return [(b"type", content.mime.encode())]


class TextWords:
    """text: the words of text files."""

    name = "text"
    version = 1
    tier: Tier = "content"
    fields = (b"text",)
    broad = True

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None or b"\0" in content.head(SNIFF_BYTES):
            return []
        mime = content.mime
        if ext_of(name) not in TEXT_EXTENSIONS and not mime.startswith("text/") and mime not in _TEXT_MIMES:
            return []
        return [(b"text", w) for w in words(content.head(TEXT_READ), content.complete(TEXT_READ))]


def default_transducers() -> list[Transducer]:
    return [StatFields(), ContentType(), TextWords(), CSymbols(), PythonSymbols(), MailHeaders(),
            ImageInfo(), AudioTags(), PdfInfo()]
