"""libmagic's compiled database narrowed to plain ASCII text with a given first byte.

libmagic answers a short text file (``line 5\\n``) only after walking every entry of its
database twice, most of them binary signatures that such a buffer cannot match: about
300 µs per new small file, most of the index's CPU for it (docs/design.rst, "MIME sniff of
plain text").  A buffer of *plain text* -- bytes ``\\t \\n \\r`` and ``0x20-0x7e`` only, at
least two of them -- gets the same answer from a copy of the database without the
top-level entries that provably fail on every such buffer starting with its first byte:

* a string, pstring or search compared for equality whose value holds a byte plain text
  never has (a control byte or one above ``0x7e``; NUL, the blanks some locales count as
  space and, for case-insensitive tests, high bytes are kept, as libmagic's comparison
  might let them match);
* a string compared for equality, exactly (no case or blank flags), at offset 0, or a
  fixed-size integer so compared (no mask), whose first byte is not the buffer's;
* an integer so compared whose value holds a byte plain text never has (NUL excepted).

A *short* buffer (at most ``SHORT`` bytes: a new file holding a line, the VM's ``echo
"line N" > f``) gets a copy narrowed further, without the top-level entries that need more
bytes than that: ``mget`` refuses (no match) a test that reads past the buffer's end -- a
byte, short or long (not a quad: zero-padded), a string, pstring or search of ``vallen``
bytes at its offset, a regex starting past the end -- and a refused test fails unless its
relation is ``!``.  A shorter buffer (an indirect test's tail, the text pass's copy of
plain text, which is as long) fails them as well.

Only direct offsets counted from the start (no indirection, no negative offsets) and the
top-level test are looked at; a dropped entry takes its continuations along (they run only
when it matched); nothing else moves, so the walk meets the remaining entries in the same
order (softmagic.c ``match``: a failing top-level test has no other effect).  The named
entries (the second set, ``use`` targets) go in a file of their own shared by every first
byte.  Checked against libmagic 5.44's sources (``mget``'s bounds checks, ``mcopy``,
``file_strncmp``, ``magiccheck``; 5.45 differs there only in debug output) and its database
format (version 18, 376-byte entries); another release or format is not narrowed (the full
database answers)."""
from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import stat
import struct
import sys
import tempfile
import threading
import weakref

ENTRY = 376           # sizeof(struct magic), database format 18 (file 5.40 and later)
MAGICNO = 0xF11E041C
VERSIONNO = 18
# libmagic releases whose matching was read for this (5.46 changed the format: not narrowed)
VERIFIED_RELEASES = frozenset({544, 545})
MAX_FIRST_BYTES = 4  # first bytes narrowed at once (~1.4 MiB on disk, a handle each; twice with short buffers)
SHORT = 16  # plain buffers of at most this many bytes: a database also without the tests needing more

PLAIN = bytes([9, 10, 13, *range(0x20, 0x7F)])
# bytes a plain buffer never holds, less those a comparison might still match: NUL (zero
# padding) and whatever a locale's isspace() may call a blank (\v \f, the information
# separators 0x1c-0x1f, NEL, NBSP)
_NEVER = frozenset(set(range(256)) - set(PLAIN) - {0, 0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x1F, 0x85, 0xA0})
_NEVER_ANY_CASE = frozenset(b for b in _NEVER if b < 0x80)  # case folding may reach high bytes

# struct magic fields read here (file.h): flag, reln, vallen, type, mask_op, offset, mask or
# (str_range, str_flags), value
_HEAD = struct.Struct("<HBBBBBBBB")   # cont_level flag factor reln vallen type in_type in_op mask_op
_OFFSET = struct.Struct("<i")         # at 12
_MASK = struct.Struct("<Q")           # at 24
_FLAGS = struct.Struct("<I")          # str_flags, at 28
_INDIR, _OFFNEGATIVE = 0x01, 0x80
_OPINVERSE = 0x40
_STRING, _PSTRING, _SEARCH, _REGEX = 5, 13, 20, 17
# bytes a test of these integer types reads: ``mget`` finds no match when they pass the
# buffer's end (quads are left out: libmagic pads them with zeros instead)
_WIDTHS = {1: 1, 2: 2, 7: 2, 10: 2, 4: 4, 8: 4, 11: 4}
_CASE_OR_BLANKS = 0x0F               # STRING_COMPACT_*WHITESPACE, STRING_IGNORE_*CASE
# integer types: width, whether the first byte is the value's most significant
_INTEGERS = {1: (1, False), 2: (2, False), 7: (2, True), 10: (2, False), 4: (4, False),
             8: (4, True), 11: (4, False), 24: (8, False), 25: (8, False), 26: (8, True)}
