"""``pysfsd check`` of one export's index (``nfsd.index.tables``) against the files.

What each kind of difference means, and how ``--repair`` fixes it:

``foreign``      the tables describe another export root or layout: emptied, then rescanned;
``malformed``    a record, attribute set or posting of the wrong shape: dropped (the file is
                 then rescanned);
``vanished``     a file or directory recorded but no longer on disk: forgotten with its
                 postings and listing;
``missing``      an object on disk the index does not hold: added by a rescan;
``kind``, ``place``, ``stale``
                 the recorded kind, parent and name, or size, mtime and ctime are not the
                 file's any more: the rescan brings them up to date;
``unextracted``  a content tier never extracted (a scan cut short), or by other transducers,
                 or for another name (a rename that changed which transducers apply):
                 the rescan extracts it;
``fields``       the stat-tier fields (name, owner, size...) differ from what the file's
                 name and attributes give now: refreshed by the rescan;
``child``        a directory listing entry that disagrees with the file's record (and is not
                 one of its other names): dropped;
``link``         another name of a file (``links``) that is not on disk, or of no linked
                 file: dropped, then the rescan records what is there;
``unlisted``     a record missing from its directory's listing: listed again;
``unposted``     a (field, value) the file's attributes hold without its posting: posted;
``orphan``       a posting, attribute set, tombstone date or failure entry of no such file
                 (or, for a posting, of a file whose attributes do not hold it): dropped;
``places``       the places beside the postings (``places``) differ from what the postings
                 and records give: made anew from them;
``layout``       an index of an older layout that the server brings up to date (``MIGRATES``):
                 migrated, then checked again;
``undated``      a tombstone with no date (it would never be purged): dated now;
``unknown``      a failure naming no transducer of this server: the file is re-extracted.

Postings are checked by probing every pair the attributes call for, and looked through one
by one for orphans only when their count says some exist.
"""
from __future__ import annotations

import os
import stat
import time
from typing import Iterable, Sequence

import lmdb

from .disk import DiskTree
from .report import Difference, name_text
from ..index import Index
from ..index.extract import Extractor
from ..fs.tags import FallbackStore, UserFieldReader
from ..index.fields import valid_field, valid_value
from ..query.language import is_hidden_field
from ..index.tables import (_CHILD as CHILD, _REC as REC, FLAG_LINKED, INO, MIGRATES, NO_XVER, SCHEMA,
                            FileRecord, Tables, decode_attrs)
from ..index.transducers.interface import Transducer

S_IFDIR = stat.S_IFDIR
AREA = "index"
EXTRACTION_FAILURE_NAMES = frozenset({"read"})  # failures the extractor itself reports


def check(env: lmdb.Environment, eid: int, tree: DiskTree, extractor: Extractor) -> list[Difference]:
    t = Tables(env, eid)
    tags = FallbackStore(env, eid)  # opened (maybe created) before the read transaction
    with env.begin() as txn:
        return _Checker(t, txn, eid, tree, extractor, tags).run()


