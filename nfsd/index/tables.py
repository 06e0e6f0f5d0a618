"""The LMDB tables of one export's index, their encodings, and the only code that writes them.

Named databases, prefixed ``idx<export id>:``:

``files``     ino -> FileRecord: parent ino, kind, flags, generation, size, mtime, ctime
              (ns), extractor version, then the name.  Directories too (scopes, paths).
``children``  parent ino + name -> ino + kind: directory listings as last seen, for
              rescans (what vanished), subtree walks and ``ino_of``.
``attrs``     ino -> the posting keys the file holds, stat tier and content tier apart, so an
              update removes exactly the old postings and a move keeps the content tier.
``postings``  field + NUL + value -> inos (dupsort, dupfixed, 8-byte big-endian): the
              inverted index; LMDB keeps each key's inos sorted, so ``count`` is O(1) and a
              membership test is one ``set_key_dup``.
``places``    posting key -> ino + parent ino + the name's 64-bit hash + name (dupsort, in
              ino order, as the postings): for the keys of the fields listings are most
              often asked by (``is_placed``: ext, owner, group, exact size), where each file
              with such a posting lies (its record's place), beside the posting, so a
              listing of 10,000 results reads a few pages in key order instead of 10,000
              records spread over the whole ``files`` table (a page fault each), and the
              entry name's cookie comes with it (nfsd/nfs3/dirlist.py: ``name_cookie``).
              Derived from ``postings`` and ``files``: kept in step by the ``Writer``,
              rebuilt by ``build_places`` (schema 3 indexes are migrated so at start-up).
``links``     ino + parent ino + name -> nothing: the other names of a file with several
              hard links (its record holds one, its *primary* place, and ``FLAG_LINKED``);
              every name is in ``children``, so each is a result in each scope.
``tombs``     ino -> time it vanished.  A vanished file keeps its record and attrs (but
              no postings) for a while: if the same inode shows up again elsewhere (a move
              seen as delete-then-create), its content tier is reused, not re-extracted.
``failed``    ino -> names of the transducers that failed on its current version.
``meta``      schema version, root inode, the query-visible ``version`` counter.

A *posting key* (``field\\0value``) is how a (field, value) pair travels everywhere inside
the index: values hold no NUL, so it splits unambiguously.
"""
from __future__ import annotations

import hashlib
import re
import stat
import struct
import time
from itertools import repeat
from operator import itemgetter
from typing import AbstractSet, Any, Iterator, NamedTuple

import lmdb
from collections.abc import Callable

SCHEMA = b"4"  # 3: hidden keys for exact sizes and files without an ext, in the stat tier; 4: places
MIGRATES = {b"3": "migrate_places"}  # older schemas brought up to date without a rescan
INO = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_REC = struct.Struct(">QBBIQqqI")
RECORD_NAME_AT = _REC.size  # a FileRecord: parent ino first, the name after the fixed part
FLAGS_AT = 9  # a FileRecord's flags byte (after the parent ino and the kind)
_CHILD = struct.Struct(">QB")
FLAG_TOMB = 1
FLAG_LINKED = 2      # the file has other names, in ``links``
FLAG_UNREAD = 4      # added from the server's own creation stat, its user fields not read:
                     # the next look at it re-derives everything (``Index.note_created``)
NO_XVER = 0          # content tier not extracted yet (or extraction interrupted)
S_IFDIR = stat.S_IFDIR
MAX_SEEN_KEYS = 1 << 14  # the memo of which posting keys are placed (``Writer.add_new``)
MAX_CREATED_PARTS = 256  # kinds of created files whose shared keys are kept encoded (``add_created``)


class FileRecord(NamedTuple):
    parent: int
    kind: int        # stat.S_IFMT of the mode
    flags: int
    gen: int
    size: int
    mtime_ns: int
    ctime_ns: int
    xver: int
    name: bytes

    @property
    def tomb(self) -> bool:
        return bool(self.flags & FLAG_TOMB)

    @property
    def is_dir(self) -> bool:
        return self.kind == S_IFDIR

    def encode(self) -> bytes:
        return _REC.pack(self.parent, self.kind >> 12, self.flags, self.gen & 0xFFFFFFFF, self.size,
                         self.mtime_ns, self.ctime_ns, self.xver) + self.name

    @staticmethod
    def decode(raw: bytes) -> "FileRecord":
        parent, kind, flags, gen, size, mtime, ctime, xver = _REC.unpack_from(raw)
        # (tuple.__new__: the NamedTuple's own __new__ is a Python call, and records are
        # decoded once or twice per file a flush touches)
        return _new_tuple(FileRecord, (parent, kind << 12, flags, gen, size, mtime, ctime, xver,
                                       bytes(raw[_REC.size:])))


