"""Answering queries from the tables: intersections, scopes, values, paths.

Every answer comes from one read transaction (a consistent snapshot, taken without any lock).
Terms are intersected smallest posting list first; each further list is either read whole
(when it is not much longer than the candidates) or probed per candidate (``set_key_dup``,
a B-tree lookup), so a rare term makes a query cheap however common the others are.  A scope
below the export root is applied by whichever is smaller: walking the scope's subtree
(``children``) up to the size of the smallest list, or filtering candidates by their path.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import lmdb

from .fields import ext_of
from .tables import FLAG_LINKED, INO, S_IFDIR, FileRecord, Tables, field_values, posting_key

MAX_DEPTH = 4096
ATTRS_ROUTE_MAX = 20_000  # values(): read this many files' attrs rather than scan postings


# Fields a file's name gives: a file with several names holds the values of all of them, so
# a path is a result (or shows a value) only if its own name gives the value.
_NAME_FIELDS = {b"name": lambda n: (n,), b"ext": lambda n: (e,) if (e := ext_of(n)) else ()}


def _named(path: bytes, named: Sequence[tuple[bytes, bytes]]) -> bool:
    for field, value in named:
        if field == b"ext":  # the common case first, without splitting the path
            n = len(value) + 1
            if path.endswith(value) and len(path) > n and path[-n] == 46 and path[-n - 1] != 47:
                continue
        if value not in _NAME_FIELDS[field](path.rpartition(b"/")[2]):
            return False
    return True


class FileRef(NamedTuple):
    ino: int
    path: bytes  # relative to the export root, no leading slash


class Search:
    def __init__(self, tables: Tables, root_ino: int) -> None:
        self.t = tables
        self.root_ino = root_ino

    # -- paths ---------------------------------------------------------------------------
    def path_of(self, ino: int) -> bytes | None:
        with self.t.env.begin() as txn:
            return self._path(txn, ino, {})

    def relpath(self, txn: lmdb.Transaction, ino: int) -> bytes | None:
        return self._path(txn, ino, {})

    def _path(self, txn: lmdb.Transaction, ino: int, memo: dict[int, bytes | None]) -> bytes | None:
        """Path of a recorded file or directory; ``memo`` remembers directories."""
        chain: list[tuple[int, bytes]] = []
        cur = ino
        while cur not in memo:
            if cur == self.root_ino:
                memo[cur] = b""
                break
            rec = self.t.file(txn, cur)
            if rec is None or rec.tomb or len(chain) > MAX_DEPTH:
                for i, _ in chain:
                    memo[i] = None
                return None
            chain.append((cur, rec.name))
            cur = rec.parent
        path = memo[cur]
        for i, name in reversed(chain):
            path = None if path is None else (path + b"/" + name if path else name)
            memo[i] = path
        return path

    def paths_of(self, ino: int) -> list[bytes]:
        """Every path of a recorded file (several for hard links), its primary one first."""
        with self.t.env.begin() as txn:
            first = self._path(txn, ino, {})
            if first is None:
                return []
            out = [first]
            rec = self.t.file(txn, ino)
            if rec is not None and rec.flags & FLAG_LINKED:
                for parent, name in self.t.links_of(txn, ino):
                    p = self._path(txn, parent, {})
                    if p is not None:
                        out.append(p + b"/" + name if p else name)
        return out

    def ino_of(self, relpath: bytes) -> int | None:
        ino = self.root_ino
        with self.t.env.begin() as txn:
            for part in relpath.strip(b"/").split(b"/"):
                if not part:
                    continue
                found = self.t.child(txn, ino, part)
                if found is None:
                    return None
                ino = found[0]
        return ino

    # -- queries -------------------------------------------------------------------------
    def query(self, scope: int, terms: Sequence[tuple[bytes, bytes]]) -> list[FileRef]:
        with self.t.env.begin() as txn:
            hits = self._select(txn, scope, terms)
        return sorted((FileRef(INO.unpack(i)[0], p) for i, p in hits), key=lambda r: r.path)

    def values(self, field: bytes, scope: int, terms: Sequence[tuple[bytes, bytes]] = ()) -> list[bytes]:
        prefix = field + b"\0"
        with self.t.env.begin() as txn:
            if scope == self.root_ino and not terms:
                return [k[len(prefix):] for k in self._keys(txn, prefix)]
            hits = self._select(txn, scope, terms)
            if not hits:
                return []
            found: set[bytes] = set()
            if field in _NAME_FIELDS:  # the names in scope, not a linked file's other names
                cur = txn.cursor(db=self.t.postings)
                for ino8, path in hits:
                    found.update(v for v in _NAME_FIELDS[field](path.rpartition(b"/")[2])
                                 if cur.set_key_dup(prefix + v, ino8))
            elif len(hits) <= ATTRS_ROUTE_MAX:
                for ino8, _ in hits:
                    raw = txn.get(ino8, db=self.t.attrs)
                    if raw is not None:
                        found.update(field_values(raw, field))
            else:
                wanted = {i for i, _ in hits}
                cur = txn.cursor(db=self.t.postings)
                for key in self._keys(txn, prefix):
                    cur.set_key(key)
                    if any(ino8 in wanted for ino8 in cur.iternext_dup(keys=False)):
                        found.add(key[len(prefix):])
        return sorted(found)

    def values_of(self, field: bytes, inos: Sequence[int]) -> list[bytes]:
        found: set[bytes] = set()
        with self.t.env.begin() as txn:
            for ino in inos:
                raw = txn.get(INO.pack(ino), db=self.t.attrs)
                if raw is not None:
                    found.update(field_values(raw, field))
        return sorted(found)

    def _keys(self, txn: lmdb.Transaction, prefix: bytes) -> Iterable[bytes]:
        cur = txn.cursor(db=self.t.postings)
        if not cur.set_range(prefix):
            return
        for key in cur.iternext_nodup(keys=True, values=False):
            if not key.startswith(prefix):
                break
            yield key

    def _scope_path(self, txn: lmdb.Transaction, scope: int) -> bytes | None:
        if scope == self.root_ino:
            return b""
        rec = self.t.file(txn, scope)
        if rec is None or rec.tomb or not rec.is_dir:
            return None
        return self._path(txn, scope, {})

    def _select(self, txn: lmdb.Transaction, scope: int,
                terms: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """(ino as 8 bytes, path) of the files in scope matching every term."""
        scope_path = self._scope_path(txn, scope)
        if scope_path is None:
            return []
        if not terms:
            return self._subtree(txn, scope, scope_path, None) or []
        cur = txn.cursor(db=self.t.postings)
        sized: list[tuple[int, bytes]] = []
        for field, value in terms:
            key = posting_key(field, value)
            if not cur.set_key(key):
                return []
            sized.append((cur.count(), key))
        sized.sort()
        named = [(f, v) for f, v in terms if f in _NAME_FIELDS]
        if scope != self.root_ino:
            inside = self._subtree(txn, scope, scope_path, sized[0][0])
            if inside is not None:
                return [(i, p) for i, p in inside
                        if all(cur.set_key_dup(k, i) for _, k in sized) and (not named or _named(p, named))]
        candidates = [v for _, v in cur.getmulti([sized[0][1]], dupdata=True, dupfixed_bytes=8)]
        for n, key in sized[1:]:
            if n <= 8 * len(candidates):
                other = {v for _, v in cur.getmulti([key], dupdata=True, dupfixed_bytes=8)}
                candidates = [c for c in candidates if c in other]
            else:
                candidates = [c for c in candidates if cur.set_key_dup(key, c)]
            if not candidates:
                return []
        placed = self._placed(txn, candidates, scope_path)
        return [(i, p) for i, p in placed if _named(p, named)] if named else placed

    def _placed(self, txn: lmdb.Transaction, inos: list[bytes], scope_path: bytes) -> list[tuple[bytes, bytes]]:
        """Paths of the candidates that lie below ``scope_path``."""
        memo: dict[int, bytes | None] = {}
        under = scope_path + b"/"
        out = []
        for ino8 in inos:
            raw = txn.get(ino8, db=self.t.files)
            if raw is None:
                continue
            rec = FileRecord.decode(raw)
            parent = self._path(txn, rec.parent, memo)
            if parent is None:
                continue
            if not scope_path or parent == scope_path or parent.startswith(under):
                out.append((ino8, parent + b"/" + rec.name if parent else rec.name))
            if rec.flags & FLAG_LINKED:  # its other names, each a result where it lies
                for lparent, lname in self.t.links_of(txn, INO.unpack(ino8)[0]):
                    p = self._path(txn, lparent, memo)
                    if p is not None and (not scope_path or p == scope_path or p.startswith(under)):
                        out.append((ino8, p + b"/" + lname if p else lname))
        return out

    def _subtree(self, txn: lmdb.Transaction, scope: int, scope_path: bytes,
                 limit: int | None) -> list[tuple[bytes, bytes]] | None:
        """(ino, path) of every file below ``scope``; None once more than ``limit`` entries
        (files and directories) were seen."""
        out: list[tuple[bytes, bytes]] = []
        stack = [(scope, scope_path)]
        seen = 0
        cur = txn.cursor(db=self.t.children)
        while stack:
            d, dpath = stack.pop()
            prefix = INO.pack(d)
            if not cur.set_range(prefix):
                continue
            for key, raw in cur:
                if key[:8] != prefix:
                    break
                seen += 1
                if limit is not None and seen > limit:
                    return None
                name = key[8:]
                path = dpath + b"/" + name if dpath else name
                if raw[8] << 12 == S_IFDIR:
                    stack.append((INO.unpack_from(raw)[0], path))
                else:
                    out.append((raw[:8], path))
        return out

    # -- what the index holds --------------------------------------------------------------
    def fields(self) -> list[bytes]:
        out = []
        with self.t.env.begin() as txn:
            cur = txn.cursor(db=self.t.postings)
            found = cur.set_range(b"")
            while found:
                key = cur.key()
                field = key[:key.index(b"\0")]
                out.append(field)
                found = cur.set_range(field + b"\x01")  # past every value of this field
        return out

    def has_values(self, field: bytes) -> bool:
        with self.t.env.begin() as txn:
            return next(iter(self._keys(txn, field + b"\0")), None) is not None

    def counts(self) -> dict[bytes, tuple[int, int]]:
        out: dict[bytes, tuple[int, int]] = {}
        with self.t.env.begin() as txn:
            cur = txn.cursor(db=self.t.postings)
            if not cur.first():
                return out
            while True:
                key = cur.key()
                field = key[:key.index(b"\0")]
                values, postings = out.get(field, (0, 0))
                out[field] = (values + 1, postings + cur.count())
                if not cur.next_nodup():
                    break
        return out

    def failures(self) -> int:
        with self.t.env.begin() as txn:
            return int(txn.stat(self.t.failed)["entries"])

    def failures_by_transducer(self) -> dict[str, int]:
        """transducer name -> files whose current version it failed on."""
        counts: dict[str, int] = {}
        with self.t.env.begin() as txn:
            for names in txn.cursor(self.t.failed).iternext(keys=False):
                for name in bytes(names).decode(errors="replace").split(","):
                    counts[name] = counts.get(name, 0) + 1
        return counts
