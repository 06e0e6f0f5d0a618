"""The transducer interface: what turns a file into (field, value) pairs (built-ins: ``builtin``).

A transducer belongs to one of two tiers, which decide when it runs again:

* ``stat``: it sees only the name and the ``lstat`` result; it runs whenever anything about
  the file changed (a rename, chmod or chown too), and must be cheap: it runs for every file
  of every scan that finds it changed.
* ``content``: it may read the file; it runs again only when the file's identity
  (generation), size or mtime changed, so a moved or renamed file keeps its content fields
  -- unless the rename changes which transducers apply, or the extension
  (``Extractor.xver_for``).

A transducer may declare ``fields``, the fields it yields (anything else it yields is
dropped as malformed): the first index of a tree then answers queries over those fields as
soon as the transducer went over every file, before the others finish (the built-ins all
do; one that does not declare them holds back every content field until it is done).

``applies`` is asked first (with no I/O); ``extract`` then gets a ``Content`` for regular
files, ``None`` for other kinds (and always for the stat tier).  What it yields is checked
(field ``[a-z][a-z0-9_]{0,31}``, value 1..255 bytes without NUL) before it reaches the index;
if it raises, the failure is logged once for that file version and counted, and the file keeps
the fields of the other transducers.  Content-tier transducers run in a few threads at once,
so ``extract`` must be thread-safe (keep per-call state local).  Bump ``version`` when a transducer's output changes:
every file is then re-extracted on the next scan.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Literal, Protocol

from ..fsread import OpenFile
from .magicdb import NarrowDatabases, is_plain

Tier = Literal["stat", "content"]
SNIFF_BYTES = 16 << 10
OCTET_STREAM = "application/octet-stream"
NARROW_AFTER = 32  # plain-text sniffs since the last release before narrowing (``Sniffer``)


class Sniffer:
    """libmagic handles, each used by one thread at a time (a handle must not be shared while
    in use): as many as sniff at once, not one per thread that ever sniffed.  Each handle
    maps the 8 MiB database; one per thread of the pool left five mappings, 20 MiB of the
    primary's RSS, where extraction runs at most ``EXTRACT_THREADS`` at a time.

    An idle handle still holds the database's pages and 2.3 MiB of libmagic's own heap
    (16 MiB of RSS for two): a quiet server lets them go (``release``) and the next file
    sniffed loads one again (3 ms with the database in the page cache)."""

    def __init__(self, narrow: bool = True, narrow_after: int = NARROW_AFTER) -> None:
        self._free: list[Any] = []  # idle handles (list.pop and append are atomic)
        # plain text by its first byte: handles of a narrowed database (``magicdb``), once
        # ``narrow_after`` plain buffers were sniffed since the last release: writing one
        # costs ~11 ms of CPU against 2 for loading the full database, which a lone file
        # now and then would pay every time, and ~250 µs less per sniff repays by the 40th
        self._narrow = NarrowDatabases() if narrow else None
        self._narrow_after = narrow_after
        self._plain_seen = 0
        self._free_plain: dict[str, list[Any]] = {}  # per narrowed database's path

    def release(self) -> int:
        """Close the handles no thread is using (a handle in use goes back to the free list
        after its sniff and stays until the next release; a narrowed database's, to a list
        no longer kept, and goes then); how many were closed.  Dropping
        python-magic's last reference closes its handle (``magic_close``: the database is
        unmapped); the heap libmagic freed goes back with the next ``malloc_trim``."""
        closed = 0
        for free in (self._free, *list(self._free_plain.values())):
            while True:
                try:
                    free.pop()
                except IndexError:
                    break
                closed += 1
        self._free_plain.clear()  # (keyed by paths that go now)
        if self._narrow is not None:
            self._narrow.close()  # its files; a handle in use keeps its own copy
        self._plain_seen = 0
        return closed

    def mime(self, data: bytes) -> str:
        # python-magic (and libmagic) is imported at the first file sniffed, not with this
        # module: only the index writer sniffs (docs/design.rst, "Several worker processes")
        import magic
        free = self._free
        path = None
        if self._narrow is not None and is_plain(data):
            self._plain_seen += 1  # (racy under threads: a count off by one is harmless)
            if self._plain_seen > self._narrow_after:
                path = self._narrow.path(data[0], len(data))
            if path is not None:
                free = self._free_plain.setdefault(path, [])
        try:
            m = free.pop()
        except IndexError:
            try:
                m = magic.Magic(mime=True, magic_file=path)
            except magic.MagicException:
                if path is None or self._narrow is None:
                    raise
                # a release removed the files meanwhile (the next call writes them again),
                # or libmagic refuses them: then the full database answers from now on
                if all(os.path.exists(p) for p in path.split(":")):
                    self._narrow.broken = True
                return self.mime(data)
        try:
            found = m.from_buffer(data)
        except magic.MagicException:
            return OCTET_STREAM
        finally:
            free.append(m)
        return found if found and "/" in found and len(found) <= 255 else OCTET_STREAM


class Content:
    """What a content-tier transducer sees of a regular file: its head, read on demand (each
    transducer takes only what it needs), and its MIME type, sniffed once for all of them."""

    __slots__ = ("_file", "_sniffer", "_mime")

    def __init__(self, file: OpenFile, sniffer: Sniffer) -> None:
        self._file, self._sniffer = file, sniffer
        self._mime: str | None = None

    def head(self, limit: int) -> bytes:
        return self._file.head(limit)

    def complete(self, limit: int) -> bool:
        """Whether ``head(limit)`` holds the whole file."""
        return self._file.complete(limit)

    @property
    def mime(self) -> str:
        if self._mime is None:
            self._mime = self._sniffer.mime(self.head(SNIFF_BYTES))
        return self._mime


def declared_fields(t: Transducer) -> frozenset[bytes] | None:
    """The fields ``t`` declares (see the module docstring); None: any field."""
    fields = getattr(t, "fields", None)
    return frozenset(fields) if fields is not None else None


class Transducer(Protocol):
    name: str       # unique; in logs and in the extractor version
    version: int
    tier: Tier

    def applies(self, name: bytes, st: os.stat_result) -> bool: ...

    def extract(self, name: bytes, st: os.stat_result,
                content: Content | None) -> Iterable[tuple[bytes, bytes]]: ...
