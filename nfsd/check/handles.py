"""``pysfsd check`` of the server's own tables: export ids, the handle table, the exclusive-
create verifiers and the placeholders of query directories (``nfsd.state.store``, ``nfsd.fs.semantic``).

The handle table is a cache of where each inode is (parent inode, name, generation), so a
file on disk without an entry is not a difference; an entry is one when it can mislead:

``gone``        its inode is no longer in the export (the entry is dropped);
``generation``  the inode now holds another file (its generation changed): rewritten;
``place``       the parent and name it records no longer lead to it: rewritten;
``kind``        its recorded parent is not a directory: rewritten;
``tombstone``   marked removed, yet the same file is there (its handles would be STALE);
``malformed``   a key or value of the wrong shape; ``orphan``: an export id no export has;
``root``        the export root itself (the server never records it).

Exclusive-create verifiers must belong to a regular file that is still there, with the same
generation.  Export ids must be distinct, and the counter past them.  A placeholder must
decode to the query its key names.
"""
from __future__ import annotations

import os
import stat
import struct
from collections import defaultdict
from typing import Iterable, Iterator

import lmdb

from .disk import DiskTree
from .report import Difference, name_text
from ..query.names import Query
from ..state.store import _OBJ_KEY as OBJ_KEY, _OBJ_VAL as OBJ_VAL, FLAG_DELETED, Store, _as_tombstone as as_tombstone

_VERF = struct.Struct(">I8s")
_QUERY_STATE_SIZE = 16  # nfsd.fs.semantic._STATE: results digest, results mtime
MAX_NAME = 255


def export_ids(store: Store, roots: list[str]) -> dict[int, str]:
    """export id -> root, for the roots this store knows (read only)."""
    found: dict[int, str] = {}
    with store.env.begin(db=store.meta) as txn:
        for root in roots:
            raw = txn.get(b"export:" + os.fsencode(root))
            if raw is not None and bytes(raw).isdigit():
                found[int(raw)] = root
    return found


def check(store: Store, roots: list[str], trees: dict[int, DiskTree]) -> list[Difference]:
    """Every difference in the store's own tables; ``trees``: export id -> its disk walk."""
    queries = {eid: _queries_db(store, eid) for eid in trees}
    with store.env.begin() as txn:
        out = _exports(txn, store, roots)
        out += _objects(txn, store, trees)
        out += _verifiers(txn, store, trees)
        for eid, db in queries.items():
            if db is not None:
                out += _queries(txn, eid, db)
    return out


def _exports(txn: lmdb.Transaction, store: Store, roots: list[str]) -> list[Difference]:
    out: list[Difference] = []
    ours = {os.fsencode(r) for r in roots}
    by_id: dict[int, list[bytes]] = defaultdict(list)
    counter: bytes | None = None
    for key, raw in txn.cursor(db=store.meta):
        key, raw = bytes(key), bytes(raw)
        if key == b"next_export_id":
            counter = raw
        elif key == b"boot":
            if not raw.isdigit():
                out.append(Difference("exports", "malformed", "boot counter", f"{raw[:20]!r}",
                                      ("put", store.meta, key, b"1")))
        elif key.startswith(b"export:"):
            path = key[len(b"export:"):]
            if not raw.isdigit() or not 0 < int(raw) < 1 << 16:
                out.append(Difference("exports", "malformed", f"export {name_text(path)}", f"id {raw[:20]!r}",
                                      ("drop", store.meta, key)))
            elif path not in ours:
                out.append(Difference("exports", "stray", f"export {name_text(path)}",
                                      f"id {int(raw)} for a directory this server does not export",
                                      ("drop", store.meta, key)))
            else:
                by_id[int(raw)].append(path)
    for eid, paths in by_id.items():
        if len(paths) > 1:
            out.append(Difference("exports", "duplicate", f"export id {eid}",
                                  "shared by " + ", ".join(name_text(p) for p in paths)
                                  + " (not repaired: the handles of one of them would change)"))
    if by_id:
        want = max(by_id) + 1
        if counter is None or not counter.isdigit() or int(counter) < want:
            out.append(Difference("exports", "counter", "next export id",
                                  f"{counter!r} is not past the ids in use (should be at least {want})",
                                  ("put", store.meta, b"next_export_id", str(want).encode())))
    return out


def _valid_name(name: bytes) -> bool:
    return 0 < len(name) <= MAX_NAME and b"/" not in name and b"\0" not in name and name not in (b".", b"..")


