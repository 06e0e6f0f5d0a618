"""PDF documents -> ``author``, ``title``, ``pages`` (formats: see ``fields``).

Read with pypdf, from memory: a PDF's cross-reference table and trailer are at its end, so
the whole file is read, and only files of at most 64 MiB are (larger ones get no fields).
Encrypted files get none either (their information dictionary is encrypted too), nor do
files pypdf cannot make sense of.  pypdf reports what it repairs in broken files as
warnings: those are silenced, a broken file is not news.

pypdf is imported at the first PDF read, not with this module: only the index writer (the
primary worker) extracts; the supervisor and the followers would carry its 8 MiB unused.
"""
from __future__ import annotations

import functools
import io
import logging
import os
import stat
import warnings
from types import ModuleType
from typing import Iterable

from ..fields import ext_of
from .interface import Content, Tier
from .values import tidy

PDF_READ = 64 << 20


@functools.cache
def _pypdf() -> ModuleType:
    """``pypdf``, imported (its warnings and log silenced) at the first PDF."""
    import pypdf
    from pypdf.errors import PdfReadWarning
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=PdfReadWarning)
    return pypdf


class PdfInfo:
    name = "pdf"
    version = 1
    tier: Tier = "content"
    fields = (b"author", b"title", b"pages")

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and 0 < st.st_size <= PDF_READ

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None or (content.mime != "application/pdf" and ext_of(name) != b"pdf"):
            return []
        try:
            return _describe(content.head(PDF_READ))
        except Exception:  # noqa: BLE001 - broken or hostile PDFs make pypdf raise many kinds
            return []


def _describe(data: bytes) -> list[tuple[bytes, bytes]]:
    """The information dictionary and the page count are independent: either may be broken
    while the other is fine."""
    reader = _pypdf().PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        return []
    out = []
    try:
        info = reader.metadata
        pairs = ((b"author", info.author), (b"title", info.title)) if info is not None else ()
    except Exception:  # noqa: BLE001 - as in extract
        pairs = ()
    for field, text in pairs:
        value = tidy(text)
        if value is not None:
            out.append((field, value))
    try:
        pages = len(reader.pages)
    except Exception:  # noqa: BLE001 - as in extract
        pages = 0
    if pages > 0:
        out.append((b"pages", b"%d" % pages))
    return out
