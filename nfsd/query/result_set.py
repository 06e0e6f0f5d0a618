"""A value directory's results, compact and in cookie order, so listings stream.

A value directory of a million results used to be a dict of name -> FileRef (~700 bytes a
result with the READDIRPLUS attributes remembered beside it), copied again into the sorted
listing.  ``ResultSet`` keeps each result in ~28 bytes plus its path: parallel arrays
(cookie, inode, where its path lies in one bytes blob) sorted by cookie, the 64-bit hash of
the entry name that real directories use too (``nfsd.nfs3.dirlist.name_cookie``).  So:

* the listing *is* the result set: a page after a cookie is a bisection, with no second copy
  (``listing``), and a cookie keeps meaning the same position however often the client comes
  back;
* a name is found by hashing it and bisecting (``find``): no name index;
* clashes are decided while building: two results of the same name have the same cookie, so
  they sort next to each other and are renamed ``stem~HHHHHH.ext`` (a hash of the path) in
  one pass, among exactly the results given (a caller's view builds its own set, so a name
  renamed because of a file they may not see does not tell them it exists).

A READDIRPLUS entry's attributes and handle are made when its page is served, never kept:
memory is independent of how much of the directory has been listed.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import operator
import struct
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from protocol.nfs3_entries import EntryplusRun

from ..nfs3.dirlist import FIRST_NAME_COOKIE, ByPosition, Listing, find_named, name_cookie
from ..index.hits import HitColumns
from ..index.search import FileRef
from .names import parse_field_name


def clash_name(name: bytes, path: bytes) -> bytes:
    """``stem~HHHHHH.ext``: a result's name when another result shares it (or it would read
    as a field directory), deterministic and stable whatever else is listed."""
    stem, dot, ext = name.rpartition(b".")
    if not stem:
        stem, dot, ext = name, b"", b""
    return stem + b"~" + hashlib.blake2b(path, digest_size=3).hexdigest().encode() + dot + ext


_INO8 = struct.Struct(">Q")


def _cookie_order(cookies: array) -> array:
    """The positions of ``cookies`` in cookie order (ties: by position), with no object
    per result for them all: a bucket per top 12 bits, each sorted alone (cookies are
    hashes, so evenly spread), 4 bytes a result where a list of ints took 44."""
    n = len(cookies)
    code = "I" if n < 1 << 32 else "Q"
    get = cookies.__getitem__
    if n < 1 << 16:  # a few: one int each (cookie above position) is quicker
        shift = max(n, 1).bit_length()
        keys = [c << shift | i for i, c in enumerate(cookies)]
        keys.sort()
        mask = (1 << shift) - 1
        return array(code, [k & mask for k in keys])
    buckets = [array(code) for _ in range(4096)]
    appends = [b.append for b in buckets]
    for i, c in enumerate(cookies):
        appends[c >> 52](i)
    del appends
    out = array(code)
    for b in buckets:
        out.extend(sorted(b, key=get))
        del b[:]
    return out


def _basename(path: bytes) -> bytes:
    return path.rpartition(b"/")[2]


class ResultSet:
    """Results by entry name, read-only and dict-like (``get``, ``in``, ``len``, ``items``,
    ``values``), iterated in cookie order."""

    __slots__ = ("cookies", "inos", "_starts", "_lens", "_nlens", "_blob", "_renamed", "digest", "hint")

    def __init__(self, rows: Sequence[tuple[int, bytes, int, bytes]], own_names: bool = False) -> None:
        """``rows``: (cookie, name, ino, path), sorted; ``own_names``: every name is its
        path's last component (none renamed), so it need not be checked."""
        self.cookies = array("Q", (r[0] for r in rows))  # no list of a million ints beside
        self.inos = array("Q", (r[2] for r in rows))
        paths = [r[3] for r in rows]
        lens = array("I", map(len, paths))
        starts = array("Q", itertools.accumulate(lens, initial=0))
        starts.pop()
        nlens, renamed = array("H"), {}
        if own_names:
            nlens = array("H", (len(r[1]) for r in rows))
        else:
            for i, (_, name, _, path) in enumerate(rows):
                if path.endswith(name) and (len(path) == len(name) or path[-len(name) - 1] == 47):  # b"/"
                    nlens.append(len(name))
                else:
                    nlens.append(len(_basename(path)))
                    renamed[i] = name
        self._starts, self._lens, self._nlens, self._renamed = starts, lens, nlens, renamed
        self._blob = b"".join(paths)
        self.digest = self._digest()
        self.hint = 0  # the position a listing page named last: READDIRPLUS asks for it next

    @classmethod
    def of_refs(cls, refs: Iterable[tuple[int, bytes]]) -> "ResultSet":
        """Results (inode, path; a FileRef or a row of ``Search.query_rows``) named by the
        fault's rule: the file's own name unless two results share it (or it would read as a
        field directory), then ``clash_name``."""
        cols = HitColumns()
        append, pack = cols.append, _INO8.pack
        for ino, path in refs:
            append((pack(ino), path))
        return cls.of_hits(cols)

    @classmethod
    def of_rows(cls, rows: Iterable[tuple[int, bytes, int, bytes]]) -> "ResultSet":
        """``of_refs`` of (cookie, name, inode, path) rows (``Index.query_entries``)."""
        return cls.of_refs((r[2], r[3]) for r in rows)

    @classmethod
    def of_hits(cls, hits: HitColumns) -> "ResultSet":
        """``of_refs`` of a query's columns (``Index.query_hits``), built column by column:
        at no point one object per result for them all (the sort: ``_cookie_order``)."""
        inos, cookies = hits.numbers()
        hits.inos = hits.hashes = bytearray()  # the columns' bytes go as soon as read
        if cookies and min(cookies) < FIRST_NAME_COOKIE:
            for i, c in enumerate(cookies):
                if c < FIRST_NAME_COOKIE:
                    cookies[i] = c + FIRST_NAME_COOKIE
        blob, lens, nlens = bytes(hits.blob), hits.lens, hits.nlens
        hits.blob = bytearray()
        starts = array("Q", itertools.accumulate(lens, initial=0))
        starts.pop()
        order = _cookie_order(cookies)  # results of the same name are adjacent
        ranked = array("Q", (cookies[j] for j in order))
        renamed = cls._clashes(ranked, order, blob, starts, lens, nlens)
        if renamed:  # renamed results move to their new names' places
            for j, new in renamed.items():
                cookies[j] = name_cookie(new)
            order = _cookie_order(cookies)
            ranked = array("Q", (cookies[j] for j in order))
        del cookies
        self = cls.__new__(cls)
        self.cookies = ranked
        self.inos = array("Q", (inos[j] for j in order))
        del inos
        out, view = bytearray(), memoryview(blob)
        for j in order:
            start = starts[j]
            out += view[start:start + lens[j]]
        view.release()
        del blob, starts
        self._blob = bytes(out)
        del out
        self._lens = array("I", (lens[j] for j in order))
        self._nlens = array("H", (nlens[j] for j in order))
        self._starts = array("Q", itertools.accumulate(self._lens, initial=0))
        self._starts.pop()
        self._renamed = {pos: renamed[j] for pos, j in enumerate(order) if j in renamed} if renamed else {}
        self.digest = self._digest()
        self.hint = 0
        return self

    @staticmethod
    def _clashes(ranked: array, order: array, blob: bytes, starts: array, lens: array,
                 nlens: array) -> dict[int, bytes]:
        """position -> ``clash_name`` of the results (by position in the columns; ``order``
        sorts them by cookie, ``ranked`` is their cookies in that order) whose name another
        result shares or that would read as a field directory."""
        def name(j: int) -> bytes:
            end = starts[j] + lens[j]
            return blob[end - nlens[j]:end]

        def path(j: int) -> bytes:
            return blob[starts[j]:starts[j] + lens[j]]

        moved: dict[int, bytes] = {}
        if any(map(operator.eq, ranked, itertools.islice(ranked, 1, None))):  # a cookie shared: a name, but for a hash clash
            p, n = 0, len(ranked)
            while p < n:
                q = p + 1
                while q < n and ranked[q] == ranked[p]:
                    q += 1
                if q - p > 1:
                    group = order[p:q]
                    for nm in {name(j) for j in group}:
                        same = [j for j in group if name(j) == nm]
                        if len(same) > 1:
                            for j in same:
                                moved[j] = clash_name(nm, path(j))
                p = q
        if b":" in blob:  # a name that would read as a field directory
            for j in range(len(lens)):
                if j not in moved and blob[starts[j] + lens[j] - 1] == 58:  # b":"
                    nm = name(j)
                    if parse_field_name(nm) is not None:
                        moved[j] = clash_name(nm, path(j))
        return moved

    def subset(self, kept: Iterable[int]) -> "ResultSet":
        """The results at the positions ``kept``, named afresh among themselves (a caller's
        view: nfsd/fs/semantic.py), built from columns like a fault's."""
        cols = HitColumns()
        append, pack, inos, path = cols.append, _INO8.pack, self.inos, self.path
        for i in kept:
            append((pack(inos[i]), path(i)))
        return ResultSet.of_hits(cols)

    @classmethod
    def of_names(cls, names: Iterable[tuple[bytes, FileRef]]) -> "ResultSet":
        """Results under the names given."""
        return cls(sorted((name_cookie(k), k, r.ino, r.path) for k, r in names))

    def _digest(self) -> int:
        """What identifies these results (names and files): a change moves it."""
        h = hashlib.blake2b(self.cookies.tobytes(), digest_size=8)
        h.update(self.inos.tobytes())
        for i, name in sorted(self._renamed.items()):
            h.update(b"%d\0%s\0" % (i, name))
        return int.from_bytes(h.digest(), "big")

    # -- one result ---------------------------------------------------------------------
    def path(self, i: int) -> bytes:
        start = self._starts[i]
        return self._blob[start:start + self._lens[i]]

    def path_len(self, i: int) -> int:
        return self._lens[i]

    def name(self, i: int) -> bytes:
        found = self._renamed.get(i)
        if found is not None:
            return found
        end = self._starts[i] + self._lens[i]
        return self._blob[end - self._nlens[i]:end]

    def ref(self, i: int) -> FileRef:
        return FileRef(self.inos[i], self.path(i))

    def find(self, name: bytes) -> int:
        """The index of the entry ``name``, or -1."""
        hint = self.hint
        if hint < len(self.cookies) and self.name(hint) == name:  # no hash, no bisection
            return hint
        return find_named(self.cookies, name, self.name)

    # -- as a mapping -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cookies)

    def get(self, name: bytes, default: Any = None) -> Any:
        i = self.find(name)
        return self.ref(i) if i >= 0 else default

    def __getitem__(self, name: bytes) -> FileRef:
        i = self.find(name)
        if i < 0:
            raise KeyError(name)
        return self.ref(i)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, bytes) and self.find(name) >= 0

    def __iter__(self) -> Iterator[bytes]:
        return (self.name(i) for i in range(len(self)))

    def keys(self) -> Iterator[bytes]:
        return iter(self)

    def values(self) -> Iterator[FileRef]:
        return (self.ref(i) for i in range(len(self)))

    def items(self) -> Iterator[tuple[bytes, FileRef]]:
        return ((self.name(i), self.ref(i)) for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        """Memory held (the arrays, the blob, the renamed names)."""
        return 30 * len(self) + len(self._blob) + 120 * len(self._renamed) + 400

    # -- changed in place ---------------------------------------------------------------
    def replaced(self, name: bytes, ref: FileRef | None) -> "ResultSet":
        """A copy with entry ``name`` removed, and then, if ``ref``, set to it (one file
        tagged or untagged: nfsd/fs/tag_dirs.py).  Array slices, no per-result work."""
        new = ResultSet.__new__(ResultSet)
        cookies, inos, starts, lens, nlens = self.cookies, self.inos, self._starts, self._lens, self._nlens
        blob, renamed = self._blob, self._renamed
        i = self.find(name)
        if i >= 0:
            cookies, inos = cookies[:i] + cookies[i + 1:], inos[:i] + inos[i + 1:]
            starts, lens = starts[:i] + starts[i + 1:], lens[:i] + lens[i + 1:]
            nlens = nlens[:i] + nlens[i + 1:]
            renamed = {(k if k < i else k - 1): v for k, v in renamed.items() if k != i}
        if ref is not None:
            cookie = name_cookie(name)
            j = bisect.bisect_right(cookies, cookie)
            cookies = cookies[:j] + array("Q", [cookie]) + cookies[j:]
            inos = inos[:j] + array("Q", [ref.ino]) + inos[j:]
            starts = starts[:j] + array("Q", [len(blob)]) + starts[j:]
            lens = lens[:j] + array("I", [len(ref.path)]) + lens[j:]
            nlens = nlens[:j] + array("H", [len(_basename(ref.path))]) + nlens[j:]
            blob += ref.path
            renamed = {(k if k < j else k + 1): v for k, v in renamed.items()}
            if name != _basename(ref.path):
                renamed[j] = name
        new.cookies, new.inos, new._starts, new._lens, new._nlens = cookies, inos, starts, lens, nlens
        new._blob, new._renamed = blob, renamed
        new.digest = new._digest()
        new.hint = 0
        return new

    # -- as a listing -------------------------------------------------------------------
    def listing(self, fileid: Callable[[int], int], links: "LinkItems | None" = None) -> "ResultListing":
        """The directory listing these results are, in cookie order (nfsd/nfs3/dirlist.py);
        ``fileid`` makes an entry's fileid from its inode, when a page asks; ``links``
        encodes READDIRPLUS pages of result links straight from the arrays
        (``ResultListing.encoded_page``)."""
        inos = self.inos
        return ResultListing(self.cookies, _Names(self), ByPosition(len(inos), lambda i: fileid(inos[i])),  # type: ignore[arg-type]
                             None, 0, self.nbytes, self, fileid, links)


class LinkItems(NamedTuple):
    """What every READDIRPLUS item of a value directory's result links shares: ``run``
    encodes one (protocol/nfs3_entries.py), whose size is its text's, the result's path
    (below D) with ``shift`` bytes more (``../`` per level up to D, less D's own path)."""

    run: EntryplusRun
    shift: int


@dataclass
class ResultListing(Listing):
    """A listing that is a result set: READDIRPLUS pages encoded by position."""

    results: ResultSet | None = None
    fileid: Callable[[int], int] | None = None
    links: LinkItems | None = None

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        """(name, fileid) in cookie order, as any backend's ``scandir`` gives them."""
        names, fileids = self.names, self.inos
        return ((names[i], fileids[i]) for i in range(len(names)))

    def encoded_page(self, start: int, budget: int, dircount: int) -> tuple[bytes, int] | None:
        """The READDIRPLUS list items from position ``start`` that fit ``budget`` reply
        bytes and ``dircount`` bytes of names (RFC 1813: fileid, name and cookie of each),
        as one bytes, and the position after them; None when this listing has no
        ``links``.  One pack per entry, no per-entry objects: a large listing's cost."""
        r, links, fileid = self.results, self.links, self.fileid
        if r is None or links is None or fileid is None:
            return None
        item, shift = links.run.item, links.shift
        cookies, inos, starts, lens, nlens = r.cookies, r.inos, r._starts, r._lens, r._nlens
        blob, renamed = r._blob, r._renamed
        out: list[bytes] = []
        used = dir_used = 0
        i, n = start, len(cookies)
        while i < n:
            end = starts[i] + lens[i]
            name = renamed.get(i) if renamed else None
            if name is None:
                name = blob[end - nlens[i]:end]
            dir_used += 24 + len(name)
            if dir_used > dircount:
                break
            ino = inos[i]
            fid = fileid(ino)
            encoded = item(fid, name, cookies[i], lens[i] + shift, ino)
            used += len(encoded)
            if used > budget:
                break
            out.append(encoded)
            i += 1
        if i > start:
            r.hint = i - 1
        return b"".join(out), i


class _Names(Sequence[bytes]):
    """Entry names of a ``ResultSet`` by position, made when asked."""

    def __init__(self, results: ResultSet) -> None:
        self._r, self._n = results, len(results)  # a result set never changes (``replaced`` copies)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if i.__class__ is int and 0 <= i < self._n:  # the hot path: a page's next name
            self._r.hint = i
            return self._r.name(i)
        if isinstance(i, slice):
            return [self._r.name(k) for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        self._r.hint = i  # the page's next step is this entry's attributes (``find``)
        return self._r.name(i)
