"""ONC RPC record marking over stream transports (RFC 5531 section 11), sans-I/O.

``RecordReader`` is fed whatever bytes arrived and yields complete records.  It never holds
more than one record's bound (``max_record``) plus an incomplete mark, so a peer cannot make
it allocate without bound: a mark announcing more is refused before its data arrives, and
the fragments of a record are appended to one buffer (a list of tiny fragments would cost a
Python object each, some forty times their size).
"""
from __future__ import annotations

import struct
import sys
import threading

LAST_FRAGMENT = 0x80000000
_MARK = struct.Struct(">I")
DIRECT_MIN = 64 << 10   # records at least this large are received into a buffer of their own
# What one receive into the shared buffer may bring: the head of a large record received
# there is copied into the record's own buffer, so this bounds that copy (64 KiB of a 1 MiB
# WRITE) while a burst of small calls still arrives in one receive.
SCRATCH = 64 << 10
#: What one receive brings right after a large record: most likely the head of the next
#: large one (a client streams WRITEs), whose call header is a few hundred bytes; the rest of
#: that record then goes straight into its own buffer instead of 64 KiB of it being received
#: here and copied (a memmove, and 64 KiB more through the cache, per 1 MiB WRITE).  The
#: next receive, if the bytes were small calls, is of the whole scratch buffer again.
HEAD = 4 << 10
# The scratch buffer is shared by every reader of a thread (an event loop serves one receive
# at a time, and ``received`` copies out what it keeps), not one per connection: a thousand
# idle connections must not hold 256 KiB each.
_scratch = threading.local()
#: What the buffers of large records kept for reuse may hold in all, per thread (the event
#: loop's): a stream of 1 MiB WRITEs reuses them instead of allocating and zeroing 1 MiB each.
#: Clients keep dozens of WRITEs in flight (the load generator 64), each holding its buffer
#: until answered; ``trim`` gives back what a quiet spell left unused.
POOL_BYTES = 64 << 20


class RecordBuffers:
    """Buffers for large records, each reused once nothing refers to it any more.

    A large record is received into a bytearray of its own (``RecordReader.get_buffer``),
    handed to the dispatcher, and its data reaches pwrite() as a memoryview slice; a fresh
    1 MiB bytearray per WRITE costs an allocation and a memset of 1 MiB.  A buffer kept here
    is handed out again only when this pool holds the sole reference to it: any record,
    memoryview or slice still alive (a call in a thread, a traceback) refers to it and keeps
    it out of reuse, so a record's bytes never change under whoever holds it.  Buffers are
    matched by exact length (a client's WRITEs of one size give records of one length)."""

    __slots__ = ("max_bytes", "_bufs", "_taken", "_bytes")

    def __init__(self, max_bytes: int = POOL_BYTES) -> None:
        self.max_bytes = max_bytes
        self._bufs: list[bytearray] = []
        self._taken: list[bool] = []  # per buffer: taken since the last ``trim``
        self._bytes = 0

    def take(self, length: int) -> bytearray:
        """A bytearray of ``length`` bytes no one else refers to (its content is stale)."""
        bufs = self._bufs
        free = -1
        for i in range(len(bufs)):
            # References: the list, and getrefcount's argument; anything more is a user.
            if sys.getrefcount(bufs[i]) == 2:
                if len(bufs[i]) == length:
                    self._taken[i] = True
                    return bufs[i]
                free = i
        buf = bytearray(length)
        if self._bytes + length > self.max_bytes and free >= 0:
            self._drop(free)  # make room: an unused buffer of another length
        if self._bytes + length <= self.max_bytes:
            bufs.append(buf)
            self._taken.append(True)
            self._bytes += length
        return buf

    def trim(self) -> None:
        """Let go of the unused buffers nobody took since the previous trim (called now and
        then: a server at rest does not keep a burst's worth of buffers)."""
        for i in reversed(range(len(self._bufs))):
            if not self._taken[i] and sys.getrefcount(self._bufs[i]) == 2:
                self._drop(i)
        self._taken = [False] * len(self._bufs)

    def _drop(self, i: int) -> None:
        self._bytes -= len(self._bufs.pop(i))
        del self._taken[i]

    @property
    def held(self) -> int:
        """Bytes kept (for memory accounting)."""
        return self._bytes

    def stats(self) -> dict[str, int]:
        """What the pool keeps now, for debugging (nfsd/memtrace.py): buffers and bytes
        kept, and how many of them a record, reply or view still uses."""
        in_use = [b for b in self._bufs if sys.getrefcount(b) > 3]  # + the list, b, the argument
        return {"buffers": len(self._bufs), "bytes": self._bytes,
                "in_use": len(in_use), "in_use_bytes": sum(len(b) for b in in_use)}


def _buffers() -> RecordBuffers:
    pool = getattr(_scratch, "buffers", None)
    if pool is None:
        pool = _scratch.buffers = RecordBuffers()
    return pool


def buffer_stats() -> dict[str, int]:
    """``RecordBuffers.stats`` of this thread's pool (the event loop's)."""
    return _buffers().stats()


def trim_buffers() -> None:
    """``RecordBuffers.trim`` for this thread's readers (the event loop's)."""
    _buffers().trim()


class RecordTooLarge(ValueError):
    """A record would exceed the configured bound; the only error ``feed`` raises."""