def _objects(txn: lmdb.Transaction, store: Store, trees: dict[int, DiskTree]) -> list[Difference]:
    out: list[Difference] = []
    for key, raw in _table(txn, store):
        drop = ("drop", store.objects, key)
        if len(key) != OBJ_KEY.size:
            out.append(Difference("handles", "malformed", f"key {key.hex()}", "not an (export, inode) key", drop))
            continue
        eid, ino = OBJ_KEY.unpack(key)
        subject = f"export {eid} ino {ino}"
        tree = trees.get(eid)
        if tree is None:
            out.append(Difference("handles", "orphan", subject, "no export has this id", drop))
            continue
        if len(raw) < OBJ_VAL.size or not _valid_name(raw[OBJ_VAL.size:]) or raw[OBJ_VAL.size - 1] & ~FLAG_DELETED:
            out.append(Difference("handles", "malformed", subject, f"value {raw[:40].hex()}", drop))
            continue
        parent, gen, flags = OBJ_VAL.unpack_from(raw)
        name = raw[OBJ_VAL.size:]
        was = f"recorded as {name_text(name)} in {parent}, generation {gen}"
        if ino == tree.root_ino:
            out.append(Difference("handles", "root", subject, "the export root is never recorded", drop))
            continue
        disk = tree.objects.get(ino)
        if flags & FLAG_DELETED:
            if disk is not None and (tree.generation(ino) or 0) == gen:
                out.append(Difference("handles", "tombstone", subject,
                                      f"marked removed, but it is at {name_text(tree.path_of(ino) or b'?')}",
                                      _rewrite(store, key, tree, ino, gen)))
            continue
        if disk is None:
            out.append(Difference("handles", "gone", subject, f"{was}: no such inode in the export", drop))
            continue
        now_gen = tree.generation(ino)
        if now_gen and gen and now_gen != gen:
            out.append(Difference("handles", "generation", subject, f"{was}: the inode now has generation "
                                  f"{now_gen} ({name_text(tree.path_of(ino) or b'?')})",
                                  _rewrite(store, key, tree, ino, gen)))
            continue
        if (parent, name) not in disk.places:
            where = name_text(tree.path_of(ino) or b"?")
            holder = tree.objects.get(parent)
            if holder is not None and holder.kind != stat.S_IFDIR:
                out.append(Difference("handles", "kind", subject, f"{was}: parent {parent} is not a directory; "
                                      f"the object is at {where}", _rewrite(store, key, tree, ino, gen)))
            else:
                out.append(Difference("handles", "place", subject, f"{was}: it is at {where}",
                                      _rewrite(store, key, tree, ino, gen)))
    return out


def _table(txn: lmdb.Transaction, store: Store) -> Iterator[tuple[bytes, bytes]]:
    """The handle table as the next server start will read it: what LMDB holds, with what a
    running or killed server's journal holds on top (a lone call's place is journaled before
    its reply and reaches LMDB later; ``nfsd/state/store.py``)."""
    journaled = store.journaled_writes()
    for key, raw in txn.cursor(db=store.objects):
        key, raw = bytes(key), bytes(raw)
        if key in journaled:
            val = journaled.pop(key)
            raw = val if val is not None else as_tombstone(raw) if len(raw) >= OBJ_VAL.size else raw
        yield key, raw
    for key, val in journaled.items():  # places LMDB has not seen at all
        if val is not None:
            yield key, val


def _rewrite(store: Store, key: bytes, tree: DiskTree, ino: int, gen: int) -> tuple:
    """The fix of an entry whose object is there: its first place and current generation."""
    parent, name = tree.objects[ino].places[0]
    now_gen = tree.generation(ino) or gen
    return ("put", store.objects, key, OBJ_VAL.pack(parent, now_gen & 0xFFFFFFFF, 0) + name)


def _verifiers(txn: lmdb.Transaction, store: Store, trees: dict[int, DiskTree]) -> list[Difference]:
    out: list[Difference] = []
    for key, raw in txn.cursor(db=store.verifiers):
        key, raw = bytes(key), bytes(raw)
        drop = ("drop", store.verifiers, key)
        if len(key) != OBJ_KEY.size or len(raw) != _VERF.size:
            out.append(Difference("createverf", "malformed", f"key {key.hex()}", f"value {raw[:40].hex()}", drop))
            continue
        eid, ino = OBJ_KEY.unpack(key)
        subject = f"export {eid} ino {ino}"
        gen, _ = _VERF.unpack(raw)
        tree = trees.get(eid)
        if tree is None:
            out.append(Difference("createverf", "orphan", subject, "no export has this id", drop))
            continue
        disk = tree.objects.get(ino)
        if disk is None:
            out.append(Difference("createverf", "gone", subject, "no such inode in the export", drop))
        elif disk.kind != stat.S_IFREG:
            out.append(Difference("createverf", "kind", subject, "not a regular file", drop))
        else:
            now_gen = tree.generation(ino)
            if now_gen and gen and now_gen != gen:
                out.append(Difference("createverf", "generation", subject,
                                      f"created as generation {gen}, the inode now has {now_gen}", drop))
    return out


def _queries_db(store: Store, eid: int) -> lmdb._Database | None:
    """The placeholders of an export (``nfsd.fs.semantic``), if it has any."""
    name = b"queries%d" % eid
    with store.env.begin() as txn:
        if txn.get(name) is None:  # named databases are keys of the main one
            return None
    return store.env.open_db(name)


def _queries(txn: lmdb.Transaction, eid: int, db: lmdb._Database) -> list[Difference]:
    out: list[Difference] = []
    for key, raw in txn.cursor(db=db):
        key, raw = bytes(key), bytes(raw)
        try:
            ok = len(raw) >= _QUERY_STATE_SIZE and Query.from_key(raw[_QUERY_STATE_SIZE:]).qid() == key
        except Exception:
            ok = False
        if not ok:
            out.append(Difference("queries", "malformed", f"export {eid} query {key.hex()}",
                                  "a placeholder that does not decode to its query", ("drop", db, key)))
    return out


def repair(store: Store, diffs: Iterable[Difference]) -> int:
    """Apply the fixes of these differences in one transaction; returns how many."""
    done = 0
    with store.env.begin(write=True) as txn:
        for d in diffs:
            if d.fix is None:
                continue
            if d.fix[0] == "drop":
                _, db, key = d.fix
                txn.delete(key, db=db)
            else:
                _, db, key, value = d.fix
                txn.put(key, value, db=db)
            done += 1
    store.env.sync(True)
    return done