_new_tuple = tuple.__new__
_KEY_OF = itemgetter(0)  # a (key, value) pair's key


_PLACED_PREFIXES = (b"ext\0", b"owner\0", b"group\0", b"#size\0")
_NO_EXT_KEY = b"#none\0ext"  # nfsd/query/language.py: NO_EXT_KEY (the files without an ext)


def is_placed(key: bytes) -> bool:
    """Whether the postings of ``key`` have their files' places beside them (``places``):
    the single-valued stat fields a large listing is asked by (name keys hold one file each,
    and the content fields would cost a copy of every file's place per word)."""
    return key.startswith(_PLACED_PREFIXES) or key == _NO_EXT_KEY


def place_value(ino8: bytes, parent: int, name: bytes) -> bytes:
    """A ``places`` entry: ino, parent ino, the name's blake2b-64 (the listing cookie
    before its adjustment, nfsd/nfs3/dirlist.py), name."""
    return ino8 + INO.pack(parent) + hashlib.blake2b(name, digest_size=8).digest() + name


PLACE_NAME_AT = 24  # a ``places`` entry's name, after ino, parent and the name's hash


def posting_key(field: bytes, value: bytes) -> bytes:
    return field + b"\0" + value


EMPTY: frozenset[bytes] = frozenset()


def encode_attrs(stat_keys: frozenset[bytes], content_keys: frozenset[bytes]) -> bytes:
    """The two tiers' posting keys, each tier joined by NUL: every key holds exactly one NUL
    (between field and value), so splitting on NUL yields field, value, field, value..."""
    s = b"\0".join(stat_keys)
    return _U32.pack(len(s)) + s + b"\0".join(content_keys)


def decode_attrs(raw: bytes | None) -> tuple[frozenset[bytes], frozenset[bytes]]:
    if not raw:
        return EMPTY, EMPTY
    n, = _U32.unpack_from(raw)
    return _decode_tier(raw[4:4 + n]), _decode_tier(raw[4 + n:])


def _decode_tier(blob: bytes) -> frozenset[bytes]:
    if not blob:
        return EMPTY
    parts = iter(blob.split(b"\0"))
    return frozenset(field + b"\0" + value for field, value in zip(parts, parts))


#: A tier's keys: field NUL value, each followed by the NUL before the next or the tier's end
_KEY_PAIRS = re.compile(rb"([^\0]*\0[^\0]*)(?:\0|\Z)")


def posted_keys(raw: bytes | None) -> list[bytes]:
    """Every posting key of an encoded attrs record (both tiers), with no set built: what
    a removal deletes (``Writer.tombstone``, once per removed file; which of them are
    placed, ``Writer.placed_among`` tells from its memo).  One regex pass per tier finds
    each "field NUL value" pair as ``_decode_tier``'s split does (3.4 -> 2.7 µs for an
    empty file's ten keys against the split, zip, join and compress it replaced)."""
    if not raw:
        return []
    n, = _U32.unpack_from(raw)
    keys = _KEY_PAIRS.findall(raw, 4, 4 + n)
    if len(raw) > 4 + n:
        keys += _KEY_PAIRS.findall(raw, 4 + n)
    return keys


def field_values(raw: bytes, field: bytes) -> list[bytes]:
    """The values of one field in an encoded attrs record (both tiers)."""
    n, = _U32.unpack_from(raw)
    out: list[bytes] = []
    for blob in (raw[4:4 + n], raw[4 + n:]):
        if blob:
            parts = iter(blob.split(b"\0"))
            out.extend(v for f, v in zip(parts, parts) if f == field)
    return out


