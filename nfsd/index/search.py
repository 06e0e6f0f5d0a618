"""Answering queries from the tables: intersections, scopes, values, paths.

Every answer comes from one read transaction (a consistent snapshot, taken without any lock).
Terms are intersected smallest posting list first; each further list is either read whole
(when it is not much longer than the candidates) or probed per candidate (``set_key_dup``,
a B-tree lookup), so a rare term makes a query cheap however common the others are.  A scope
below the export root is applied by whichever is smaller: walking the scope's subtree
(``children``) up to the size of the smallest list, or filtering candidates by their path.
"""
from __future__ import annotations

import calendar
from collections import Counter
from typing import Iterable, Iterator, NamedTuple, Sequence

import lmdb

from ..query import language as query_lang
from .fields import ext_of
from .hits import HitColumns
from .tables import FLAGS_AT, FLAG_LINKED, FLAG_TOMB, INO, PLACE_NAME_AT, RECORD_NAME_AT, S_IFDIR, Tables, field_values, is_placed

MAX_DEPTH = 4096
_ANY = b""  # in ``linked``: which hits have several names is not known
ATTRS_ROUTE_MAX = 20_000  # values(): read this many files' attrs rather than scan postings
_SINGLE_VALUED = query_lang.SINGLE_STAT_FIELDS | {query_lang.EXACT_SIZE_FIELD}  # one value a name
LINKED_READ_MAX = 4096  # files with several names read at once, for a listing from ``places``
_FIRST_NAME_COOKIE = 3  # nfsd/nfs3/dirlist.py: cookies 1 and 2 are "." and ".."


# Fields a file's name gives: a file with several names holds the values of all of them, so
# a path is a result (or shows a value) only if its own name gives the value.
_NAME_FIELDS = {b"name": lambda n: (n,), b"ext": lambda n: (e,) if (e := ext_of(n)) else ()}


def _named(path: bytes, checks: Sequence[tuple[bytes, frozenset[bytes], bool]]) -> bool:
    """Whether the name at the end of ``path`` gives the values the name/ext terms ask for:
    ``checks`` holds (field, posting keys of the term, negated)."""
    name = path.rpartition(b"/")[2]
    for field, keys, negated in checks:
        prefix = field + b"\0"
        if any(prefix + v in keys for v in _NAME_FIELDS[field](name)) is negated:
            return False
    return True


