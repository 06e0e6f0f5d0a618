"""Turning what files say about themselves into index values (formats: see ``fields``).

Metadata inside files (mail headers, EXIF, audio tags, PDF information) is free text of any
length and shape; these helpers give every content transducer the same rules: whitespace
collapsed, at most 255 bytes cut on a UTF-8 boundary, and dates in the prefix form of
``mtime`` (``2026``, ``2026-11``, ``2026-11-21``).
"""
from __future__ import annotations

import datetime

from ..fields import MAX_VALUE

_UNNAMEABLE = (b".", b"..")  # no value directory can have these names


def tidy(text: object) -> bytes | None:
    """``text`` with runs of whitespace (and NULs) made one space, stripped, as UTF-8 cut to
    255 bytes on a character boundary; None when nothing is left."""
    if text is None:
        return None
    collapsed = " ".join(str(text).replace("\0", " ").split())
    data = collapsed.encode("utf-8", errors="replace")
    if len(data) > MAX_VALUE:
        data = data[:MAX_VALUE].decode("utf-8", errors="ignore").rstrip().encode()
    return data if data and data not in _UNNAMEABLE else None


def day_values(when: datetime.date) -> tuple[bytes, bytes, bytes]:
    """The year, month and day values of a date, as ``mtime`` has them."""
    return (b"%04d" % when.year, b"%04d-%02d" % (when.year, when.month),
            b"%04d-%02d-%02d" % (when.year, when.month, when.day))


def utc_day_values(when: datetime.datetime) -> tuple[bytes, ...]:
    """``day_values`` of the UTC day of ``when`` (a naive datetime is taken as UTC already);
    none when that day is outside the years 1 to 9999."""
    if when.tzinfo is not None:
        try:
            when = when.astimezone(datetime.timezone.utc)
        except OverflowError:
            return ()
    return day_values(when)