class Tables:
    """The named databases of one export, and reads over any transaction."""

    def __init__(self, env: lmdb.Environment, export_id: int) -> None:
        p = b"idx%d:" % export_id
        self.env = env
        self.files = env.open_db(p + b"files")
        self.children = env.open_db(p + b"children")
        self.attrs = env.open_db(p + b"attrs")
        self.postings = env.open_db(p + b"postings", dupsort=True, dupfixed=True)
        self.tombs = env.open_db(p + b"tombs")
        self.failed = env.open_db(p + b"failed")
        self.meta = env.open_db(p + b"meta")
        self.links = env.open_db(p + b"links")
        self.places = env.open_db(p + b"places", dupsort=True)

    def all_dbs(self) -> tuple[Any, ...]:
        return (self.files, self.children, self.attrs, self.postings, self.tombs, self.failed, self.meta,
                self.links, self.places)

    def reset_if_stale(self, root_ino: int, between: Callable[[], Any] | None = None) -> bool:
        """Start over when the layout changed or the export root is another directory; an
        index of an older schema that ``MIGRATES`` names is brought up to date in place
        (True: it was), in steps of their own transactions (``between`` runs after each:
        the caller's chance to drop the mapped pages), the schema written last, so a
        migration cut short starts again."""
        root = INO.pack(root_ino)
        with self.env.begin(write=True) as txn:
            schema = txn.get(b"schema", db=self.meta)
            if schema == SCHEMA and txn.get(b"root", db=self.meta) == root:
                return False
            migrate = MIGRATES.get(bytes(schema)) if schema is not None and txn.get(b"root", db=self.meta) == root \
                else None
            if migrate is None:
                self._reset(txn, root_ino)
                return False
        getattr(self, migrate)(between)
        with self.env.begin(write=True) as txn:
            txn.put(b"schema", SCHEMA, db=self.meta)
        return True

    def _reset(self, txn: lmdb.Transaction, root_ino: int) -> None:
        """Empty every table, for this root."""
        root = INO.pack(root_ino)
        version = txn.get(b"version", db=self.meta)
        for db in self.all_dbs():
            txn.drop(db, delete=False)
        txn.put(b"schema", SCHEMA, db=self.meta)
        txn.put(b"root", root, db=self.meta)
        # the counter survives a reset, so a cached result never matches a new index
        txn.put(b"version", b"%d" % (int(version or b"0") + 1), db=self.meta)
        txn.put(root, FileRecord(root_ino, S_IFDIR, 0, 0, 0, 0, 0, NO_XVER, b"").encode(), db=self.files)

    def build_places(self, txn: lmdb.Transaction) -> int:
        """Make ``places`` anew from the postings of the placed keys and the records, in one
        transaction; returns how many entries (``pysfsd check --repair``)."""
        txn.drop(self.places, delete=False)
        done, resume = 0, (b"", b"")  # type: tuple[int, tuple[bytes, bytes] | None]
        while resume is not None:
            n, resume = self._place_keys(txn, resume, 1 << 16)
            done += n
        return done

    def migrate_places(self, between: Callable[[], Any] | None = None, step: int = 1 << 17) -> int:
        """Schema 3 to 4: ``build_places`` in transactions of ``step`` entries, so neither
        the dirty pages of a transaction nor the pages it maps grow with the index (one
        transaction of four million entries peaked at 537 MB at 1M files)."""
        with self.env.begin(write=True) as txn:
            txn.drop(self.places, delete=False)
        done, resume = 0, (b"", b"")  # type: tuple[int, tuple[bytes, bytes] | None]
        while resume is not None:
            with self.env.begin(write=True) as txn:
                n, resume = self._place_keys(txn, resume, step)
            done += n
            if between is not None:
                between()
        return done

    def _place_keys(self, txn: lmdb.Transaction, start: tuple[bytes, bytes],
                    limit: int) -> tuple[int, tuple[bytes, bytes] | None]:
        """Place up to ``limit`` postings of the placed keys, in key then ino order (so the
        entries are appended) from (key, ino8) ``start`` on (an ino8 of b"": the whole
        key); returns how many, and where to go on from (None: all done)."""
        cur, out = txn.cursor(db=self.postings), txn.cursor(db=self.places)
        get, files = txn.get, self.files
        batch: list[tuple[bytes, bytes]] = []
        for prefix in sorted((*_PLACED_PREFIXES, _NO_EXT_KEY)):
            if start[0] > prefix and not start[0].startswith(prefix):
                continue  # done in an earlier step
            if start[0] >= prefix:
                # (past the key when its ino is gone: the next key)
                found = cur.set_range_dup(*start) or cur.set_range(start[0] + b"\0") if start[1] \
                    else cur.set_range(start[0])
            else:
                found = cur.set_range(prefix)
            while found:
                key = bytes(cur.key())
                if not key.startswith(prefix) or (prefix == _NO_EXT_KEY and key != prefix):
                    break
                for ino8 in cur.iternext_dup(keys=False):
                    if len(batch) >= limit:
                        out.putmulti(batch, dupdata=True)
                        return len(batch), (key, bytes(ino8))
                    raw = get(ino8, db=files)
                    if raw is not None:
                        batch.append((key, place_value(bytes(ino8), INO.unpack_from(raw)[0], bytes(raw[_REC.size:]))))
                found = cur.next_nodup()
        out.putmulti(batch, dupdata=True)
        return len(batch), None

    def places_differences(self, txn: lmdb.Transaction) -> tuple[int, int]:
        """(entries missing, entries not called for) of ``places``, against what the
        postings of the placed keys and the live records give (both in key, then ino order:
        one merge, nothing held): ``pysfsd check``, and the tests."""
        missing = extra = 0
        want = self._wanted_places(txn)
        got = iter(txn.cursor(db=self.places).iternext(keys=True, values=True))
        a, b = next(want, None), next(got, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a < b):
                missing += 1
                a = next(want, None)
            elif a is None or b < a:
                extra += 1
                b = next(got, None)
            else:
                a, b = next(want, None), next(got, None)
        return missing, extra

    def _wanted_places(self, txn: lmdb.Transaction) -> Iterator[tuple[bytes, bytes]]:
        cur = txn.cursor(db=self.postings)
        if not cur.first():
            return
        for key, ino8 in cur.iternext(keys=True, values=True):
            if not is_placed(key):
                continue
            raw = txn.get(ino8, db=self.files)
            if raw is not None and len(raw) >= _REC.size and not raw[FLAGS_AT] & FLAG_TOMB:
                yield bytes(key), place_value(bytes(ino8), INO.unpack_from(raw)[0], bytes(raw[_REC.size:]))

    def version(self, txn: lmdb.Transaction) -> int:
        return int(txn.get(b"version", db=self.meta) or b"0")

    def stat_version(self, txn: lmdb.Transaction) -> int:
        """The version of the last commit that changed what the stat tier answers (its
        postings, names, places): answers over stat fields alone stay valid across commits
        of content fields only (the content scan after a first stat pass)."""
        raw = txn.get(b"stat_version", db=self.meta)
        return int(raw) if raw is not None else self.version(txn)

    def file(self, txn: lmdb.Transaction, ino: int) -> FileRecord | None:
        raw = txn.get(INO.pack(ino), db=self.files)
        return FileRecord.decode(raw) if raw is not None else None

    def child(self, txn: lmdb.Transaction, parent: int, name: bytes) -> tuple[int, int] | None:
        """(ino, kind) of the entry ``name`` of directory ``parent``."""
        raw = txn.get(INO.pack(parent) + name, db=self.children)
        if raw is None:
            return None
        ino, kind = _CHILD.unpack(raw)
        return ino, kind << 12

    def listing(self, txn: lmdb.Transaction, parent: int) -> Iterator[tuple[bytes, int, int]]:
        """(name, ino, kind) of the recorded entries of a directory."""
        prefix = INO.pack(parent)
        cur = txn.cursor(db=self.children)
        if not cur.set_range(prefix):
            return
        for key, raw in cur:
            if key[:8] != prefix:
                break
            ino, kind = _CHILD.unpack(raw)
            yield key[8:], ino, kind << 12

    def keys_of(self, txn: lmdb.Transaction, ino: int) -> tuple[frozenset[bytes], frozenset[bytes]]:
        return decode_attrs(txn.get(INO.pack(ino), db=self.attrs))

    def links_of(self, txn: lmdb.Transaction, ino: int) -> list[tuple[int, bytes]]:
        """(parent, name) of a file's other names (besides its record's)."""
        prefix = INO.pack(ino)
        cur = txn.cursor(db=self.links)
        out: list[tuple[int, bytes]] = []
        if cur.set_range(prefix):
            for key in cur.iternext(keys=True, values=False):
                if key[:8] != prefix:
                    break
                out.append((INO.unpack_from(key, 8)[0], bytes(key[16:])))
        return out