class _Checker:
    def __init__(self, t: Tables, txn: lmdb.Transaction, eid: int, tree: DiskTree, x: Extractor,
                 tags: FallbackStore) -> None:
        self.t, self.txn, self.tree, self.x = t, txn, tree, x
        self.user_fields = UserFieldReader(tags)  # tags are part of the stat tier
        self.prefix = f"export {eid}"
        self.out: list[Difference] = []
        self.records: dict[int, FileRecord] = {}
        self.links: dict[int, list[tuple[int, bytes]]] = {}  # ino -> its other names

    def diff(self, kind: str, subject: str, detail: str, fix: tuple | None) -> None:
        self.out.append(Difference(AREA, kind, f"{self.prefix} {subject}", detail, fix))

    def run(self) -> list[Difference]:
        t, txn, root = self.t, self.txn, self.tree.root_ino
        schema = txn.get(b"schema", db=t.meta)
        if schema in MIGRATES and txn.get(b"root", db=t.meta) == INO.pack(root):
            self.diff("layout", "tables", f"schema {schema.decode()} (now {SCHEMA.decode()}): migrated when the server "
                      "or --repair opens it", ("migrate",))
            return self.out
        if schema != SCHEMA or txn.get(b"root", db=t.meta) != INO.pack(root):
            self.diff("foreign", "tables", "made for another export root or layout", ("reset",))
            return self.out
        self._links()
        self._files()
        self._missing()
        self._children()
        live_attrs = self._attrs()
        self._postings(live_attrs)
        self._places()
        self._tombs()
        self._failed()
        return self.out

    def _subject(self, ino: int) -> str:
        path = self.tree.path_of(ino)
        return f"ino {ino}" + (f" {name_text(path)}" if path is not None else "")

    # -- files ---------------------------------------------------------------------------
    def _files(self) -> None:
        t, tree = self.t, self.tree
        for key, raw in self.txn.cursor(db=t.files):
            key, raw = bytes(key), bytes(raw)
            if len(key) != INO.size or len(raw) < REC.size:
                self.diff("malformed", f"record {key.hex()}", "not a file record", ("forget", key))
                continue
            ino = INO.unpack(key)[0]
            rec = FileRecord.decode(raw)
            self.records[ino] = rec
            subject = self._subject(ino)
            if ino == tree.root_ino or rec.tomb:
                if rec.tomb and self.txn.get(key, db=t.tombs) is None:
                    self.diff("undated", subject, "a tombstone without the time it vanished",
                              ("put", t.tombs, key, INO.pack(time.time_ns())))
                continue
            was = f"recorded as {name_text(rec.name)} in {rec.parent}"
            disk = tree.objects.get(ino)
            if disk is None:
                self.diff("vanished", subject, f"{was}: no such object on disk", ("forget", key))
            elif disk.kind != rec.kind:
                self.diff("kind", subject, f"{was} as mode {rec.kind:o}, it is {disk.kind:o}", ("scan",))
            elif (rec.parent, rec.name) not in disk.places:
                self.diff("place", subject, f"{was}: not there any more", ("scan",))
            elif rec.kind != S_IFDIR:
                self._file_state(key, subject, rec, disk.st)

    def _file_state(self, key: bytes, subject: str, rec: FileRecord, st) -> None:
        if (rec.size, rec.mtime_ns, rec.ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            self.diff("stale", subject, f"recorded size {rec.size} mtime {rec.mtime_ns} ctime {rec.ctime_ns}, "
                      f"on disk {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}", ("scan",))
        elif self.x.content_tier and rec.xver != self.x.xver_for(rec.name, st):
            what = "never extracted" if rec.xver == NO_XVER else "extracted by other transducers or for another name"
            self.diff("unextracted", subject, f"content fields {what}", ("scan",))
        else:
            ino = INO.unpack(key)[0]
            stored = self.t.keys_of(self.txn, ino)[0]
            fresh = self.x.stat_keys(rec.name, st).keys | self._user_keys(ino, st)
            if rec.flags & FLAG_LINKED:  # every name's fields
                fresh = fresh.union(*(self.x.stat_keys(n, st).keys for _, n in self.links.get(ino, ())))
            if stored != fresh:
                gone, new = sorted(stored - fresh)[:3], sorted(fresh - stored)[:3]
                self.diff("fields", subject, f"stat fields {_keys_text(gone)} should be {_keys_text(new)}",
                          ("refresh", key, False))

    def _user_keys(self, ino: int, st: os.stat_result) -> frozenset[bytes]:
        path = self.tree.path_of(ino)
        if path is None:
            return frozenset()
        where = os.path.join(os.fsencode(self.tree.root_path), path)
        return frozenset(self.user_fields.keys_at(where, st, self.txn))

    def _missing(self) -> None:
        for ino, disk in self.tree.objects.items():
            if ino == self.tree.root_ino:
                continue
            rec = self.records.get(ino)
            if rec is None or rec.tomb:
                self.diff("missing", self._subject(ino), "on disk, not in the index", ("scan",))

    def _live(self, ino: int) -> FileRecord | None:
        rec = self.records.get(ino)
        return rec if rec is not None and not rec.tomb else None

    def _vanished(self, ino: int) -> bool:
        """A live record of an object no longer on disk: its one difference is ``vanished``
        (forgetting it takes its listing entry and postings along)."""
        return ino not in self.tree.objects

    # -- other names of hard-linked files -------------------------------------------------
    def _links(self) -> None:
        t = self.t
        for key in self.txn.cursor(db=t.links).iternext(keys=True, values=False):
            key = bytes(key)
            if len(key) <= 2 * INO.size:
                self.diff("malformed", f"link {key.hex()}", "not a link entry", ("delete", t.links, key))
                continue
            ino, parent = INO.unpack_from(key)[0], INO.unpack_from(key, INO.size)[0]
            name = key[2 * INO.size:]
            raw = self.txn.get(key[:INO.size], db=t.files)
            rec = FileRecord.decode(bytes(raw)) if raw is not None and len(raw) >= REC.size else None
            disk = self.tree.objects.get(ino)
            if rec is None or rec.tomb or not rec.flags & FLAG_LINKED:
                self.diff("link", f"link {name_text(name)} in {parent}", f"of ino {ino}, which is not a linked file",
                          ("delete", t.links, key))
            elif disk is not None and (parent, name) not in disk.places:
                self.diff("link", f"link {name_text(name)} in {parent}", f"ino {ino} is no longer there",
                          ("delete", t.links, key))
                self.diff("place", self._subject(ino), f"recorded under {name_text(name)} in {parent}", ("scan",))
            else:
                self.links.setdefault(ino, []).append((parent, name))

    # -- listings ------------------------------------------------------------------------
    def _children(self) -> None:
        t = self.t
        listed: set[int] = set()
        for key, raw in self.txn.cursor(db=t.children):
            key, raw = bytes(key), bytes(raw)
            if len(key) <= INO.size or len(raw) != CHILD.size:
                self.diff("malformed", f"listing entry {key.hex()}", "not a listing entry", ("delete", t.children, key))
                continue
            parent, name = INO.unpack_from(key)[0], key[INO.size:]
            ino, kind = CHILD.unpack(raw)
            rec = self._live(ino)
            if rec is not None and rec.kind == kind << 12 and (parent, name) in self.links.get(ino, ()):
                continue  # another name of a linked file
            if rec is None or (rec.parent, rec.name, rec.kind) != (parent, name, kind << 12) or ino == self.tree.root_ino:
                self.diff("child", f"entry {name_text(name)} of {parent}",
                          f"lists ino {ino}, whose record " + ("is gone" if rec is None else
                                                              f"says {name_text(rec.name)} in {rec.parent}"),
                          ("delete", t.children, key))
            else:
                listed.add(ino)
        for ino, places in self.links.items():
            rec = self._live(ino)
            for parent, name in places:
                if rec is not None and not self._vanished(ino) and self.t.child(self.txn, parent, name) != (ino, rec.kind):
                    self.diff("unlisted", self._subject(ino), f"not in the listing of {parent} as {name_text(name)}",
                              ("put", t.children, INO.pack(parent) + name, CHILD.pack(ino, rec.kind >> 12)))
        for ino, rec in self.records.items():
            if not rec.tomb and ino != self.tree.root_ino and ino not in listed and not self._vanished(ino):
                self.diff("unlisted", self._subject(ino),
                          f"not in the listing of {rec.parent} as {name_text(rec.name)}",
                          ("put", t.children, INO.pack(rec.parent) + rec.name, CHILD.pack(ino, rec.kind >> 12)))

    # -- attributes and postings ---------------------------------------------------------
    def _attrs(self) -> dict[bytes, frozenset[bytes]]:
        """Every live file's posting keys (ino as 8 bytes -> keys), checking the attrs table."""
        t = self.t
        live: dict[bytes, frozenset[bytes]] = {}
        for key, raw in self.txn.cursor(db=t.attrs):
            key, raw = bytes(key), bytes(raw)
            ino = INO.unpack(key)[0] if len(key) == INO.size else -1
            rec = self.records.get(ino)
            if rec is None:
                self.diff("orphan", f"attributes {key.hex()}", "of no recorded file", ("delete", t.attrs, key))
                continue
            try:
                tiers = decode_attrs(raw)
                keys = tiers[0] | tiers[1]
                if not all(_valid_key(k) for k in keys):
                    raise ValueError("invalid field or value")
            except Exception as exc:
                self.diff("malformed", f"attributes of {self._subject(ino)}", str(exc), ("drop_attrs", key))
                continue
            if not rec.tomb:
                live[key] = keys
        return live

    def _postings(self, live: dict[bytes, frozenset[bytes]]) -> None:
        t, txn = self.t, self.txn
        cur = txn.cursor(db=t.postings)
        present = 0
        for ino8, keys in live.items():
            vanished = self._vanished(INO.unpack(ino8)[0])
            for k in keys:
                if cur.set_key_dup(k, ino8):
                    present += 1
                elif not vanished:
                    self.diff("unposted", f"{self._subject(INO.unpack(ino8)[0])}", f"{_keys_text([k])} not posted",
                              ("put", t.postings, k, ino8))
        if int(txn.stat(t.postings)["entries"]) == present:
            return
        for raw_key, raw_ino in cur.iternext(keys=True, values=True) if cur.first() else ():
            posting, ino8 = bytes(raw_key), bytes(raw_ino)
            held = live.get(ino8)
            if held is None or posting not in held:
                ino = INO.unpack(ino8)[0] if len(ino8) == INO.size else -1
                self.diff("orphan", f"posting {_keys_text([posting])} ino {ino}",
                          "no live file's attributes hold it", ("delete", t.postings, posting, ino8))

    def _places(self) -> None:
        missing, extra = self.t.places_differences(self.txn)
        if missing or extra:
            self.diff("places", "places", f"{missing} missing, {extra} not called for by the postings and records",
                      ("places",))

    # -- tombstones and failures ---------------------------------------------------------
    def _tombs(self) -> None:
        t = self.t
        for key, raw in self.txn.cursor(db=t.tombs):
            key = bytes(key)
            rec = self.records.get(INO.unpack(key)[0]) if len(key) == INO.size else None
            if rec is None or not rec.tomb or len(raw) != INO.size:
                self.diff("orphan", f"tombstone date {key.hex()}", "of no tombstone", ("delete", t.tombs, key))

    def _failed(self) -> None:
        t = self.t
        names = {tr.name for tr in self.x.stat_tier + self.x.content_tier} | EXTRACTION_FAILURE_NAMES
        for key, raw in self.txn.cursor(db=t.failed):
            key, raw = bytes(key), bytes(raw)
            ino = INO.unpack(key)[0] if len(key) == INO.size else None
            if ino is None or self._live(ino) is None:
                self.diff("orphan", f"failure {key.hex()}", "of no live file", ("delete", t.failed, key))
                continue
            unknown = set(raw.decode(errors="replace").split(",")) - names
            if unknown:
                self.diff("unknown", f"failure of {self._subject(ino)}",
                          f"names no transducer of this server: {', '.join(sorted(unknown))}",
                          ("refresh", key, True))


def _valid_key(k: bytes) -> bool:
    field, sep, value = k.partition(b"\0")
    return bool(sep) and (valid_field(field) or is_hidden_field(field)) and valid_value(value)


def _keys_text(keys: Iterable[bytes]) -> str:
    return "[" + ", ".join(k.replace(b"\0", b"=").decode(errors="backslashreplace") for k in keys) + "]"


# -- repair ------------------------------------------------------------------------------
_ORDER = {"reset": 0, "migrate": 0, "forget": 1, "drop_attrs": 1, "delete": 2, "put": 3, "places": 4, "refresh": 4,
          "scan": 5}


def repair(env: lmdb.Environment, eid: int, root: str, diffs: Sequence[Difference],
           transducers: Sequence[Transducer] | None) -> int:
    """Fix what the differences call for directly, then rescan (which brings records, the
    listing and the content tier in line with the files); returns the fixes applied."""
    fixes = sorted((d.fix for d in diffs if d.fix is not None), key=lambda f: _ORDER[f[0]])
    if not fixes:
        return 0
    t = Tables(env, eid)
    if fixes[0][0] == "reset":
        with env.begin(write=True) as txn:
            txn.put(b"schema", b"", db=t.meta)  # reset_if_stale (in Index) then starts over
    elif fixes[0][0] != "migrate":  # a migration is Index's own (Tables.reset_if_stale)
        with env.begin(write=True) as txn:
            for fix in fixes:
                _apply(t, txn, fix)
            t.build_places(txn)  # the fixes to postings and records moved what it derives from
            version = t.version(txn) + 1  # what a query cached before may have changed
            txn.put(b"version", b"%d" % version, db=t.meta)
    index = Index(env, root, eid, transducers=transducers)
    try:
        index.scan()
    finally:
        index.close()
    env.sync(True)
    return len(fixes)


def _apply(t: Tables, txn: lmdb.Transaction, fix: tuple) -> None:
    op = fix[0]
    if op == "forget":
        _forget(t, txn, fix[1])
    elif op == "drop_attrs":
        txn.delete(fix[1], db=t.attrs)
        _refresh(t, txn, fix[1], reextract=True)
    elif op == "delete":  # ("delete", db, key[, value of a dupsort database])
        txn.delete(fix[2], fix[3] if len(fix) > 3 else b"", db=fix[1])
    elif op == "put":
        txn.put(fix[2], fix[3], db=fix[1])
    elif op == "refresh":
        _refresh(t, txn, fix[1], reextract=fix[2])
    # "places": made anew once every fix is applied (``repair``)


def _forget(t: Tables, txn: lmdb.Transaction, key: bytes) -> None:
    """Drop a record and everything hanging from it: postings, listing entries, dates."""
    raw = txn.get(key, db=t.files)
    if raw is not None and len(raw) >= REC.size and len(key) == INO.size:
        rec = FileRecord.decode(bytes(raw))
        found = txn.get(INO.pack(rec.parent) + rec.name, db=t.children)
        if found is not None and bytes(found[:INO.size]) == key:
            txn.delete(INO.pack(rec.parent) + rec.name, db=t.children)
    try:
        found_attrs = txn.get(key, db=t.attrs)
        stat_keys, content_keys = decode_attrs(bytes(found_attrs) if found_attrs is not None else None)
    except Exception:
        stat_keys = content_keys = frozenset()  # the orphan pass of the next check finds them
    for k in stat_keys | content_keys:
        txn.delete(k, key, db=t.postings)
    cur = txn.cursor(db=t.children)
    while cur.set_range(key) and bytes(cur.key()[:len(key)]) == key:
        cur.delete()
    cur = txn.cursor(db=t.links)
    while cur.set_range(key) and bytes(cur.key()[:len(key)]) == key:
        cur.delete()
    for db in (t.files, t.attrs, t.tombs, t.failed):
        txn.delete(key, db=db)


def _refresh(t: Tables, txn: lmdb.Transaction, key: bytes, reextract: bool) -> None:
    """Make the next scan re-derive a record's stat tier (and content tier)."""
    raw = txn.get(key, db=t.files)
    if raw is None or len(raw) < REC.size:
        return
    rec = FileRecord.decode(bytes(raw))
    txn.put(key, rec._replace(ctime_ns=-1, xver=NO_XVER if reextract else rec.xver).encode(), db=t.files)
