"""Content fields extracted once in a cluster: by the head that made the change, applied by
the others without running transducers.

The head that changed a file (or the scanner head, for a change found behind every head's
back) marks it when it notes the change (``mine_entry``/``mine_ino``); when its own index
flush extracts that file's content tier, the values go to the change log as a ``c`` row
keyed by the file's identity and content version (inode, size, mtime, extractor version).
A head applying another head's ``e``/``i`` row expects such a row for that file
(``expect_*``): its flush takes the published values if they are there, else *defers* the
file (its old content tier stays visible, the record stays "to be extracted") until the
``c`` row arrives (the follower notes the inode again) or ``WAIT_SECONDS`` pass (the
publisher died, was slow, or runs other transducers): then it extracts the file itself.

``SharedContent.wrap`` puts this step around the index's ``Extractor`` (``Index.wrap_extractor``);
everything but ``content_keys`` is the extractor's own.
"""
from __future__ import annotations

import logging
import os
import stat
import struct
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from .changelog import Row

log = logging.getLogger("pysfsd.shared")

WAIT_SECONDS = 2.0      # how long a head waits for another head's values before extracting
KEEP_SECONDS = 60.0     # unused marks, expectations and published values are dropped after this...
PRUNE_ABOVE = 10_000    # ... once a table holds more than this
MAX_KEPT = 100_000      # and beyond this the oldest go anyway (values: that file is extracted here)
_HEAD = struct.Struct(">qI")   # mtime_ns, extractor version: the ``name`` of a ``c`` row
_LEN = struct.Struct(">H")
_COUNT = struct.Struct(">II")


def encode(keys: frozenset[bytes], failures: list[tuple[str, str]]) -> bytes:
    """A content tier as a ``c`` row's ``vals``: counts, then length-prefixed keys and
    failures (``transducer\\0why``)."""
    fails = [(t + "\0" + why[:1000]).encode(errors="replace") for t, why in failures]
    parts = [_COUNT.pack(len(keys), len(fails))]
    for item in (*keys, *fails):
        parts += (_LEN.pack(len(item)), item)
    return b"".join(parts)


def decode(vals: bytes) -> tuple[frozenset[bytes], list[tuple[str, str]]]:
    nkeys, nfails = _COUNT.unpack_from(vals)
    pos, items = _COUNT.size, []
    for _ in range(nkeys + nfails):
        (n,) = _LEN.unpack_from(vals, pos)
        pos += _LEN.size
        items.append(vals[pos:pos + n])
        pos += n
    fails = [tuple(f.decode(errors="replace").split("\0", 1)) for f in items[nkeys:]]
    return frozenset(items[:nkeys]), [(f[0], f[1] if len(f) > 1 else "") for f in fails]