class RecordReader:
    """Reassembles records; ``max_record`` bounds a record's data plus 4 bytes per non-final
    fragment mark, so endless fragments (empty ones too) end like any oversized record,
    while a record sent as one fragment may carry exactly ``max_record`` bytes."""

    __slots__ = ("max_record", "_buf", "_partial", "_size", "_direct", "_fill", "_after_large")

    def __init__(self, max_record: int) -> None:
        self.max_record = max_record
        self._buf = bytearray()        # bytes not yet consumed
        self._partial = bytearray()    # data of the current record's non-final fragments
        self._size = 0                 # what those count towards the bound: data and marks
        # A large single-fragment record is received straight into its own buffer (see
        # get_buffer): _fill bytes of _direct arrived so far.
        self._direct: bytearray | None = None
        self._fill = 0
        self._after_large = False  # the last record completed was received into its own buffer

    @property
    def buffered(self) -> int:
        """Bytes held for incomplete records (for memory accounting)."""
        return len(self._buf) + len(self._partial) + self._fill

    # -- receiving into the reader's buffers (asyncio.BufferedProtocol) --------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes should go: the rest of a large record's own buffer
        (so its data is copied once, by the kernel, and never again: a 1 MiB WRITE reaches
        pwrite() from there), else a scratch buffer whose bytes ``received`` parses."""
        if self._direct is not None:
            return memoryview(self._direct)[self._fill:]
        scratch = getattr(_scratch, "view", None)
        if scratch is None:
            scratch = _scratch.view = memoryview(bytearray(SCRATCH))
            _scratch.head = scratch[:HEAD]
        return _scratch.head if self._after_large else scratch

    def received(self, nbytes: int) -> list[bytes | bytearray]:
        """``nbytes`` were written into the last ``get_buffer``; the records completed."""
        if self._direct is not None:
            self._fill += nbytes
            return self._direct_done()
        self._after_large = False
        view = _scratch.view
        if self._buf or self._size:
            return self.feed(view[:nbytes])
        # The common case, nothing held from earlier receives: the records are cut straight
        # out of the scratch buffer; ``feed`` takes what is left from the first one that is
        # incomplete, fragmented or too large.
        records: list[bytes | bytearray] = []
        pos = _cut_whole(view, nbytes, self.max_record, records)
        if pos < nbytes:
            records += self.feed(view[pos:nbytes])
        return records

    def _direct_done(self) -> list[bytes | bytearray]:
        record = self._direct
        if record is None or self._fill < len(record):
            return []
        self._direct, self._fill = None, 0
        self._after_large = True
        return [record]

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | bytearray]:
        """Add received bytes; return the records they completed, in order (a large one
        as the bytearray it was received into)."""
        records: list[bytes | bytearray] = []
        if self._direct is not None:
            take = min(len(self._direct) - self._fill, len(data))
            self._direct[self._fill:self._fill + take] = data[:take]
            self._fill += take
            records += self._direct_done()
            if take == len(data):
                return records
            data = memoryview(data)[take:]
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray | memoryview = buf
        else:
            src = data  # parsed where it was received: only what is left over is kept
        pos = 0
        n = len(src)
        with memoryview(src) as view:  # one copy out of the buffer, not two
            if src is data and not self._size:
                pos = _cut_whole(view, n, self.max_record, records)
            while n - pos >= 4:
                mark, = _MARK.unpack_from(view, pos)
                length = mark & 0x7FFFFFFF
                size = self._size + (length if mark & LAST_FRAGMENT else length + 4)
                if size > self.max_record:
                    raise RecordTooLarge(f"record of at least {size} bytes exceeds {self.max_record}")
                end = pos + 4 + length
                if end > n:
                    if mark & LAST_FRAGMENT and not self._size and length >= DIRECT_MIN:
                        # the rest of this record goes straight into its own buffer
                        self._direct = _buffers().take(length)
                        self._fill = n - pos - 4
                        self._direct[:self._fill] = view[pos + 4:n]
                        pos = n
                    break
                if not mark & LAST_FRAGMENT:
                    self._partial += view[pos + 4:end]
                    self._size = size
                elif self._size:
                    self._partial += view[pos + 4:end]
                    records.append(bytes(self._partial))
                    self._partial = bytearray()
                    self._size = 0
                else:
                    records.append(bytes(view[pos + 4:end]))
                pos = end
            if src is not buf:
                buf += view[pos:]
        if src is buf and pos:
            del buf[:pos]
        return records


def _cut_whole(view: memoryview, n: int, limit: int, records: list[bytes | bytearray]) -> int:
    """Append to ``records`` a copy of each whole record of ``view[:n]`` sent as one fragment
    of at most ``limit`` bytes, from the start (a burst of pipelined calls received whole);
    returns where the first other one (incomplete, fragmented, too large) starts."""
    unpack, append = _MARK.unpack_from, records.append
    pos = 0
    while n - pos >= 4:
        mark, = unpack(view, pos)
        length = mark - LAST_FRAGMENT  # negative for a non-final fragment
        end = pos + 4 + length
        if length < 0 or end > n or length > limit:
            break
        append(bytes(view[pos + 4:end]))
        pos = end
    return pos


def frame(payload: bytes | bytearray, max_fragment: int = 0x7FFFFFFF) -> bytes:
    """Frame a record, split into fragments of at most ``max_fragment`` bytes."""
    if len(payload) <= max_fragment:
        return _MARK.pack(LAST_FRAGMENT | len(payload)) + bytes(payload)
    out = bytearray()
    view = memoryview(payload)
    for start in range(0, len(payload), max_fragment):
        chunk = view[start:start + max_fragment]
        last = start + max_fragment >= len(payload)
        out += _MARK.pack((LAST_FRAGMENT if last else 0) | len(chunk))
        out += chunk
    return bytes(out)


def set_mark(buf: bytearray) -> bytearray:
    """Fill in the 4 reserved leading bytes of ``buf`` as a single last-fragment mark."""
    _MARK.pack_into(buf, 0, LAST_FRAGMENT | (len(buf) - 4))
    return buf
