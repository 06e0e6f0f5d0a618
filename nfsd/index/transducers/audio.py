"""Audio files -> ``artist``, ``album``, ``title``, ``year`` (formats: see ``fields``).

Tags are read by mutagen (``mutagen.File(..., easy=True)``: ID3 in MP3, Vorbis comments in
FLAC, Ogg Vorbis/Opus/Speex, MP4/M4A atoms, APEv2; ID3 in WAV and AIFF through its frames).
mutagen is given a file object over the head of the file, never the file itself: the first
1 MiB, then the first 16 MiB if mutagen failed on that (a large cover picture ahead of the
tags).  That covers every format whose tags are at the start (ID3v2, FLAC, Ogg, APEv2 in
front); what lies further is not seen: ID3v1 and APEv2 tags at the end of a file larger than
the head, and MP4 files whose ``moov`` atom follows the media data (files not written for
streaming, "fast start").
"""
from __future__ import annotations

import functools
import io
import os
import re
import stat
from typing import Any, Iterable

from ..fields import ext_of
from .interface import Content, Tier
from .values import tidy

FIRST_READ = 1 << 20
AUDIO_READ = 16 << 20
AUDIO_EXTENSIONS = frozenset(b"mp3 mp2 flac ogg oga opus spx m4a m4b aac wav aif aiff ape wv mpc".split())
# field -> the keys that may hold it in an "easy" tag mapping (Vorbis, EasyID3, EasyMP4, APEv2)
_KEYS = {b"artist": ("artist",), b"album": ("album",), b"title": ("title",), b"year": ("date", "year")}
_ID3_FRAMES = {b"artist": ("TPE1",), b"album": ("TALB",), b"title": ("TIT2",), b"year": ("TDRC", "TYER")}
_YEAR = re.compile(r"\s*(\d{4})(?!\d)")
MAX_PER_FIELD = 32


@functools.cache
def _mutagen() -> tuple[Any, type]:
    """``mutagen.File`` and ``ID3``, imported at the first audio file, not with this module:
    only the index writer (the primary worker) extracts (docs/design.rst, "Several worker
    processes")."""
    import mutagen
    from mutagen.id3 import ID3
    return mutagen.File, ID3


class AudioTags:
    name = "audio"
    version = 1
    tier: Tier = "content"
    fields = (b"artist", b"album", b"title", b"year")

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None or not (content.mime.startswith("audio/") or ext_of(name) in AUDIO_EXTENSIONS):
            return []
        found = _tags(content.head(FIRST_READ))
        if found is None and not content.complete(FIRST_READ):
            found = _tags(content.head(AUDIO_READ))
        return found or []


def _tags(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of the tags mutagen finds in ``data``; None if mutagen failed on it."""
    open_file, id3 = _mutagen()
    try:
        audio = open_file(io.BytesIO(data), easy=True)
    except Exception:  # noqa: BLE001 - a truncated or hostile file: mutagen raises many kinds
        return None
    tags = getattr(audio, "tags", None)
    if tags is None:
        return []
    out = []
    for field in _KEYS:
        texts = _texts(tags, _ID3_FRAMES[field] if isinstance(tags, id3) else _KEYS[field])
        if field == b"year":
            texts = [m.group(1) for m in map(_YEAR.match, texts) if m][:1]
        for text in dict.fromkeys(texts):
            value = tidy(text)
            if value is not None:
                out.append((field, value))
    return out


def _texts(tags: object, keys: tuple[str, ...]) -> list[str]:
    """The text values under the first of ``keys`` present (a tag may hold several values,
    and APEv2 separates them with NULs)."""
    for key in keys:
        try:
            found = tags[key]  # type: ignore[index]  # mutagen types its tag containers loosely
        except (KeyError, ValueError, TypeError):
            continue
        items = found.text if hasattr(found, "text") else found  # an ID3 frame holds .text
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            items = [items]
        texts = [part for item in items for part in str(item).split("\0")]
        return texts[:MAX_PER_FIELD]
    return []