class Plan:
    """What a query did, for ``pysfsd query --explain``: steps, and postings read."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.postings_read = 0

    def step(self, text: str) -> None:
        self.steps.append(text)

    def read(self, n: int) -> None:
        self.postings_read += n


class _NoPlan(Plan):
    def step(self, text: str) -> None:
        pass

    def read(self, n: int) -> None:
        pass


_NO_PLAN = _NoPlan()


def _show(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


Hit = tuple[bytes, ...]  # (ino as 8 bytes, path[, the name's blake2b-64, the name: when ``places`` gave them])


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
        get, files, pack, unpack = txn.get, self.t.files, INO.pack, INO.unpack_from
        while cur not in memo:
            if cur == self.root_ino:
                memo[cur] = b""
                break
            raw = get(pack(cur), db=files)  # the record's parent and name, not all of it
            if raw is None or raw[FLAGS_AT] & FLAG_TOMB or len(chain) > MAX_DEPTH:
                for i, _ in chain:
                    memo[i] = None
                return None
            chain.append((cur, raw[RECORD_NAME_AT:]))
            cur = unpack(raw)[0]
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
        return sorted((FileRef(INO.unpack(h[0])[0], h[1]) for h in hits), key=lambda r: r.path)

    def query_rows(self, scope: int, terms: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, bytes]]:
        """(ino, path) of ``query``'s results, in no order (a value directory sorts them by
        cookie: nfsd/query/result_set.py)."""
        with self.t.env.begin() as txn:
            hits = self._select(txn, scope, terms)
        unpack = INO.unpack
        return [(unpack(h[0])[0], h[1]) for h in hits]

    def query_hits(self, scope: int, terms: Sequence[tuple[bytes, bytes]], cols: HitColumns | None = None) -> HitColumns:
        """``query``'s results as columns, in no order: what a value directory is made of
        (nfsd/query/result_set.py), each name's hash taken from ``places`` where it holds
        them.  Streamed into the columns (``cols``, if given) as ``places`` is read: no tuple
        per result."""
        cols = cols if cols is not None else HitColumns()
        with self.t.env.begin() as txn:
            linked: set[bytes] = set()
            hits = self._select_files(txn, scope, terms, None, linked, cols)
            if len(cols) and self._name_checks(terms, linked):  # a linked file's names: filter (rare)
                hits, cols = list(cols) + hits, HitColumns()
            hits = self._named_only(txn, terms, hits, linked)
        for h in hits:
            cols.append(h)
        return cols

    def query_entries(self, scope: int, terms: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, bytes, int, bytes]]:
        """(cookie, entry name, ino, path) of ``query_hits``, in no order (the cookie the
        name's: nfsd/nfs3/dirlist.py ``name_cookie``)."""
        cols = self.query_hits(scope, terms)
        inos, cookies = cols.numbers()
        return [(c if c >= _FIRST_NAME_COOKIE else c + _FIRST_NAME_COOKIE, h[3], i, h[1])
                for c, i, h in zip(cookies, inos, cols)]

    def values(self, field: bytes, scope: int, terms: Sequence[tuple[bytes, bytes]] = ()) -> list[bytes]:
        return sorted(self.value_counts(field, scope, terms))

    def value_counts(self, field: bytes, scope: int, terms: Sequence[tuple[bytes, bytes]] = (),
                     plan: "Plan | None" = None) -> dict[bytes, int]:
        """value -> number of files in scope matching every term that hold it."""
        prefix = field + b"\0"
        plan = plan if plan is not None else _NO_PLAN
        with self.t.env.begin() as txn:
            if scope == self.root_ino and not terms:
                plan.step(f"every value of {_show(field)}: the count of each posting list")
                return self._key_counts(txn, prefix)
            hits = self._select(txn, scope, terms, plan)
            if not hits:
                return {}
            found: Counter[bytes] = Counter()
            if field in _NAME_FIELDS:  # the names in scope, not a linked file's other names
                plan.step(f"values of {_show(field)} from the names of {len(hits)} paths")
                cur = txn.cursor(db=self.t.postings)
                for h in hits:
                    found.update(v for v in _NAME_FIELDS[field](h[1].rpartition(b"/")[2])
                                 if cur.set_key_dup(prefix + v, h[0]))
            elif len(hits) <= ATTRS_ROUTE_MAX:
                plan.step(f"values of {_show(field)} from the attributes of {len(hits)} files")
                for h in hits:
                    raw = txn.get(h[0], db=self.t.attrs)
                    if raw is not None:
                        found.update(set(field_values(raw, field)))
            else:
                plan.step(f"values of {_show(field)} by scanning its postings against {len(hits)} files")
                wanted = {h[0] for h in hits}
                cur = txn.cursor(db=self.t.postings)
                for key in self._keys(txn, prefix):
                    cur.set_key(key)
                    n = sum(1 for ino8 in cur.iternext_dup(keys=False) if ino8 in wanted)
                    plan.read(cur.count())
                    if n:
                        found[key[len(prefix):]] = n
        return dict(found)

    def value_count_items(self, field: bytes, scope: int,
                          terms: Sequence[tuple[bytes, bytes]] = ()) -> Iterator[tuple[bytes, int]]:
        """``value_counts`` as (value, count) pairs in value order, streamed from one read
        transaction when the whole field is asked (``name:`` at the export root: a million
        values, never all in a dict); consume it at once."""
        if scope != self.root_ino or terms:
            yield from self.value_counts(field, scope, terms).items()
            return
        prefix = field + b"\0"
        start = len(prefix)
        with self.t.env.begin() as txn:
            cur = txn.cursor(db=self.t.postings)
            found = cur.set_range(prefix)
            while found:
                key = cur.key()
                if not key.startswith(prefix):
                    return
                yield bytes(key[start:]), cur.count()
                found = cur.next_nodup()

    def _key_counts(self, txn: lmdb.Transaction, prefix: bytes) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        cur = txn.cursor(db=self.t.postings)
        if not cur.set_range(prefix):
            return out
        start = len(prefix)
        while True:
            key = cur.key()
            if not key.startswith(prefix):
                return out
            out[bytes(key[start:])] = cur.count()
            if not cur.next_nodup():
                return out

    def query_plan(self, scope: int, terms: Sequence[tuple[bytes, bytes]], plan: "Plan") -> list[FileRef]:
        with self.t.env.begin() as txn:
            hits = self._select(txn, scope, terms, plan)
        return sorted((FileRef(INO.unpack(h[0])[0], h[1]) for h in hits), key=lambda r: r.path)

    def values_of(self, field: bytes, inos: Sequence[int]) -> list[bytes]:
        found: set[bytes] = set()
        with self.t.env.begin() as txn:
            for ino in inos:
                raw = txn.get(INO.pack(ino), db=self.t.attrs)
                if raw is not None:
                    found.update(field_values(raw, field))
        return sorted(found)

    def _keys(self, txn: lmdb.Transaction, prefix: bytes, start: bytes | None = None) -> Iterable[bytes]:
        """Posting keys starting with ``prefix`` (from ``start`` on), in order."""
        cur = txn.cursor(db=self.t.postings)
        if not cur.set_range(start or prefix):
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

    def _select(self, txn: lmdb.Transaction, scope: int, terms: Sequence[tuple[bytes, bytes]],
                plan: "Plan | None" = None) -> list[Hit]:
        """``_select_files``, each path kept only if its own name gives the ``name`` and
        ``ext`` terms: a file with several names holds the values of all of them (a hard link
        ``odd/x.c`` of ``lib/list.c`` is a result of ``ext:/c`` under ``odd`` by its own name)."""
        linked: set[bytes] = set()
        return self._named_only(txn, terms, self._select_files(txn, scope, terms, plan, linked), linked)

    @staticmethod
    def _name_checks(terms: Sequence[tuple[bytes, bytes]], linked: set[bytes]) -> bool:
        """Whether ``_named_only`` has anything to check."""
        return bool(linked) and any(f in _NAME_FIELDS for f, _ in terms)

    def _named_only(self, txn: lmdb.Transaction, terms: Sequence[tuple[bytes, bytes]], hits: list[Hit],
                    linked: set[bytes]) -> list[Hit]:
        """``hits`` whose own name gives the ``name`` and ``ext`` terms (``_select``)."""
        named = [(f, v) for f, v in terms if f in _NAME_FIELDS]
        if not hits or not named or not linked:
            return hits
        checks = []
        for field, value in named:
            expr = query_lang.expr_of(field, value)
            checks.append((field, frozenset(self._resolve(txn, expr)), expr.negated))
        if _ANY in linked:
            return [h for h in hits if _named(h[1], checks)]
        # a file with one name holds the name and ext values of that name alone
        return [h for h in hits if h[0] not in linked or _named(h[1], checks)]

    def _select_files(self, txn: lmdb.Transaction, scope: int, terms: Sequence[tuple[bytes, bytes]],
                      plan: "Plan | None" = None, linked: set[bytes] | None = None,
                      into: HitColumns | None = None) -> list[Hit]:
        """(ino as 8 bytes, path) of the files in scope matching every term.

        Each term resolves to posting keys (one for a plain value; those an OR, range or
        pattern covers).  The positive term with the fewest postings drives: its lists are
        read (and merged); every other term filters the candidates, by reading its lists
        into a set when they are not much longer than the candidates, else by probing each
        candidate (``set_key_dup``).  A negated term filters the same way, keeping the
        candidates it does not hold.  With only negated terms, the candidates are the other
        values of a negated single-valued stat field (``ext:/!txt``: the files whose ext is
        anything else, or none) when they are fewer than the files, else every file.
        ``linked`` gets the inos of the hits with several names (``_ANY``: not known);
        ``into``, if given, gets the hits read from ``places`` or records (the rest: returned)."""
        plan = plan if plan is not None else _NO_PLAN
        linked = linked if linked is not None else set()
        scope_path = self._scope_path(txn, scope)
        if scope_path is None:
            return []
        if not terms:
            plan.step("every file below the scope")
            linked.add(_ANY)
            return self._subtree(txn, scope, scope_path, None) or []
        cur = txn.cursor(db=self.t.postings)
        positive: list[tuple[int, list[bytes]]] = []
        negative: list[tuple[int, list[bytes]]] = []
        negated: list[query_lang.Expr] = []
        for field, value in terms:
            expr = query_lang.expr_of(field, value)
            keys = self._resolve(txn, expr)
            n = 0
            for k in keys:
                if cur.set_key(k):
                    n += cur.count()
            plan.step(f"{field.decode(errors='replace')}:/{_show(expr.canonical())}: "
                      f"{len(keys)} posting key{'s' if len(keys) != 1 else ''}, {n} postings")
            if expr.negated:
                negative.append((n, keys))
                negated.append(expr)
            elif not n:
                return []
            else:
                positive.append((n, keys))
        if not positive:
            positive, used = self._complements(txn, negated, plan)
            if used is not None:  # its other values hold none of what it excludes: no filter by it
                del negative[negated.index(used)]
        positive.sort(key=lambda t: t[0])
        if not positive:
            every = self._every_file(txn) if scope == self.root_ino else None
            if every is not None:  # postings, not paths: only the results get placed
                n, keys = every
                plan.read(n)
                candidates = self._read(cur, keys)
                plan.step(f"candidates: every file ({len(candidates)}), from the owner postings")
                candidates = self._filter(cur, candidates, negative, plan)
                return self._placed_via(txn, keys, n, candidates, scope_path, linked, plan, into) if candidates else []
            linked.add(_ANY)
            inside = self._subtree(txn, scope, scope_path, None) or []
            plan.step(f"candidates: the {len(inside)} files below the scope")
            by_ino = {h[0]: h[1] for h in inside}
            kept = self._filter(cur, list(by_ino), negative, plan)
            return [(i, by_ino[i]) for i in kept]
        if scope != self.root_ino:
            inside = self._subtree(txn, scope, scope_path, positive[0][0])
            if inside is not None:
                linked.add(_ANY)
                plan.step(f"candidates: the {len(inside)} files below the scope (fewer than the postings)")
                by_ino = {h[0]: h[1] for h in inside}
                kept = self._filter(cur, list(by_ino), positive + negative, plan, len(positive))
                return [(i, by_ino[i]) for i in kept]
        n, keys = positive[0]
        plan.read(n)
        rest = positive[1:] + negative
        if not rest and self._linked_few(txn, keys) is not None:  # the places of its postings are the answer
            plan.step(f"candidates: the smallest term's {n} postings, placed")
            return self._placed_by_keys(txn, keys, None, scope_path, linked, into)
        candidates = self._read(cur, keys)
        plan.step(f"candidates: {len(candidates)} files from the smallest term's {n} postings")
        candidates = self._filter(cur, candidates, rest, plan, len(positive) - 1)
        return self._placed_via(txn, keys, n, candidates, scope_path, linked, plan, into) if candidates else []

    def _complements(self, txn: lmdb.Transaction, exprs: list[query_lang.Expr],
                     plan: "Plan") -> tuple[list[tuple[int, list[bytes]]], query_lang.Expr | None]:
        """For a query of negations only: the other values of a negated field every file has
        one value of (or none, for ext: its hidden "no ext" key), when they hold fewer
        postings than there are files -- candidates cheaper than every file -- and the
        negation they stand for (None: none do)."""
        best: tuple[int, list[bytes]] | None = None
        chosen: query_lang.Expr | None = None
        for expr in exprs:
            if expr.field not in query_lang.SINGLE_STAT_FIELDS:
                continue
            excluded = set(self._resolve(txn, expr))
            prefix = expr.field + b"\0"
            counts = self._key_counts(txn, prefix)
            keys = [prefix + v for v in counts if prefix + v not in excluded]
            n = sum(c for v, c in counts.items() if prefix + v not in excluded)
            if expr.field == b"ext":
                cur = txn.cursor(db=self.t.postings)
                if cur.set_key(query_lang.NO_EXT_KEY):
                    keys.append(query_lang.NO_EXT_KEY)
                    n += cur.count()
            if best is None or n < best[0]:
                best, chosen = (n, keys), expr
        every = self._every_file(txn)
        if best is None or every is None or best[0] >= every[0]:
            return [], None
        plan.step(f"candidates: the other values of a negated field ({best[0]} postings, fewer than the files)")
        return [best], chosen

    def _every_file(self, txn: lmdb.Transaction) -> tuple[int, list[bytes]] | None:
        """(postings, keys) of the ``owner`` field, which the stat tier gives every file;
        None when no file has one (no built-in transducers)."""
        counts = self._key_counts(txn, b"owner\0")
        if not counts:
            return None
        return sum(counts.values()), [b"owner\0" + v for v in counts]

    @staticmethod
    def _read(cur: lmdb.Cursor, keys: list[bytes]) -> list[bytes]:
        """The inos (8 bytes) under any of ``keys``, each once."""
        found = [v for _, v in cur.getmulti(keys, dupdata=True, dupfixed_bytes=8)]
        return found if len(keys) == 1 else list(dict.fromkeys(found))

    def _filter(self, cur: lmdb.Cursor, candidates: list[bytes], terms: list[tuple[int, list[bytes]]],
                plan: "Plan", positives: int | None = None) -> list[bytes]:
        """Candidates held by each of the first ``positives`` terms and none of the rest."""
        if positives is None:
            positives = 0
        for t, (n, keys) in enumerate(terms):
            if not candidates:
                break
            keep = t < positives
            if n <= 8 * len(candidates):
                plan.read(n)
                other = set(self._read(cur, keys)) if n else set()
                candidates = [c for c in candidates if (c in other) is keep]
                how = "read whole"
            else:
                plan.read(len(candidates) * len(keys))
                candidates = [c for c in candidates if any(cur.set_key_dup(k, c) for k in keys) is keep]
                how = "probed per candidate"
            plan.step(f"{'and' if keep else 'and not'}: {n} postings {how}: {len(candidates)} left")
        return candidates

    def _resolve(self, txn: lmdb.Transaction, expr: query_lang.Expr) -> list[bytes]:
        """The posting keys an expression's alternatives cover (its negation aside)."""
        keys: dict[bytes, None] = {}
        prefix = expr.field + b"\0"
        if len(expr.atoms) == 1 and expr.field == query_lang.SIZE_FIELD and expr.atoms[0].kind not in ("eq", "glob"):
            return list(self._size_keys(txn, expr.atoms[0]))  # each once, in order: no dict of a million keys
        for atom in expr.atoms:
            if atom.kind == "eq":
                keys[prefix + atom.value] = None
            elif atom.kind == "glob":
                match = query_lang.glob_matcher(atom).fullmatch
                start = len(prefix)
                for key in self._keys(txn, prefix + atom.value):
                    if match(key[start:]):
                        keys[key] = None
            elif expr.field == query_lang.SIZE_FIELD:
                keys.update(dict.fromkeys(self._size_keys(txn, atom)))
            elif expr.field in query_lang.DATE_FIELDS:
                keys.update(dict.fromkeys(self._date_keys(txn, prefix, atom)))
            else:
                lo = int(atom.lo) if atom.lo else None
                hi = int(atom.hi) if atom.hi else None
                for key in self._keys(txn, prefix):
                    v = key[len(prefix):]
                    if v.isdigit() and (lo is None or int(v) >= lo) and (hi is None or int(v) <= hi):
                        keys[key] = None
        return list(keys)

    def _size_keys(self, txn: lmdb.Transaction, atom: query_lang.Atom) -> Iterable[bytes]:
        """Exact sizes in range: one key range of the hidden ordered size keys."""
        lo = max(int(atom.lo), 0) if atom.lo else 0
        hi = query_lang.size_key(int(atom.hi)) if atom.hi else None
        if hi is not None and int(atom.hi) < lo:
            return
        prefix = query_lang.EXACT_SIZE_FIELD + b"\0"
        for key in self._keys(txn, prefix, query_lang.size_key(lo)):
            if hi is not None and key > hi:
                break
            yield key

    def _date_keys(self, txn: lmdb.Transaction, prefix: bytes, atom: query_lang.Atom) -> Iterable[bytes]:
        """Days in range, taking a whole year's or month's key where the range covers it
        (values are ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``: byte order is date order, and a
        year's key comes right before its months and days)."""
        lo, hi = atom.lo or b"0000-00-00", atom.hi or b"9999-99-99"
        cur = txn.cursor(db=self.t.postings)
        if not cur.set_range(prefix + lo[:4]):
            return
        start = len(prefix)
        while True:
            key = cur.key()
            if not key.startswith(prefix):
                return
            v = key[start:]
            if v[:len(hi)] > hi:
                return
            if len(v) == 4:
                first, last = v + b"-01-01", v + b"-12-31"
            elif len(v) == 7 and v[:4].isdigit() and v[5:].isdigit() and 1 <= int(v[5:]) <= 12:
                first = v + b"-01"
                last = v + b"-%02d" % calendar.monthrange(int(v[:4]), int(v[5:]))[1]
            else:
                first = last = v
            if lo <= first and last <= hi:
                yield bytes(key)
                if not cur.set_range(key + b"\xff"):  # past its months and days
                    return
            elif not cur.next_nodup():
                return

    def _linked_few(self, txn: lmdb.Transaction, keys: list[bytes]) -> frozenset[bytes] | None:
        """The inos of the files with several names, when ``keys`` all have places
        (``tables.is_placed``) and such files are few enough to read (else None: the
        records tell, one by one)."""
        if not keys or not all(map(is_placed, keys)):
            return None
        n = int(txn.stat(self.t.links)["entries"])
        if n == 0:
            return frozenset()
        if n > LINKED_READ_MAX:
            return None
        cur = txn.cursor(db=self.t.links)
        return frozenset(bytes(k[:8]) for k in cur.iternext(keys=True, values=False))

    def _placed_via(self, txn: lmdb.Transaction, keys: list[bytes], n: int, inos: list[bytes],
                    scope_path: bytes, linked: set[bytes], plan: "Plan",
                    into: HitColumns | None = None) -> list[Hit]:
        """``_placed`` of the candidates ``inos`` that ``keys`` (``n`` postings) gave: by
        their places when those hold them and the filters left many of them, else by their
        records."""
        if len(inos) * 8 >= n and self._linked_few(txn, keys) is not None:
            plan.step(f"placed from the {n} places of the candidates' term")
            return self._placed_by_keys(txn, keys, set(inos), scope_path, linked, into)
        return self._placed(txn, inos, scope_path, linked, into)

    def _placed_by_keys(self, txn: lmdb.Transaction, keys: list[bytes], wanted: set[bytes] | None,
                        scope_path: bytes, linked: set[bytes], into: HitColumns | None = None) -> list[Hit]:
        """``_placed`` read from ``places``: the files posted under ``keys`` (those in
        ``wanted``, if given), each once, with its name's hash (ino8, path, hash8, name).  The
        entries of a key lie together, in ino order: a few pages for 10,000 results.  With
        ``into``, the hits go there (and none are returned)."""
        memo: dict[int, bytes | None] = {}
        under = scope_path + b"/"
        out: list[Hit] = []
        sink: list[Hit] | HitColumns = out if into is None else into
        add = None if into is None else into.add
        several = self._linked_few(txn, keys) or frozenset()
        # A file may lie under several of the keys, but under one value of a single-valued
        # field (a range of sizes) unless it has several names: only those are remembered
        # (no set of a million seen inos)
        fields = {k.partition(b"\0")[0] for k in keys}
        every = not (len(fields) == 1 and next(iter(fields)) in _SINGLE_VALUED)
        seen: set[bytes] | None = set() if len(keys) > 1 and wanted is None and (every or several) else None
        unpack = INO.unpack_from
        name_at = PLACE_NAME_AT
        for v in self._place_values(txn, keys):
            ino8 = v[:8]
            if wanted is not None:
                if ino8 not in wanted:
                    continue
                wanted.discard(ino8)  # once, whichever of the keys holds it first
            elif seen is not None and (every or ino8 in several):
                if ino8 in seen:
                    continue
                seen.add(ino8)
            parent_ino = unpack(v, 8)[0]
            parent = memo[parent_ino] if parent_ino in memo else self._path(txn, parent_ino, memo)
            if parent is None:
                continue
            if not scope_path or parent == scope_path or parent.startswith(under):
                name = v[name_at:]
                if add is not None:
                    add(ino8, parent, name, v[16:name_at])
                else:
                    out.append((ino8, parent + b"/" + name if parent else name, v[16:name_at], name))
            if several and ino8 in several:
                linked.add(ino8)
                self._other_names(txn, ino8, memo, scope_path, sink)
        return out

    def _place_values(self, txn: lmdb.Transaction, keys: list[bytes]) -> Iterable[bytes]:
        """The ``places`` entries of ``keys``: one seek per key, or for many keys (a range of
        exact sizes, adjacent) one walk from the first to the last."""
        cur = txn.cursor(db=self.t.places)
        if len(keys) <= 16:
            for k in keys:
                if cur.set_key(k):
                    yield from cur.iternext_dup(keys=False)
            return
        wanted = sorted(keys)  # met in this order: a pointer, not a set of a million keys
        at, last = 0, len(wanted) - 1
        if not cur.set_range(wanted[0]):
            return
        for key, v in cur.iternext(keys=True, values=True):
            if key != wanted[at]:
                while at < last and wanted[at] < key:
                    at += 1
                if key != wanted[at]:
                    if key > wanted[last]:
                        return
                    continue
            yield v

    def _other_names(self, txn: lmdb.Transaction, ino8: bytes, memo: dict[int, bytes | None],
                     scope_path: bytes, out: list[Hit] | HitColumns) -> None:
        """A linked file's names besides its record's, each a result where it lies."""
        under = scope_path + b"/"
        for lparent, lname in self.t.links_of(txn, INO.unpack(ino8)[0]):
            p = self._path(txn, lparent, memo)
            if p is not None and (not scope_path or p == scope_path or p.startswith(under)):
                out.append((ino8, p + b"/" + lname if p else lname))

    def _placed(self, txn: lmdb.Transaction, inos: list[bytes], scope_path: bytes,
                linked: set[bytes], into: HitColumns | None = None) -> list[Hit]:
        """Paths of the candidates that lie below ``scope_path``; ``linked`` gets those
        with several names.  With ``into``, the hits go there (and none are returned)."""
        memo: dict[int, bytes | None] = {}
        under = scope_path + b"/"
        out: list[Hit] | HitColumns = [] if into is None else into
        get, files, name_at = txn.get, self.t.files, RECORD_NAME_AT
        for ino8 in inos:
            raw = get(ino8, db=files)
            if raw is None:
                continue
            parent_ino = INO.unpack_from(raw)[0]  # the record's first field (no full decode)
            parent = memo[parent_ino] if parent_ino in memo else self._path(txn, parent_ino, memo)
            if parent is None:
                continue
            if not scope_path or parent == scope_path or parent.startswith(under):
                out.append((ino8, parent + b"/" + raw[name_at:] if parent else raw[name_at:]))
            if raw[FLAGS_AT] & FLAG_LINKED:  # its other names, each a result where it lies
                linked.add(ino8)
                self._other_names(txn, ino8, memo, scope_path, out)
        return [] if isinstance(out, HitColumns) else out

    def _subtree(self, txn: lmdb.Transaction, scope: int, scope_path: bytes,
                 limit: int | None) -> list[Hit] | None:
        """(ino, path) of every file below ``scope``; None once more than ``limit`` entries
        (files and directories) were seen."""
        out: list[Hit] = []
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
                if not query_lang.is_hidden_field(field):
                    out.append(field)
                found = cur.set_range(field + b"\x01")  # past every value of this field
        return out

    def holds(self, field: bytes, value: bytes) -> bool:
        """Whether any file holds ``field`` = ``value`` (one look-up)."""
        with self.t.env.begin() as txn:
            return txn.get(field + b"\0" + value, db=self.t.postings) is not None

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
                if query_lang.is_hidden_field(field):
                    if not cur.next_nodup():
                        break
                    continue
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