_ALWAYS = -1  # an entry kept for every first byte
_NEVER_KEPT = -2


def is_plain(data: bytes) -> bool:
    """Whether a narrowed database answers for ``data`` (see the module docstring)."""
    # (``isascii`` first: it turns most binary heads away in nanoseconds, not a 16 KiB copy)
    return len(data) >= 2 and data.isascii() and not data.translate(None, PLAIN)


def _key(entry: bytes) -> int:
    """For a top-level entry: ``_NEVER_KEPT`` when plain text never matches it, the first
    byte plain text must start with to match it, or ``_ALWAYS``."""
    _, flag, _, reln, vallen, kind, _, _, mask_op = _HEAD.unpack_from(entry, 0)
    if flag & (_INDIR | _OFFNEGATIVE) or reln != ord("="):
        return _ALWAYS
    offset = _OFFSET.unpack_from(entry, 12)[0]
    if kind in (_STRING, _PSTRING, _SEARCH):
        flags = _FLAGS.unpack_from(entry, 28)[0]
        value = entry[32:32 + vallen]
        never = _NEVER_ANY_CASE if flags & _CASE_OR_BLANKS else _NEVER
        if any(b in never for b in value):
            return _NEVER_KEPT
        if kind == _STRING and offset == 0 and vallen and not flags & _CASE_OR_BLANKS:
            return value[0]
        return _ALWAYS
    shape = _INTEGERS.get(kind)
    if shape is None or _MASK.unpack_from(entry, 24)[0] or mask_op & _OPINVERSE:
        return _ALWAYS
    width, big = shape
    value = (_MASK.unpack_from(entry, 32)[0] & ((1 << 8 * width) - 1)).to_bytes(width, "little")
    if any(b in _NEVER for b in value):
        return _NEVER_KEPT
    if offset == 0:
        return value[-1] if big else value[0]
    return _ALWAYS


def _need(entry: bytes) -> int:
    """For a top-level entry: how many bytes a buffer must hold for it to match (0: any
    buffer may)."""
    _, flag, _, reln, vallen, kind, _, _, _ = _HEAD.unpack_from(entry, 0)
    if flag & (_INDIR | _OFFNEGATIVE) or reln == ord("!"):  # (a refused ``!`` test matches)
        return 0
    offset = _OFFSET.unpack_from(entry, 12)[0]
    if kind in (_STRING, _PSTRING, _SEARCH):
        return offset + vallen
    if kind == _REGEX:
        return offset  # (refused only when it starts past the end)
    width = _WIDTHS.get(kind)
    return offset + width if width else 0


class _Source:
    """One compiled database split for narrowing: its top-level entries (each with its
    continuations) as (key, need, start, stop) over a read-only mapping of the file, so what
    stays in memory is the page cache's and a list of offsets, not a copy."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data = self.data
        magicno, version, n0, n1 = struct.unpack_from("<IIII", data, 0)
        if (magicno != MAGICNO or version != VERSIONNO or len(data) != ENTRY * (1 + n0 + n1)
                or sys.byteorder != "little"):
            self.data.close()
            raise ValueError(f"{path}: not a libmagic database this module knows")
        self.n1 = n1
        self.names_at = ENTRY * (1 + n0)
        levels = memoryview(data)[ENTRY:self.names_at].cast("H")[::ENTRY // 2]  # cont_level
        tops = [i for i, level in enumerate(levels) if not level]
        levels.release()
        tops.append(n0)
        self.entries = [(_key(head), _need(head), ENTRY * (1 + a), ENTRY * (1 + b))
                        for a, b in zip(tops, tops[1:])
                        for head in (data[ENTRY * (1 + a):ENTRY * (2 + a)],)]  # (one copy at a time)
        data.madvise(mmap.MADV_DONTNEED)

    def _write(self, path: str, n0: int, n1: int, spans: list[tuple[int, int]]) -> None:
        head = bytearray(self.data[:ENTRY])
        struct.pack_into("<II", head, 8, n0, n1)
        view = memoryview(self.data)
        try:
            with open(path, "wb") as f:
                f.write(head)
                f.writelines(view[a:b] for a, b in spans)
        finally:
            view.release()
            self.data.madvise(mmap.MADV_DONTNEED)  # out of our RSS; the page cache keeps it

    def write_names(self, path: str) -> None:
        self._write(path, 0, self.n1, [(self.names_at, len(self.data))])

    def write_narrowed(self, path: str, first: int, short: int = 0) -> None:
        """For plain text starting with ``first`` (of at most ``short`` bytes, if given)."""
        spans = [(a, b) for k, need, a, b in self.entries
                 if (k == _ALWAYS or k == first) and (not short or need <= short)]
        self._write(path, sum(b - a for a, b in spans) // ENTRY, 0, spans)

    def close(self) -> None:
        self.data.close()


def default_path() -> str:
    """libmagic's default database path (``MAGIC`` or its compiled-in one)."""
    import magic
    getpath = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)(("magic_getpath", magic.libmagic))
    found = getpath(None, 0)
    if not found:
        raise ValueError("libmagic has no default database")
    return os.fsdecode(found)