class Writer:
    """A write transaction over the tables, opened on first use and committed in batches.

    Posting inserts, and the records of new files, are buffered and put sorted with
    ``putmulti``: far faster than single puts, and inode numbers of a fresh tree grow, so
    sorted records are appended and fill their pages (random order leaves them a third
    empty).  Reads of records through the writer see the buffer; any other write, and a
    listing, write it out first (``settle``).  ``changed``
    records whether a commit alters what queries can see (postings, names, places), so the
    index's ``version`` moves exactly then."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables
        self._txn: lmdb.Transaction | None = None
        self._adds: list[tuple[bytes, bytes]] = []
        # the files (inode keys) with postings in ``_adds`` (or places in ``_new_places``):
        # only deleting or moving one of theirs must write the buffers first (a rename
        # storm's removals then keep them batched)
        self._adds_of: set[bytes] = set()
        self._new_files: dict[bytes, bytes] = {}
        self._new_children: dict[bytes, bytes] = {}
        self._new_attrs: dict[bytes, bytes] = {}
        self._new_places: list[tuple[bytes, bytes]] = []
        self._seen_keys: set[bytes] = set()    # posting keys classified by ``add_new``...
        self._placed_keys: set[bytes] = set()  # ...and those of them that are placed
        # (stat tier shared, content tier) -> their parts ``add_created`` writes for each file
        self._created_parts: dict[tuple[frozenset[bytes], frozenset[bytes]],
                                  tuple[frozenset[bytes], bytes, bytes, tuple[bytes, ...]]] = {}
        self.ops = 0
        self.changed = False
        self.stat_changed = False  # a change the stat tier's answers show (see ``stat_version``)
        self.opened_at = 0.0

    @property
    def txn(self) -> lmdb.Transaction:
        if self._txn is None:
            self._txn = self.t.env.begin(write=True)
            self.opened_at = time.monotonic()
        return self._txn

    @property
    def is_open(self) -> bool:
        return self._txn is not None

    def commit(self) -> int | None:
        """Commit; returns the new version when queries can see a difference."""
        if self._txn is None:
            return None
        self.settle()
        self._write_adds()
        version = None
        if self.changed:
            version = self.t.version(self._txn) + 1
            self._txn.put(b"version", b"%d" % version, db=self.t.meta)
            if self.stat_changed:
                self._txn.put(b"stat_version", b"%d" % version, db=self.t.meta)
        self._txn.commit()
        self._txn = None
        self.ops = 0
        self.changed = self.stat_changed = False
        return version

    def abort(self) -> None:
        if self._txn is not None:
            self._txn.abort()
        self._txn = None
        self._adds.clear()
        self._new_places.clear()
        self._adds_of.clear()
        self._new_files.clear()
        self._new_children.clear()
        self._new_attrs.clear()
        self.ops = 0
        self.changed = self.stat_changed = False

    def settle(self) -> None:
        """Write out the buffered records of new files."""
        if not (self._new_files or self._new_children or self._new_attrs):
            return  # (called before every other write: mostly with nothing buffered)
        for pending, db in ((self._new_files, self.t.files), (self._new_children, self.t.children),
                            (self._new_attrs, self.t.attrs)):
            if pending:
                self.txn.cursor(db=db).putmulti(sorted(pending.items()))
                pending.clear()

    def _write_adds(self) -> None:
        # grouped by key (a stable sort on the key alone), each key's files in the order
        # they came: comparing (key, ino) tuples whose keys are mostly equal (ten keys per
        # new file, nine of them shared) cost several µs per file; LMDB finds every pair
        # from the root either way, so the order within a key buys nothing
        if self._adds:
            self._adds.sort(key=_KEY_OF)
            self.txn.cursor(db=self.t.postings).putmulti(self._adds, dupdata=True)
            self._adds.clear()
            self._adds_of.clear()
        if self._new_places:
            self._new_places.sort(key=_KEY_OF)
            self.txn.cursor(db=self.t.places).putmulti(self._new_places, dupdata=True)
            self._new_places.clear()

    # -- places (kept in step with the placed postings and the records) --------------------
    def _unplace(self, key: bytes, ino8: bytes, cur: lmdb.Cursor | None = None) -> None:
        if cur is None:
            cur = self.txn.cursor(db=self.t.places)
        if cur.set_range_dup(key, ino8) and cur.value()[:8] == ino8:
            cur.delete()

    def _place(self, key: bytes, ino8: bytes, rec: FileRecord) -> None:
        self._unplace(key, ino8)  # at most one entry per file and key, whatever came before
        self.txn.put(key, place_value(ino8, rec.parent, rec.name), db=self.t.places, dupdata=True)

    def _replace_all(self, ino8: bytes, rec: FileRecord | None) -> None:
        """The file's record changed place (or appeared): every placed key it holds follows."""
        s, c = self.keys_of(INO.unpack(ino8)[0])
        placed = [k for k in s | c if is_placed(k)]
        if placed:
            if ino8 in self._adds_of:  # its buffered places go first
                self._write_adds()
            for k in placed:
                if rec is None:
                    self._unplace(k, ino8)
                else:
                    self._place(k, ino8, rec)

    # -- reads through this transaction ----------------------------------------------------
    def file(self, ino: int) -> FileRecord | None:
        raw = self._new_files.get(INO.pack(ino))
        return FileRecord.decode(raw) if raw is not None else self.t.file(self.txn, ino)

    def child(self, parent: int, name: bytes) -> tuple[int, int] | None:
        raw = self._new_children.get(INO.pack(parent) + name)
        if raw is not None:
            ino, kind = _CHILD.unpack(raw)
            return ino, kind << 12
        return self.t.child(self.txn, parent, name)

    def keys_of(self, ino: int) -> tuple[frozenset[bytes], frozenset[bytes]]:
        raw = self._new_attrs.get(INO.pack(ino))
        return decode_attrs(raw) if raw is not None else self.t.keys_of(self.txn, ino)

    def listing(self, parent: int) -> list[tuple[bytes, int, int]]:
        self.settle()
        return list(self.t.listing(self.txn, parent))

    def links_of(self, ino: int) -> list[tuple[int, bytes]]:
        self.settle()
        return self.t.links_of(self.txn, ino)

    def is_link(self, ino: int, parent: int, name: bytes) -> bool:
        self.settle()
        return self.txn.get(INO.pack(ino) + INO.pack(parent) + name, db=self.t.links) is not None

    def put_link(self, ino: int, parent: int, name: bytes) -> None:
        self.settle()
        self.txn.put(INO.pack(ino) + INO.pack(parent) + name, b"", db=self.t.links)
        self.ops += 1
        self.changed = self.stat_changed = True

    def del_link(self, ino: int, parent: int, name: bytes) -> bool:
        self.settle()
        self.ops += 1
        gone = self.txn.delete(INO.pack(ino) + INO.pack(parent) + name, db=self.t.links)
        self.changed |= gone
        self.stat_changed |= gone
        return gone

    # -- writes --------------------------------------------------------------------------
    def put_file(self, ino: int, rec: FileRecord, moved: bool = False) -> None:
        self.settle()
        key = INO.pack(ino)
        old = self.txn.get(key, db=self.t.files)
        self.txn.put(key, rec.encode(), db=self.t.files)
        self.ops += 1
        # its places follow a new parent or name; a tombstone has none (its postings went
        # with it, and set_keys places those it gets back)
        if old is None or (not old[FLAGS_AT] & FLAG_TOMB and not rec.flags & FLAG_TOMB
                           and (old[:8] != INO.pack(rec.parent) or old[_REC.size:] != rec.name)):
            self._replace_all(key, rec)
        if moved:
            self.changed = self.stat_changed = True

    def put_child(self, parent: int, name: bytes, ino: int, kind: int) -> None:
        self.settle()
        self.txn.put(INO.pack(parent) + name, _CHILD.pack(ino, kind >> 12), db=self.t.children)
        self.ops += 1

    def del_child(self, parent: int, name: bytes) -> None:
        self.settle()
        self.txn.delete(INO.pack(parent) + name, db=self.t.children)
        self.ops += 1

    def del_child_of(self, parent: int, name: bytes, ino: int) -> None:
        """Drop the entry ``name`` of ``parent`` if it still names ``ino`` (one look-up: the
        entry is taken out, and put back in the rare case it names another inode now)."""
        key = INO.pack(parent) + name
        if key in self._new_children:  # (else the buffers stay: creates and removals mixed
            self.settle()              # in one flush keep their new records batched)
        raw = self.txn.pop(key, db=self.t.children)
        if raw is not None and _CHILD.unpack(raw)[0] != ino:
            self.txn.put(key, raw, db=self.t.children)
        self.ops += 1

    def pop_child(self, parent: int, name: bytes) -> tuple[int, int] | None:
        """Drop the entry ``name`` of ``parent``; (ino, kind) it named, if any: a vanished
        name's look-up and deletion in one (``Index._gone``)."""
        key = INO.pack(parent) + name
        if key in self._new_children:
            self.settle()
        raw = self.txn.pop(key, db=self.t.children)
        if raw is None:
            return None
        self.ops += 1
        ino, kind = _CHILD.unpack(raw)
        return ino, kind << 12

    def set_keys(self, ino: int, old: tuple[frozenset[bytes], frozenset[bytes]],
                 new: tuple[frozenset[bytes], frozenset[bytes]], posted: bool = True) -> None:
        """Replace a file's attrs ``old`` by ``new`` (stat tier, content tier); ``posted``
        tells whether ``old``'s postings are in the index (not for a tombstone)."""
        if old == new and posted:
            return
        self.settle()
        key = INO.pack(ino)
        if new[0] or new[1]:
            self.txn.put(key, encode_attrs(*new), db=self.t.attrs)
        else:
            self.txn.delete(key, db=self.t.attrs)
        old_all = (old[0] | old[1] if old[1] else old[0]) if posted else EMPTY
        new_all = new[0] | new[1] if new[1] else new[0]
        removed = old_all - new_all
        if removed:
            if key in self._adds_of:  # its buffered postings and places go first
                self._write_adds()
            txn = self.txn
            for _ in map(txn.delete, removed, repeat(key), repeat(self.t.postings)):
                pass
            for k in removed:
                if is_placed(k):
                    self._unplace(k, key)
        added = new_all - old_all
        if added:
            placed = [k for k in added if is_placed(k)]
            if placed:
                raw = self.txn.get(key, db=self.t.files)
                if raw is not None and not raw[FLAGS_AT] & FLAG_TOMB:  # else put_file places them
                    if key in self._adds_of:
                        self._write_adds()
                    rec = FileRecord.decode(raw)
                    for k in placed:
                        self._place(k, key, rec)
            self._adds.extend(zip(added, repeat(key)))
            self._adds_of.add(key)
        self.ops += 1 + len(removed) + len(added)
        if removed or added:
            self.changed = True
            if not self.stat_changed:
                self.stat_changed = not (old[0].isdisjoint(removed) and old[0].isdisjoint(added)
                                         and new[0].isdisjoint(removed) and new[0].isdisjoint(added))

    def add_new(self, ino: int, rec: FileRecord, stat_keys: frozenset[bytes],
                content_keys: frozenset[bytes], replacing: bool = False) -> None:
        """A file the index never saw (the scan's hot path: no reads, buffered postings);
        ``replacing``: after ``reuse``, over a tombstone's record and attrs."""
        key = INO.pack(ino)
        if replacing and not (stat_keys or content_keys):
            self.settle()
            self.txn.delete(key, db=self.t.attrs)
        self._new_files[key] = rec.encode()
        self._new_children[INO.pack(rec.parent) + rec.name] = _CHILD.pack(ino, rec.kind >> 12)
        if stat_keys or content_keys:
            self._new_attrs[key] = encode_attrs(stat_keys, content_keys)
            keys = stat_keys | content_keys if content_keys else stat_keys
            self._adds.extend(zip(keys, repeat(key)))
            self._adds_of.add(key)
            self.changed = True
            self.stat_changed |= bool(stat_keys)
            placed = self.placed_among(keys)
            if placed:
                place = place_value(key, rec.parent, rec.name)
                self._new_places.extend(zip(placed, repeat(place)))
        self.ops += 3 + len(stat_keys) + len(content_keys)

    def placed_among(self, keys: AbstractSet[bytes]) -> set[bytes]:
        """Which of ``keys`` are placed (``is_placed``), from a bounded memo of the keys
        seen: set operations in C; only unseen keys, mostly a file's name key, are
        classified one by one (``add_new``, ``tombstone``: 1.1 -> 0.4 µs for an empty
        file's ten keys against testing each)."""
        unseen = keys - self._seen_keys
        if unseen:
            if len(self._seen_keys) > MAX_SEEN_KEYS:
                self._seen_keys.clear()
                self._placed_keys.clear()
                unseen = keys
            self._seen_keys.update(unseen)
            for k in unseen:  # (mostly the name key alone: a loop, no generator)
                if k.startswith(_PLACED_PREFIXES) or k == _NO_EXT_KEY:
                    self._placed_keys.add(k)
        return self._placed_keys.intersection(keys)

    def add_created(self, ino: int, rec: FileRecord, shared: frozenset[bytes], name_key: bytes,
                    content_keys: frozenset[bytes]) -> None:
        """``add_new`` of a file whose stat tier is ``shared`` (keys its kind of file shares,
        none of them a name key) and ``name_key``, its content tier ``content_keys``
        (``Extractor.created_keys``): what the two tiers share is encoded and classified
        once per kind (``_shared_parts``), so a file costs its name's key and its own
        records.  After ``reuse`` too: its records and attrs are written over."""
        key = INO.pack(ino)
        parts = self._created_parts.get((shared, content_keys))
        if parts is None:
            parts = self._shared_parts(shared, content_keys)
        keys, stat_joined, content_joined, placed = parts
        self._new_files[key] = rec.encode()
        self._new_children[INO.pack(rec.parent) + rec.name] = _CHILD.pack(ino, rec.kind >> 12)
        # (a tier's keys in any order: each holds one NUL, so the pairs split back alike)
        s = stat_joined + name_key
        self._new_attrs[key] = _U32.pack(len(s)) + s + content_joined
        self._adds.extend(zip(keys, repeat(key)))
        self._adds.append((name_key, key))
        self._adds_of.add(key)
        self.changed = self.stat_changed = True
        if placed:  # (a name key never is)
            place = place_value(key, rec.parent, rec.name)
            self._new_places.extend(zip(placed, repeat(place)))
        self.ops += 4 + len(keys)

    def _shared_parts(self, shared: frozenset[bytes], content_keys: frozenset[bytes]
                      ) -> tuple[frozenset[bytes], bytes, bytes, tuple[bytes, ...]]:
        """For ``add_created``: the keys of both tiers but the name's, the stat tier joined
        (ready for a name key after it), the content tier joined, the placed keys."""
        keys = shared | content_keys
        parts = (keys, b"".join(k + b"\0" for k in shared), b"\0".join(content_keys),
                 tuple(k for k in keys if is_placed(k)))
        if len(self._created_parts) >= MAX_CREATED_PARTS:
            self._created_parts.clear()
        self._created_parts[(shared, content_keys)] = parts
        return parts

    def tombstone(self, ino: int, rec: FileRecord) -> None:
        """Take a vanished file out of every posting; keep its record and attrs a while.
        (A removal's hot path: the postings come from the raw attrs, no sets or records
        are built.)"""
        key = INO.pack(ino)
        if key in self._new_files or key in self._new_attrs:  # (else no buffer holds it)
            self.settle()
        t, txn = self.t, self.txn
        keys = posted_keys(txn.get(key, db=t.attrs))
        if keys:
            if key in self._adds_of:  # its buffered postings and places go first
                self._write_adds()
            for _ in map(txn.delete, keys, repeat(key), repeat(t.postings)):  # (no Python loop body)
                pass
            placed = self.placed_among(set(keys))
            if placed:
                # its places hold exactly the record's parent and name (``put_file`` moves them
                # with it): deleted by their whole value, one call each, no cursor walk; one
                # that differs anyway is found by a walk from the inode's prefix
                gone = list(map(txn.delete, placed, repeat(place_value(key, rec.parent, rec.name)),
                                repeat(t.places)))
                if not all(gone):
                    cur = txn.cursor(db=t.places)
                    for k, found in zip(placed, gone):  # (the same set, unchanged: the same order)
                        if not found:
                            self._unplace(k, key, cur)
        txn.put(key, _REC.pack(rec.parent, rec.kind >> 12, rec.flags | FLAG_TOMB, rec.gen & 0xFFFFFFFF, rec.size,
                               rec.mtime_ns, rec.ctime_ns, rec.xver) + rec.name, db=t.files)
        txn.put(key, INO.pack(time.time_ns()), db=t.tombs)
        txn.delete(key, db=t.failed)
        self.ops += 3 + len(keys)
        self.changed = self.stat_changed = True

    def revive(self, ino: int) -> None:
        self.txn.delete(INO.pack(ino), db=self.t.tombs)

    def reuse(self, ino: int) -> None:
        """A tombstone's inode number now names an unrelated file: forget the tombstone
        (record, attrs, vanishing time), so the file goes in as new (``add_new`` with
        ``replacing``, which must follow).  Its
        postings and places went at ``tombstone``, its failures too."""
        # (its record and attrs stay: ``add_new(replacing=True)``, which must follow,
        # overwrites them, or deletes the attrs of a file without keys; and no ``settle``:
        # ``tombs`` has no buffer, so the buffered records of new files before it stay
        # in one sorted batch, not one ``putmulti`` each)
        self.txn.delete(INO.pack(ino), db=self.t.tombs)
        self.ops += 1

    def purge_tombs(self, before_ns: int) -> list[int]:
        """Forget files that vanished before ``before_ns`` and never came back; their inode
        numbers (the handle table drops its tombstones of them too)."""
        self.settle()
        txn = self.txn
        doomed = [key for key, raw in txn.cursor(db=self.t.tombs) if INO.unpack(raw)[0] < before_ns]
        for key in doomed:
            raw = txn.get(key, db=self.t.files)
            if raw is not None and FileRecord.decode(raw).tomb:
                txn.delete(key, db=self.t.files)
                txn.delete(key, db=self.t.attrs)
            txn.delete(key, db=self.t.tombs)
        self.ops += 3 * len(doomed)
        return [INO.unpack(key)[0] for key in doomed]

    def failed_of(self, ino: int) -> list[str]:
        raw = self.txn.get(INO.pack(ino), db=self.t.failed)
        return bytes(raw).decode().split(",") if raw else []

    def set_failed(self, ino: int, names: list[str]) -> None:
        key = INO.pack(ino)
        if names:
            self.txn.put(key, ",".join(names).encode(), db=self.t.failed)
        else:
            self.txn.delete(key, db=self.t.failed)