class SharedContent:
    """One export's published content tiers, as publisher (``mine_*``) and as reader
    (``expect_*``, ``published``, ``due``).  Called from the flush, the extraction pool and
    the follower thread: one lock guards the tables."""

    def __init__(self, publish: Callable[[Row], Any], export_id: int, wait_seconds: float = WAIT_SECONDS) -> None:
        self._publish = publish
        self.export_id = export_id
        self.wait_seconds = wait_seconds
        self._inner: Any = None
        self._lock = threading.Lock()
        self._mine_entries: dict[tuple[int, bytes], float] = {}   # noted here: publish its extraction
        self._mine_inos: dict[int, float] = {}
        self._expect_entries: dict[tuple[int, bytes], float] = {}  # another head will publish: deadline
        self._expect_inos: dict[int, float] = {}
        self._values: dict[int, tuple[int, int, int, int, bytes, float]] = {}  # ino -> size, mtime, xver, gen, vals
        self._deferred: dict[int, float] = {}                    # ino -> deadline
        # a rescan of the whole export made by every head (an ``r`` row): the scanner head
        # publishes what it extracts ("publish"), the others wait for it ("expect")
        self._rescan = ""
        self._rescan_waiting: dict[int, None] = {}
        self.extracted = 0       # files whose transducers ran here
        self.taken = 0           # files whose content tier came from another head
        self.sent = 0            # content tiers this head published
        self.gave_up = 0         # files extracted here after waiting in vain

    def wrap(self, inner: Any) -> Any:
        """``Index.wrap_extractor``'s argument: the index's extractor with this step around it."""
        self._inner = inner
        return _Wrapped(inner, self.content_keys)

    # -- this head changed it -----------------------------------------------------------------
    def mine_entry(self, parent: int, name: bytes) -> None:
        with self._lock:
            _mark(self._mine_entries, (parent, name), time.monotonic())

    def mine_ino(self, ino: int) -> None:
        with self._lock:
            _mark(self._mine_inos, ino, time.monotonic())

    # -- another head changed it ------------------------------------------------------------------
    def expect_entry(self, parent: int, name: bytes) -> None:
        with self._lock:
            _mark(self._expect_entries, (parent, name), time.monotonic() + self.wait_seconds)

    def expect_ino(self, ino: int) -> None:
        with self._lock:
            _mark(self._expect_inos, ino, time.monotonic() + self.wait_seconds)

    def published(self, ino: int, size: int, gen: int, head: bytes, vals: bytes) -> None:
        """A ``c`` row of another head: kept until this head's flush asks for that file."""
        mtime_ns, xver = _HEAD.unpack(head)
        with self._lock:
            self._deferred.pop(ino, None)
            _mark(self._values, ino, (size, mtime_ns, xver, gen, vals, time.monotonic()))

    def due(self) -> list[int]:
        """Deferred files whose wait is over: the follower notes them again, and this time
        they are extracted here."""
        now = time.monotonic()
        with self._lock:
            over = [ino for ino, deadline in self._deferred.items() if deadline <= now]
            for ino in over:
                del self._deferred[ino]
                self._expect_inos.pop(ino, None)
                self.gave_up += 1   # (its entry's expectation has expired too)
        return over

    @contextmanager
    def rescanning(self, mode: str) -> Iterator[None]:
        """Around a rescan every head makes: ``publish`` (this is the scanner head: its
        extractions go out as ``c`` rows), ``expect`` (another head is: files to extract wait
        for its values until ``wait_seconds`` after this scan ends), or ``""``."""
        self._rescan = mode
        try:
            yield
        finally:
            with self._lock:
                self._rescan = ""
                deadline = time.monotonic() + self.wait_seconds
                for ino in self._rescan_waiting:
                    if ino in self._deferred:
                        self._deferred[ino] = deadline
                self._rescan_waiting.clear()

    # -- the extraction step ---------------------------------------------------------------------
    def content_keys(self, dir_fd: int, name: bytes, st: os.stat_result,
                     only: Sequence[Any] | None = None) -> Any:
        """The index's step with values another head published taken instead of extracted.
        ``only`` (one pass of a first index, some transducers) is the full rescan every head
        makes for itself: extracted here, nothing shared."""
        inner = self._inner
        ino = st.st_ino
        if only is not None or not self._reads(name, st):
            return inner.content_keys(dir_fd, name, st, only)   # nothing to read: nothing to share
        parent = os.fstat(dir_fd).st_ino
        with self._lock:
            found = self._values.get(ino)
            if (found is not None and found[0] == st.st_size and found[1] == st.st_mtime_ns
                    and found[2] == inner.xver_for(name, st)):
                del self._values[ino]
                self._expect_inos.pop(ino, None)
                self._expect_entries.pop((parent, name), None)
                self.taken += 1
                keys, failures = decode(found[4])
                return _outcome(keys, failures), found[3]
            now = time.monotonic()
            deadline = max(self._expect_inos.get(ino, 0.0), self._expect_entries.get((parent, name), 0.0))
            if deadline > now:
                self._deferred[ino] = deadline
                return None   # the record stays "to be extracted"; see ``due`` and ``published``
            mine = self._mine_inos.pop(ino, None) is not None
            mine = self._mine_entries.pop((parent, name), None) is not None or mine
            if not mine and self._rescan == "expect" and ino not in self._rescan_waiting:
                self._rescan_waiting[ino] = None
                self._deferred[ino] = float("inf")   # until this rescan ends, then the wait
                return None
            mine = mine or self._rescan == "publish"
        result = inner.content_keys(dir_fd, name, st)
        if result is None:
            return None
        self.extracted += 1
        if mine:
            outcome, gen = result
            self.sent += 1
            self._publish(Row(self.export_id, "c", ino, st.st_size, gen & 0xFFFFFFFF,
                              _HEAD.pack(st.st_mtime_ns, inner.xver_for(name, st)),
                              encode(outcome.keys, outcome.failures)))
        return result

    def _reads(self, name: bytes, st: os.stat_result) -> bool:
        """Whether extracting this file reads it with some transducer (else it is cheap)."""
        inner = self._inner
        if not stat.S_ISREG(st.st_mode):
            return False
        if not any(inner._applies(t, name, st) for t in inner.content_tier):
            return False
        return not (st.st_size == 0 and inner.empty_content(name, st) is not None)

    def summary(self) -> str:
        return (f"content fields: {self.extracted} files extracted here, {self.taken} taken from other heads, "
                f"{self.sent} published, {self.gave_up} extracted after waiting in vain")


def _mark(table: dict[Any, Any], key: Any, value: Any) -> None:
    """Put ``key`` last in ``table`` (insertion order is age order), then drop the oldest
    entries while the table is over ``PRUNE_ABOVE`` and they are older than
    ``KEEP_SECONDS``, or it is over ``MAX_KEPT``: constant work per call."""
    table.pop(key, None)
    table[key] = value
    if len(table) > PRUNE_ABOVE:
        old = time.monotonic() - KEEP_SECONDS
        while len(table) > PRUNE_ABOVE:
            first = next(iter(table))
            stamp = table[first]
            if len(table) <= MAX_KEPT and (stamp[-1] if isinstance(stamp, tuple) else stamp) > old:
                break
            del table[first]


def _outcome(keys: frozenset[bytes], failures: list[tuple[str, str]]) -> Any:
    from ..index.extract import Outcome
    return Outcome(keys, failures)


class _Wrapped:
    """The index's ``Extractor`` with ``content_keys`` replaced (the rest is its own)."""

    def __init__(self, inner: Any, content_keys: Callable[..., Any]) -> None:
        self._inner = inner
        self.content_keys = content_keys
        self.content_tier = inner.content_tier
        self.stat_tier = inner.stat_tier
        self.xver = inner.xver
        self.xver_for = inner.xver_for
        self.is_current = inner.is_current
        self.stat_keys = inner.stat_keys
        self.empty_content = inner.empty_content

    def __getattr__(self, item: str) -> Any:
        return getattr(self._inner, item)