_PREFIX = "pysfsd-magic-"


def _sweep() -> None:
    """Remove the narrowed databases a process of ours left when it was killed (named by
    its pid; ours, a directory, and that process gone)."""
    top = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(top) if n.startswith(_PREFIX)]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name[len(_PREFIX):].split("-", 1)[0])
            st = os.lstat(os.path.join(top, name))
        except (ValueError, OSError):
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or another user's: left alone)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(top, name), ignore_errors=True)
        except OSError:
            continue


class NarrowDatabases:
    """The database paths to load for plain text by first byte (and for short text, by
    first byte and shortness), written on first use into a private directory; ``close``
    removes it (a later ``path`` writes them again)."""

    def __init__(self, path: str | None = None, limit: int = MAX_FIRST_BYTES) -> None:
        self._path = path
        self._limit = limit
        self._lock = threading.Lock()
        self._dir: str | None = None
        self._sources: list[_Source | str] | None = None  # per component of the path
        self._paths: dict[tuple[int, int], str] = {}  # (first byte, SHORT or 0) -> path
        self._firsts: set[int] = set()
        self._remove: weakref.finalize | None = None
        self.broken = False  # the database could not be narrowed: the full one answers

    def path(self, first: int, length: int = 0) -> str | None:
        """The path for plain text starting with byte ``first`` (``length`` bytes long, if
        given: a short one gets its own); None: use the full one."""
        key = (first, SHORT if 0 < length <= SHORT else 0)
        found = self._paths.get(key)
        if found is not None or self.broken:
            return found
        with self._lock:
            found = self._paths.get(key)
            if (found is None and not self.broken
                    and (first in self._firsts or len(self._firsts) < self._limit)):
                try:
                    found = self._write(*key)
                except (OSError, ValueError):
                    self.broken = True
                    return None
                self._paths[key] = found
                self._firsts.add(first)
        return found

    def _write(self, first: int, short: int) -> str:
        if self._sources is None:
            import magic
            if magic.version() not in VERIFIED_RELEASES:
                raise ValueError(f"libmagic {magic.version()}: its matching was not checked for narrowing")
            _sweep()
            self._dir = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
            # gone with this object or at exit too (``_sweep`` covers a killed process)
            self._remove = weakref.finalize(self, shutil.rmtree, self._dir, True)
            self._sources = []
            for i, part in enumerate((self._path or default_path()).split(":")):
                compiled = part if part.endswith(".mgc") else part + ".mgc"
                if not os.path.isfile(compiled):
                    self._sources.append(part)  # a source file or directory: libmagic parses it as before
                    continue
                source = _Source(compiled)
                self._sources.append(source)
                source.write_names(os.path.join(self._dir, f"names{i}.mgc"))
        assert self._dir is not None
        parts: list[str] = []
        for i, kept in enumerate(self._sources):
            if isinstance(kept, str):
                parts.append(kept)
                continue
            mine = os.path.join(self._dir, f"first{first:02x}-{short}-{i}.mgc")
            kept.write_narrowed(mine, first, short)
            parts += [os.path.join(self._dir, f"names{i}.mgc"), mine]
        return ":".join(parts)

    def close(self) -> None:
        """Forget the narrowed databases and remove their files (handles loaded from them
        hold their own copies)."""
        with self._lock:
            if self._remove is not None:
                self._remove()
            self._remove = None
            for source in self._sources or ():
                if isinstance(source, _Source):
                    source.close()
            self._dir, self._sources, self._paths = None, None, {}
            self._firsts = set()
