"""The semantic layer: query directories over the real tree, served as one backend.

``SemanticFS`` wraps the real-file backend (``LocalFS``) and the index of one export.  Real
handles behave exactly as in LocalFS (and every change made through them is reported to the
index); a name that does not exist in a real directory but is a legal query name (see
``nfsd.query.names``) is answered with a *placeholder*: a virtual directory whose handle holds its
query, or a hash of it stored in a bounded table (``nfsd.query.store``), so it still resolves
after a restart.  The first READDIR or LOOKUP inside a placeholder takes the *directory
fault* that runs the query.

Virtual objects:

* lab views (``D/:extension=.c``): D's own entries, filtered; the entries are the real files
  (real handles), so reads, writes, creates, removes and renames act on D itself;
* field directories (``D/owner:``): one subdirectory per value;
* value directories (``D/owner:/smith``): the matching files, as relative symbolic links
  (``../../src/x.c``) or, with ``results="files"``, as the real files; read-only (EROFS);
* result links: the symbolic links inside value directories.

A fault's results are everyone's; what a caller sees of them is not.  When the server acts as
its callers (``nfsd.fs.identity``), field and value directories show a caller only the files
they could reach by path from D, and could read when the query is about content (see
``_visible``); lab views and D itself are checked by the kernel, as the caller.
"""
from __future__ import annotations

import gc
import hashlib
import itertools
import os
import stat
import struct
import threading
import time
from array import array
from typing import Any, Callable, Hashable, Iterable, Iterator, NamedTuple, Sequence

from protocol.nfs3 import nfsstat3
from protocol.nfs3_entries import EntryplusRun

from . import identity
from ..query import language as query_lang
from ..nfs3.attrs import fattr
from .backend import ModeKinds, TimeSet
from ..nfs3.errors import NfsError
from .handles import HANDLE_VERSION, KIND_REAL, handle_kind
from .indexwaits import IndexWaits
from .localfs import LocalFS, Node, check_name
from ..query.names import Query, may_be_query_name, parse_field_name, parse_lab_name, value_name
from ..query.store import QueryStore, is_inline
from ..query.result_set import LinkItems, ResultSet, clash_name
from ..query.value_set import ValueCounts, ValueSet
from .tag_dirs import TagDirs, claims, is_user_field_dir
from ..heaptrim import trim_heap

KIND_QUERY = 1   # version kind export_id qid(16): a stored query (nfsd.query.store)
KIND_LINK = 2    # version kind export_id qid(16) ino(8)
KIND_QUERY_INLINE = 3  # version kind export_id key: a query small enough to be its own handle
KIND_LINK_INLINE = 4   # version kind export_id ino(8) key
_QUERY_HANDLE = struct.Struct(">BBH16s")
_LINK_HANDLE = struct.Struct(">BBH16sQ")
_INLINE_HANDLE = struct.Struct(">BBH")
_INLINE_LINK_HANDLE = struct.Struct(">BBHQ")
_VIRTUAL_FILEID = 1 << 63
_LINK_MODE = stat.S_IFLNK | 0o777
_INO = struct.Struct(">Q")
# What ``ls -l`` shows (the index's stat tier); any other field tells what a file holds.
_STAT_FIELDS = frozenset({b"name", b"ext", b"owner", b"group", b"size", b"mtime"})
# What only creating, removing, renaming or linking a file can change (not writes or setattr).
_NAME_FIELDS = frozenset({b"name", b"ext"})
_BIG_FAULT = 100_000  # results from which a fault gives its transient memory back (``_fault``)
VIEW_SECONDS = 1.0  # how long one caller's view of a query directory is reused
VIEW_CACHE_BYTES = 32 << 20  # callers' views kept, by their own entries' estimated size
MAX_VIEWS = 256
RESULT_CACHE_BYTES = 64 << 20  # faults' results kept for reuse, by their estimated size
_VALUE_BYTES = 200  # per value of a field directory: name, value, count, dict slots


class VStat(NamedTuple):
    """Attributes of a virtual object, shaped like ``os.stat_result``."""

    st_mode: int
    st_ino: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_blocks: int
    st_rdev: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int


class VNode(ModeKinds):
    """A virtual directory (query) or result link; ``mode`` tells which."""

    __slots__ = ("fh", "ino", "mode", "query", "target_ino", "target", "gen", "__weakref__")
    virtual = True  # computed from a query (nfsd/fs/backend.py, ObjectNode)

    def __init__(self, fh: bytes, ino: int, mode: int, query: Query, target_ino: int = 0,
                 target: bytes | None = None) -> None:
        self.fh, self.ino, self.mode, self.query, self.target_ino = fh, ino, mode, query, target_ino
        self.target = target  # a result link's text, when the fault that found it knew it
        self.gen = 0


class Results(NamedTuple):
    """A faulted directory: its entries by name, and what identifies this result set."""

    version: int
    names: Any                    # value dirs: a ResultSet (name -> FileRef); field dirs: a dict name -> value
    digest: int
    mtime_ns: int
    scope_path: bytes             # D relative to the export root
    counts: Any                   # field dirs: value -> its number of results (value dirs' size), by .get




def _names_bytes(names: Any) -> int:
    """Estimated memory of a directory's entries: a value directory's ResultSet, or a field
    directory's dict of value names."""
    if isinstance(names, (ResultSet, ValueSet)):
        return names.nbytes
    return _VALUE_BYTES * len(names) + 2 * sum(map(len, names))


def virtual_fileid(*parts: bytes) -> int:
    h = hashlib.blake2b(b"\0".join(parts), digest_size=8, person=b"pysfsd-vid").digest()
    return _VIRTUAL_FILEID | (int.from_bytes(h, "big") >> 1)


def link_fileids(qid: bytes) -> Callable[[int], int]:
    """``virtual_fileid(qid, ino8)`` for many inodes of one query: the hash of the shared
    head is taken once and copied (a third of the cost per entry of a large listing)."""
    head = hashlib.blake2b(qid + b"\0", digest_size=8, person=b"pysfsd-vid")
    pack, from_bytes = _INO.pack, int.from_bytes

    def fileid(ino: int) -> int:
        h = head.copy()
        h.update(pack(ino))
        return _VIRTUAL_FILEID | (from_bytes(h.digest(), "big") >> 1)
    return fileid


def result_names(refs: Sequence[Any]) -> dict[bytes, Any]:
    """Entry names for results: the file's own name unless two results share it (or it
    would read as a field directory), then ``stem~HHHHHH.ext`` with a hash of its path --
    deterministic and stable, whatever else is in the listing."""
    by_name: dict[bytes, list[Any]] = {}
    for ref in refs:
        by_name.setdefault(os.path.basename(ref.path), []).append(ref)
    names: dict[bytes, Any] = {}
    for name, group in by_name.items():
        if len(group) == 1 and parse_field_name(name) is None:
            names[name] = group[0]
            continue
        for ref in group:
            names[clash_name(name, ref.path)] = ref
    return names


def _field_dirs(q: Query) -> Iterator[tuple[bytes, Query]]:
    """For each term of value query ``q``: its value, and the field directory that lists it
    beside the other terms (``owner:/smith/ext:/c`` -> ``smith``, ``ext:/c/owner:``)."""
    for field, value in q.terms:
        yield value, Query(q.scope, tuple(t for t in q.terms if t[0] != field), field)


class SemanticFS:
    """One export: the real tree plus its query directories."""

    def __init__(self, local: LocalFS, index: Any, results: str = "links") -> None:
        self.local = local
        self.index = index
        # an index of its own (not one that forwards notes, as a cluster head's does)
        # adds the server's new files from their creation's stat (``Index.note_created``)
        self._note_created = index.note_created if hasattr(type(index), "note_created") else None
        self._note_removed = index.note_removed if hasattr(type(index), "note_removed") else None
        self.results = results
        self.fsid = local.fsid
        self.export_id = local.export_id
        self.store = local.store
        self.root = local.root
        self.root_path = local.root_path
        self._queries = QueryStore(local.store, local.export_id)
        self._born_ns = time.time_ns()  # the mtime of query directories that never ran
        # Changes acknowledged to clients, by tick (see ``_unapplied``).
        self._ticks = itertools.count(1)
        self._names_tick = 0    # the last create, remove, rename or link
        self._data_tick = 0     # the last write or setattr
        self._applied_tick = 0  # every change acknowledged before this tick is in the index
        self._cache: dict[bytes, Results] = {}   # by qid, least recently used first
        self._cache_sizes: dict[bytes, int] = {}
        self._cache_bytes = 0
        self.result_cache_bytes = RESULT_CACHE_BYTES
        # per-caller views (``_visible``), least recently made first, bounded in bytes
        self._views: dict[tuple[bytes, Any], tuple[Results, float, Any, int]] = {}
        self._views_bytes = 0
        self.view_cache_bytes = VIEW_CACHE_BYTES
        self._link_memo: tuple[Any, bytes, bool, bytes] = (None, b"", False, b"")  # see _link_entry
        self._lock = threading.Lock()
        # Set once the start-up scan is complete: until then a query could answer from a
        # half-built index, so directory faults are held until it is (nfsd/fs/indexwaits.py).
        self.ready = threading.Event()
        self.index_waits = IndexWaits()  # ``progressed`` whenever ready, stat_ready or ready_fields move on
        self.tags = TagDirs(self)  # tag: value directories are where tags are set
        # Set once a first index holds the stat tier of every file: queries over those
        # fields alone answer while the content tier follows, and over each content field
        # once the pass that gives it is done (``ready_fields``, Index.content_passes).
        self.stat_ready = threading.Event()
        self.ready_fields: frozenset[bytes] = _STAT_FIELDS

    # -- handles -------------------------------------------------------------------------
    def node(self, fh: bytes) -> Node | VNode:
        known = self.local.cached(fh)  # a real object met before: no parsing
        if known is not None:
            return known
        kind, _ = handle_kind(fh)
        if kind == KIND_REAL:
            return self.local.node(fh)
        if kind == KIND_QUERY_INLINE:
            return self._query_node(self._inline_query(fh[_INLINE_HANDLE.size:]))
        if kind == KIND_LINK_INLINE and len(fh) > _INLINE_LINK_HANDLE.size:
            ino = _INLINE_LINK_HANDLE.unpack_from(fh)[3]
            return self._link_node(self._value_dir(self._inline_query(fh[_INLINE_LINK_HANDLE.size:])), ino)
        if kind == KIND_QUERY and len(fh) == _QUERY_HANDLE.size:
            _, _, _, qid = _QUERY_HANDLE.unpack(fh)
            return self._query_node(self._load_query(qid))
        if kind == KIND_LINK and len(fh) == _LINK_HANDLE.size:
            _, _, _, qid, ino = _LINK_HANDLE.unpack(fh)
            return self._link_node(self._value_dir(self._load_query(qid)), ino)
        raise NfsError(nfsstat3.NFS3ERR_BADHANDLE, f"handle kind {kind}")

    @staticmethod
    def _value_dir(q: Query) -> Query:
        if q.is_lab or q.is_field_dir or not q.terms:
            raise NfsError(nfsstat3.NFS3ERR_BADHANDLE, "link handle of a non-value directory")
        return q

    @staticmethod
    def _inline_query(key: bytes) -> Query:
        """The query a self-describing handle holds; only the canonical form of a query
        the namespace could have made is one (anything else: BADHANDLE)."""
        try:
            q = Query.from_key(key)
        except (ValueError, struct.error):
            q = None
        if (q is None or not is_inline(key) or q.key() != key or not q.is_legal()):
            raise NfsError(nfsstat3.NFS3ERR_BADHANDLE, "not a query handle")
        return q

    def _load_query(self, qid: bytes) -> Query:
        q = self._queries.load(qid)
        if q is None:  # never stored, or evicted (see nfsd.query.store)
            raise NfsError(nfsstat3.NFS3ERR_STALE, "unknown query")
        return q

    def _placeholder(self, q: Query) -> VNode:
        """A query directory's node: no query runs yet.  A query too long to be its own
        handle is stored (once), so its handle still resolves after a restart."""
        if not is_inline(q.key()):  # a full store: StoreFull, so the LOOKUP answers NOSPC
            self._queries.keep(q)
        return self._query_node(q)

    def _query_node(self, q: Query) -> VNode:
        qid = q.qid()
        key = q.key()
        if is_inline(key):
            fh = _INLINE_HANDLE.pack(HANDLE_VERSION, KIND_QUERY_INLINE, self.export_id) + key
        else:
            fh = _QUERY_HANDLE.pack(HANDLE_VERSION, KIND_QUERY, self.export_id, qid)
        if q.is_lab:
            mode = stat.S_IFDIR | 0o755
        elif claims(q):
            mode = stat.S_IFDIR | 0o777  # tag directories: each file's own permission decides
        else:
            mode = stat.S_IFDIR | 0o555
        return VNode(fh, virtual_fileid(qid), mode, q)

    def _link_node(self, q: Query, ino: int, target: bytes | None = None) -> VNode:
        qid = q.qid()
        return VNode(self._link_fh(q, qid, ino), virtual_fileid(qid, struct.pack(">Q", ino)), _LINK_MODE, q, ino,
                     target)

    def _link_fh(self, q: Query, qid: bytes, ino: int) -> bytes:
        key = q.key()
        if is_inline(key):
            return _INLINE_LINK_HANDLE.pack(HANDLE_VERSION, KIND_LINK_INLINE, self.export_id, ino) + key
        return _LINK_HANDLE.pack(HANDLE_VERSION, KIND_LINK, self.export_id, qid, ino)

    # -- the directory fault -----------------------------------------------------------
    def _unready(self, q: Query) -> bool:
        """Whether ``q`` cannot answer yet: the index is still being built, and not even
        the passes that give the fields it uses are done."""
        return not self.ready.is_set() and not (self.stat_ready.is_set() and q.fields_used() <= self.ready_fields)

    def _wait_ready(self, q: Query) -> None:
        """``NfsPending`` (the call held, nfsd/fs/indexwaits.py) while ``q`` cannot answer
        from the index; raised before its callers changed anything, so it may run again."""
        if self._unready(q):
            raise self.index_waits.pending(lambda: self._unready(q), "the index is still being built")

    def _fault(self, v: VNode) -> Results:
        """Run (or reuse) the query of a field or value directory."""
        q = v.query
        self._wait_ready(q)
        tick = next(self._ticks)
        with identity.as_server():  # it reads files on everyone's behalf
            self.index.flush()
        self._applied_tick = max(self._applied_tick, tick)
        version = self._version_for(q)
        qid = q.qid()
        cached = self._cache.get(qid)
        if cached is not None and cached.version == version:
            with self._lock:  # most recently used
                if self._cache.pop(qid, None) is not None:
                    self._cache[qid] = cached
            return cached
        counts: Any = {}
        if q.is_field_dir:
            pairs: Iterable[tuple[bytes, int]] = self.index.value_count_items(q.open_field, q.scope, q.terms)
            if is_user_field_dir(q):  # the declared tags too, carried or not (a few)
                carried = dict(pairs)
                pairs = [(v, carried.get(v, 0)) for v in self.tags.with_declared(q, sorted(carried))]
            names: Any = ValueSet(pairs)
            counts, digest = ValueCounts(names), names.digest
        else:
            names = ResultSet.of_hits(self.index.query_hits(q.scope, q.terms))
            digest = names.digest
        mtime_ns = self._remember_state(q, digest, None if claims(q) else (version, len(names)))
        results = Results(version, names, digest, mtime_ns, self._scope_path(q), counts)
        self._keep(qid, results)
        # A fault may map much of LMDB's file whatever its result count (the values of a
        # field among a million files): drop the mapping if it grew large (reading RssFile
        # costs ~30 us; nfsd/index/residency.py)
        self.index.trim_map()
        if len(names) >= _BIG_FAULT:
            # Building it sorted millions of small tuples, freed in an order unrelated to their
            # allocation: the last ones freed stay in the interpreter's free lists, one in nearly
            # every memory pool, and keep ~170 MB per million results resident.  A full
            # collection empties the free lists (measured: 28 ms); then the C heap gives back
            # what they and the results this one evicted from the cache held.
            gc.collect()
            trim_heap()  # (glibc keeps what a large fault freed: 159 MB of heap instead of 78
                         # after three million-result faults)
        return results

    def _version_for(self, q: Query) -> int:
        """The index version ``q``'s results are valid for: a query over stat fields alone
        keeps its results across commits that change content fields only (while the content
        scan runs, every batch commits), so its listings do not run it again each time."""
        return self.index.stat_version if q.fields_used() <= _STAT_FIELDS else self.index.version

    def _keep(self, qid: bytes, results: Results) -> None:
        """Cache a fault's results within RESULT_CACHE_BYTES (their estimated size, least
        recently used first out; the newest always stays, as its listing is being paged)."""
        size = _names_bytes(results.names)
        with self._lock:
            if self._cache.pop(qid, None) is not None:
                self._cache_bytes -= self._cache_sizes.pop(qid, 0)
            self._cache[qid] = results
            self._cache_sizes[qid] = size
            self._cache_bytes += size
            while self._cache_bytes > self.result_cache_bytes and len(self._cache) > 1:
                old = next(iter(self._cache))
                del self._cache[old]
                self._cache_bytes -= self._cache_sizes.pop(old, 0)

    def replace_results(self, q: Query, old: Results, names: ResultSet, version: int,
                        change: bytes) -> None:
        """Cache an answer updated in place of a fault (nfsd/fs/tag_dirs.py: one file tagged or
        untagged); ``change`` names the difference, for the digest (so the mtime moves)."""
        qid = q.qid()
        raw = struct.pack(">Q", old.digest) + change
        digest = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")
        mtime_ns = self._remember_state(q, digest)
        if self._cache.get(qid) is old:
            self._keep(qid, Results(version, names, digest, mtime_ns, old.scope_path, old.counts))

    def forget_results(self) -> None:
        """Drop every cached fault (a change the index version does not tell: a tag declared)."""
        with self._lock:
            self._cache.clear()
            self._cache_sizes.clear()
            self._cache_bytes = 0

    def _remember_state(self, q: Query, digest: int, answer: tuple[int, int] | None = None) -> int:
        """The time the results last changed, persisted so attributes survive restarts (on
        a full store, or once the record is evicted, the time of this fault); ``answer``:
        the index version and number of entries of these results (see ``_state``)."""
        full = None if answer is None else (answer[0], self.local.root_ino, answer[1])
        mtime_ns = self._queries.remember(q, digest, create=is_inline(q.key()), answer=full)
        if mtime_ns is None:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "unknown query")
        return mtime_ns

    def _unapplied(self, q: Query) -> bool:
        """Whether a change acknowledged to a client may be queued for the index and not yet
        applied, that could change this query's results.  Cheap, and narrow on purpose: a
        flush re-extracts files being written, so a query on names and extensions must not
        flush for every WRITE (nor for the inotify echoes of the server's own changes)."""
        last = self._names_tick if q.fields_used() <= _NAME_FIELDS else max(self._names_tick, self._data_tick)
        return last > self._applied_tick and self.index.has_notes()

    def _state(self, q: Query) -> tuple[int, int, int]:
        """(entries, digest, mtime_ns), true to every change the server acknowledged: the
        kernel client keeps a cached listing while these attributes stay the same, so
        queued index notes that matter are applied first (``_fault`` flushes; see
        ``_unapplied``); otherwise the cached results answer without any work.  A query
        that never ran does not run here: a placeholder keeps its creation time until its
        first fault (no client can hold a listing of it); one that ran before a restart,
        or left the cache, runs again so its attributes are current."""
        qid = q.qid()
        cached = self._cache.get(qid)
        if cached is not None:
            if cached.version != self._version_for(q) or self._unapplied(q):
                cached = self._fault(self._query_node(q))
            return len(cached.names), cached.digest, cached.mtime_ns
        known = self._queries.state(qid)
        if known is None:
            if not is_inline(q.key()):
                raise NfsError(nfsstat3.NFS3ERR_STALE, "unknown query")
            return self._counted(q), 0, self._born_ns  # never ran (or its record was evicted)
        digest, mtime_ns = known
        if digest and self.ready.is_set():
            # results of this very index version (as after a restart with nothing changed):
            # their attributes are known without running the query (a million results)
            answer = self._queries.answer(qid)
            if (answer is not None and answer[:3] == (self._version_for(q), self.local.root_ino, digest)
                    and not claims(q) and not self._unapplied(q)):
                return answer[3], digest, mtime_ns
            cached = self._fault(self._query_node(q))
            return len(cached.names), cached.digest, cached.mtime_ns
        return self._counted(q), digest, mtime_ns

    def _counted(self, q: Query) -> int:
        """A value directory's number of results, as counted by a field directory listed
        at this index version (so ``ls -l FIELD:`` shows them before any is listed); else 0."""
        for value, fq in _field_dirs(q):
            cached = self._cache.get(fq.qid())
            if cached is not None and cached.version == self._version_for(fq):
                found = cached.counts.get(value)
                if found is not None:
                    return found
        return 0

    # -- attributes --------------------------------------------------------------------
    def stat(self, n: Node | VNode) -> Any:
        if isinstance(n, Node):
            return self.local.stat(n)
        q = n.query
        if q.is_lab:
            d = self._scope_node(q)
            st = self.local.stat(d)
            return VStat(n.mode & ~0o7777 | (st.st_mode & 0o7777), n.ino, 2, st.st_uid, st.st_gid,
                         st.st_size, 0, 0, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)
        if n.is_link:
            _, _, mtime_ns = self._state(q)
            return self._link_stat(n, mtime_ns)
        count, _, mtime_ns = self._state(q)
        root = self.local.stat(self.root)
        return VStat(n.mode, n.ino, 2, root.st_uid, root.st_gid, self._seen_count(n, count), 0, 0,
                     mtime_ns, mtime_ns, mtime_ns)

    def _seen_count(self, n: VNode, count: int) -> int:
        """A query directory's size: its number of entries, ``count``, when everything is
        shown to the caller; else the number of those this caller sees (``_visible``), so the
        size does not tell how many files they may not see match.  A value directory not
        listed yet keeps its field directory's count only if this caller's view of that
        field directory hid nothing; otherwise, and while there are no current results to
        take a view of (a placeholder; attributes known from a previous run), 0."""
        who = identity.current()
        if who is None or who.uid == 0 or not count:
            return count
        q = n.query
        cached = self._cache.get(q.qid())
        if cached is not None and cached.version == self._version_for(q):
            try:
                return len(self._visible(n, cached)[0])
            except (OSError, NfsError):  # D out of the caller's reach: they see nothing of it
                return 0
        for _, fq in _field_dirs(q):  # (as ``_counted`` found the count)
            whole, view = self._cache.get(fq.qid()), self._views.get((fq.qid(), who))
            if whole is not None and view is not None and view[0] is whole and view[2] is whole.names:
                return count
        return 0

    def _link_stat(self, n: VNode, mtime_ns: int) -> VStat:
        """A result link: owned by root, sized by its text, dated by its directory's results."""
        return VStat(n.mode, n.ino, 1, 0, 0, len(self._link_target(n)), 0, 0, mtime_ns, mtime_ns, mtime_ns)

    def cookie_verifier(self, d: Node | VNode) -> bytes:
        """Real directories: fixed (their cookies never go stale).  Query directories: it
        changes with the results, so clients drop cached listings."""
        base = d.fh
        if isinstance(d, VNode) and not d.query.is_lab:
            base += struct.pack(">Q", self._state(d.query)[1])
        return hashlib.blake2b(base, digest_size=8, person=b"pysfsd-ck").digest()

    def statvfs(self) -> os.statvfs_result:
        return self.local.statvfs()

    # -- names ---------------------------------------------------------------------------
    def _scope_node(self, q: Query) -> Node:
        """The real directory D a query starts from."""
        if q.scope == self.local.root_ino:
            return self.root
        path = self.index.path_of(q.scope)
        if path is None:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "query scope no longer indexed")
        d = self.root
        for part in path.split(b"/"):
            d = self.local.lookup(d, part)
        if d.ino != q.scope:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "query scope moved")
        return d

    def lookup_attrs(self, d: Node | VNode, name: bytes) -> tuple[Node | VNode, os.stat_result | None]:
        """``lookup``, with the attributes a real entry's look-up read (``LocalFS.lookup_attrs``)."""
        if isinstance(d, Node):
            try:
                return self.local.lookup_attrs(d, name)
            except FileNotFoundError:
                if not may_be_query_name(name):
                    raise  # the VM's LOOKUP before each create: no parser run cold
                v = self._query_name(d, name)
                if v is None:
                    raise
                return v, None
        return self._virtual_lookup(d, name), None

    def lookup(self, d: Node | VNode, name: bytes) -> Node | VNode:
        return self.lookup_attrs(d, name)[0]

    def _virtual_lookup(self, d: VNode, name: bytes) -> Node | VNode:
        q = d.query
        if not d.is_dir:
            raise NfsError(nfsstat3.NFS3ERR_NOTDIR)
        if name == b".":
            return d
        if name == b"..":
            return self.parent_of(d)
        check_name(name)
        if q.is_lab:
            self._check_suffix(q, name, nfsstat3.NFS3ERR_NOENT)
            n = self.local.lookup(self._scope_node(q), name)
            if n.is_dir:
                raise NfsError(nfsstat3.NFS3ERR_NOENT, "directories are not in lab views")
            return n
        if not q.is_field_dir:
            field = parse_field_name(name)
            if field is not None:
                nested = q.with_field(field)
                if nested is None or not self.index.is_field(field):
                    raise NfsError(nfsstat3.NFS3ERR_NOENT, "field used twice or unknown")
                return self._placeholder(nested)
        elif self._cache.get(q.qid()) is None and not claims(q):
            return self._value_lookup(d, name)
        results = self._fault(d)
        found = self._visible(d, results)[0].get(name)  # this caller's names (see _visible)
        if q.is_field_dir:
            if found is None:
                if name in results.names:  # a value of files this caller may not see
                    raise NfsError(nfsstat3.NFS3ERR_NOENT)
                return self._expression_dir(d, results, name)
            return self._placeholder(q.with_value(found))
        if found is None:
            raise NfsError(nfsstat3.NFS3ERR_NOENT)
        if not self._may_see(q, found.ino, found.path):
            raise NfsError(nfsstat3.NFS3ERR_NOENT)
        if self.results == "files":
            return self._real_node(found)
        return self._link_node(q, found.ino, self._relative_target(q, results.scope_path, found.path))

    def _value_lookup(self, d: VNode, name: bytes) -> VNode:
        """A value directory looked up in a field directory not listed (not in the cache):
        answered without listing every value of the field (``name:`` at a million files is
        a million values): at once for an expression; for a plain value, by one posting
        look-up at the export root with no other term (as the server), else by the value
        directory's own fault (NOENT if this caller sees no result)."""
        q = d.query
        try:
            value = query_lang.parse_term(q.open_field or b"", name)
        except query_lang.QueryError as exc:
            raise NfsError(nfsstat3.NFS3ERR_NOENT, str(exc)) from None
        v = self._placeholder(q.with_value(value))
        if query_lang.is_expression(value):
            return v
        self._wait_ready(v.query)  # (a half-built index would say NOENT, and clients remember it)
        who = identity.current()
        if q.scope == self.local.root_ino and not q.terms and (who is None or who.uid == 0):
            found = self.index.holds(q.open_field or b"", value)
        else:
            found = len(self._visible(v, self._fault(v))[0]) > 0
        if not found:
            raise NfsError(nfsstat3.NFS3ERR_NOENT)
        return v

    def _expression_dir(self, d: VNode, results: Results, name: bytes) -> VNode:
        """A name not listed in field directory ``d``: an expression of the query language
        (``c|h``, ``!c``, ``>1M``, ``report*``: see ``nfsd.query.language``) or a value written
        another way (``C`` for the stored ``c``).  A plain value must be listed."""
        q = d.query
        try:
            value = query_lang.parse_term(q.open_field or b"", name)
        except query_lang.QueryError as exc:
            raise NfsError(nfsstat3.NFS3ERR_NOENT, str(exc)) from None
        if not query_lang.is_expression(value) and value_name(value) not in self._visible(d, results)[0]:
            raise NfsError(nfsstat3.NFS3ERR_NOENT)
        return self._placeholder(q.with_value(value))

    def _real_node(self, ref: Any) -> Node:
        n = self.root
        for part in ref.path.split(b"/"):
            n = self.local.lookup(n, part)
        if n.ino != ref.ino:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "result moved")
        return n

    def _query_name(self, d: Node, name: bytes) -> VNode | None:
        """A placeholder for a legal query name looked up in real directory ``d``."""
        suffix = parse_lab_name(name)
        if suffix is not None:
            return self._placeholder(Query(d.ino, suffix=suffix))
        field = parse_field_name(name)
        if field is not None and self.index.is_field(field):
            return self._placeholder(Query(d.ino, open_field=field))
        return None

    @staticmethod
    def _check_suffix(q: Query, name: bytes, status: int) -> None:
        if not name.endswith(q.suffix or b"") or name in (b".", b".."):
            raise NfsError(status, f"{name!r} does not end with {q.suffix!r}")

    def parent_of(self, d: Node | VNode) -> Node | VNode:
        if isinstance(d, Node):
            return self.local.parent_of(d)
        parent = d.query.parent()
        if parent is None:
            return self._scope_node(d.query)
        return self._placeholder(parent)

    def _scope_path(self, q: Query) -> bytes:
        scope = b"" if q.scope == self.local.root_ino else self.index.path_of(q.scope)
        if scope is None:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "query scope no longer indexed")
        return scope

    @staticmethod
    def _relative_target(q: Query, scope: bytes, path: bytes) -> bytes:
        """``../`` up to D, then the file's path below D."""
        if scope:
            if not path.startswith(scope + b"/"):
                raise NfsError(nfsstat3.NFS3ERR_STALE, "result left the scope")
            path = path[len(scope) + 1:]
        return b"../" * q.depth + path

    def _link_target(self, n: VNode) -> bytes:
        if n.target is not None:
            return n.target
        scope = self._scope_path(n.query)
        path = self._path_in(scope, n.target_ino)
        if path is None:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "result no longer indexed")
        n.target = self._relative_target(n.query, scope, path)
        return n.target

    def _path_in(self, scope: bytes, ino: int) -> bytes | None:
        """A path of the file inside ``scope`` (hard links have several; the first wins)."""
        paths = self.index.paths_of(ino)
        return next((p for p in paths if not scope or p.startswith(scope + b"/")), paths[0] if paths else None)

    def readlink(self, n: Node | VNode) -> bytes:
        if isinstance(n, Node):
            return self.local.readlink(n)
        if not n.is_link:
            raise NfsError(nfsstat3.NFS3ERR_INVAL, "not a symbolic link")
        if not self._may_see(n.query, n.target_ino):
            raise NfsError(nfsstat3.NFS3ERR_ACCES, "result out of the caller's reach")
        return self._link_target(n)

    # -- what one caller may see --------------------------------------------------------
    def _visible(self, d: VNode, results: Results) -> tuple[Any, float | None]:
        """The entries of a field or value directory the caller may see, and when that view
        was taken.  Acting as a caller (nfsd/fs/identity.py), a result is seen only if the caller
        could reach it by path from D (search permission on every directory between, asked
        of the kernel), and, when the query involves what files hold (any field but the
        stat ones), could read it; a field directory lists the values of the files seen.
        The fault's results are shared; views are per identity, reused for VIEW_SECONDS (a
        chmod shows within that), never across identities."""
        who = identity.current()
        if who is None or who.uid == 0:
            return results.names, None
        q = d.query
        key = (q.qid(), who)
        now = time.monotonic()
        memo = self._views.get(key)
        if memo is not None and memo[0] is results and now - memo[1] < VIEW_SECONDS:
            return memo[2], memo[1]
        reach = identity.Reach(self._scope_node(q))  # as the caller: D must be reachable
        content = not q.fields_used() <= _STAT_FIELDS
        skip = len(results.scope_path) + 1 if results.scope_path else 0
        if q.is_field_dir:
            refs = self.index.query(q.scope, q.terms)
            seen = [r.ino for r in refs if reach.visible(r.path[skip:], who, content)]
            names = results.names
            if len(seen) != len(refs):
                values = self.tags.with_declared(q, self.index.values_of(q.open_field, seen))
                names = {k: v for k, v in ((value_name(v), v) for v in values) if k in results.names}
        else:
            names = results.names  # the positions seen, not their refs: one int each at most
            kept = array("I", (i for i in range(len(names)) if reach.visible(names.path(i)[skip:], who, content)))
            # Clashes are renamed among what this caller is shown: a name renamed because of
            # a file they may not see would tell them it exists.
            if len(kept) != len(names):
                names = names.subset(kept)
        self._keep_view(key, results, now, names)
        return names, now

    def _keep_view(self, key: tuple[bytes, Any], results: Results, now: float, names: Any) -> None:
        """Keep one caller's view within VIEW_CACHE_BYTES (its own entries' estimated size:
        nothing when it is the shared results themselves) and MAX_VIEWS, the oldest first
        out, the newest always (its listing is being paged)."""
        size = 0 if names is results.names else _names_bytes(names)
        with self._lock:
            old = self._views.pop(key, None)
            if old is not None:
                self._views_bytes -= old[3]
            self._views[key] = (results, now, names, size)
            self._views_bytes += size
            while len(self._views) > 1 and (self._views_bytes > self.view_cache_bytes or len(self._views) > MAX_VIEWS):
                self._views_bytes -= self._views.pop(next(iter(self._views)))[3]

    def _may_see(self, q: Query, ino: int, path: bytes | None = None) -> bool:
        """One result of a value directory, as ``_visible`` decides."""
        who = identity.current()
        if who is None or who.uid == 0:
            return True
        scope = self._scope_path(q)
        path = path if path is not None else self._path_in(scope, ino)
        if path is None:
            return False
        rel = path[len(scope) + 1:] if scope else path
        return identity.Reach(self._scope_node(q)).visible(rel, who, not q.fields_used() <= _STAT_FIELDS)

    # -- listings ------------------------------------------------------------------------
    def scandir(self, d: Node | VNode) -> Iterable[tuple[bytes, int]]:
        """(name, fileid) of the entries; a value directory answers its results themselves,
        a listing already in cookie order (nfsd/query/result_set.py): nothing is copied, and a
        page's attributes are made when it is served (``entry``)."""
        if isinstance(d, Node):
            return self.local.scandir(d)
        q = d.query
        if q.is_lab:
            return self._lab_entries(q)
        results = self._fault(d)
        visible = self._visible(d, results)[0]
        if q.is_field_dir:
            if isinstance(visible, ValueSet):  # a listing as it is, fileids made per page
                return visible.listing(lambda value: virtual_fileid(q.with_value(value).qid()))
            return [(name, self._entry_fileid(q, found)) for name, found in visible.items()]
        if self.results == "files":
            return visible.listing(int)
        qid = q.qid()
        return visible.listing(link_fileids(qid), self._link_items(q, qid, results))

    def _link_items(self, q: Query, qid: bytes, results: Results) -> LinkItems:
        """What READDIRPLUS items of a value directory's result links share (as
        ``_link_entry`` makes each one's attributes and handle), made once per listing: a
        page then packs each entry's own fields between them (``ResultListing.encoded_page``)."""
        template = fattr(VStat(_LINK_MODE, 0, 1, 0, 0, 0, 0, 0, results.mtime_ns, results.mtime_ns,
                               results.mtime_ns), self.fsid)
        scope = results.scope_path
        # a link's text: ``../`` per level up to D, then the path below D (``_relative_target``)
        shift = 3 * q.depth - (len(scope) + 1 if scope else 0)
        key = q.key()
        if is_inline(key):
            head, tail = _INLINE_HANDLE.pack(HANDLE_VERSION, KIND_LINK_INLINE, self.export_id), key
        else:
            head, tail = _QUERY_HANDLE.pack(HANDLE_VERSION, KIND_LINK, self.export_id, qid), b""
        return LinkItems(EntryplusRun(template, head, tail), shift)

    def _lab_entries(self, q: Query) -> Iterator[tuple[bytes, int]]:
        scope = self._scope_node(q)
        for name, ino, is_dir in self.local.scandir_typed(scope):
            if not is_dir and name.endswith(q.suffix or b""):
                yield name, ino

    def listing_key(self, d: Node | VNode) -> Hashable:
        """A query directory's listing is its results: take the fault now and name them
        exactly.  Real directories and lab views: None (their mtime tells)."""
        if isinstance(d, Node) or d.query.is_lab:
            return None
        results = self._fault(d)
        who = identity.current()
        if who is None or who.uid == 0:
            return (results.version, results.digest)
        return (results.version, results.digest, who, self._visible(d, results)[1])

    def _entry_fileid(self, q: Query, found: Any) -> int:
        if q.is_field_dir:
            return virtual_fileid(q.with_value(found).qid())
        if self.results == "files":
            return found.ino
        return virtual_fileid(q.qid(), struct.pack(">Q", found.ino))

    def entry(self, d: Node | VNode, name: bytes) -> tuple[Any, bytes]:
        """Attributes and handle of a directory entry (READDIRPLUS)."""
        if isinstance(d, Node):
            return self.local.entry(d, name)
        q = d.query
        if q.is_lab:
            return self.local.entry(self._scope_node(q), name)
        if q.is_field_dir or self.results == "files":
            n = self.lookup(d, name)
            return self.stat(n), n.fh
        # A value directory's link: everything is in the results the page's names came from
        # (the hot path of listing a large value directory: no new fault per entry).
        memo = self._link_memo
        qid = memo[1] if memo[0] == q else q.qid()
        results = self._cache.get(qid) or self._fault(d)
        found = self._visible(d, results)[0].get(name)  # names differ between callers
        if found is None:
            raise NfsError(nfsstat3.NFS3ERR_NOENT)
        return self._link_entry(q, qid, results, found)

    def _link_entry(self, q: Query, qid: bytes, results: Results, found: Any) -> tuple[VStat, bytes]:
        """A result link's attributes and handle (as ``_link_node`` and ``_link_stat`` make
        them, without the node); made per page, not kept, so memory does not grow with how
        much of a large directory was listed."""
        target = self._relative_target(q, results.scope_path, found.path)
        m = results.mtime_ns
        ino8 = struct.pack(">Q", found.ino)
        memo = self._link_memo  # the query's handle parts, the same for every entry of a page
        if memo[0] != q:
            key = q.key()
            memo = self._link_memo = (q, qid, is_inline(key), key)
        _, qid, inline, key = memo
        if inline:
            fh = _INLINE_LINK_HANDLE.pack(HANDLE_VERSION, KIND_LINK_INLINE, self.export_id, found.ino) + key
        else:
            fh = _LINK_HANDLE.pack(HANDLE_VERSION, KIND_LINK, self.export_id, qid, found.ino)
        return VStat(_LINK_MODE, virtual_fileid(qid, ino8), 1, 0, 0, len(target), 0, 0, m, m, m), fh

    # -- changes -------------------------------------------------------------------------
    def _real_dir(self, d: Node | VNode, name: bytes) -> Node:
        """Where a change inside ``d`` really happens: D for a lab view (names must match
        its suffix), nowhere (EROFS) for field and value directories."""
        if isinstance(d, Node):
            return d
        if d.query.is_lab:
            self._check_suffix(d.query, name, nfsstat3.NFS3ERR_INVAL)
            return self._scope_node(d.query)
        raise NfsError(nfsstat3.NFS3ERR_ROFS, "query directories are read-only")

    @staticmethod
    def _real(n: Node | VNode) -> Node:
        if isinstance(n, Node):
            return n
        if n.is_dir:
            raise NfsError(nfsstat3.NFS3ERR_ROFS, "query directories are read-only")
        raise NfsError(nfsstat3.NFS3ERR_ROFS, "result links are read-only")

    def _noted(self, d: Node, name: bytes, created: os.stat_result | None = None,
               removed: bool = False) -> None:
        """Queue the change for the index.  Every directory fault flushes the queue before it
        runs its query, so the next listing of a query directory shows the change; between
        queries, changes are applied in batches (create-then-remove costs nothing).
        ``created``: the entry is a new empty file the server just made, and this its
        creation's stat (``Index.note_created``, where the index has it).  ``removed``: the
        server just unlinked it, a non-directory, so the flush need not read it
        (``Index.note_removed``, where the index has it)."""
        if created is not None and self._note_created is not None:
            self._note_created(d.ino, name, created)
        elif removed and self._note_removed is not None:
            self._note_removed(d.ino, name)
        else:
            self.index.note_entry(d.ino, name)
        self._names_tick = next(self._ticks)  # after queuing it: see _unapplied

    def _noted_ino(self, ino: int) -> None:
        """Queue a change of a file's content or attributes (as ``_noted``)."""
        self.index.note_ino(ino)
        self._data_tick = next(self._ticks)

    def create_file(self, d: Node | VNode, name: bytes, mode: int, exclusive: bool) -> Node:
        real = self._real_dir(d, name)
        n = self.local.create_file(real, name, mode, exclusive)
        self._noted(real, name, n._fresh)  # (None: an existing file, reused)
        return n

    def mkdir(self, d: Node | VNode, name: bytes, mode: int) -> Node | VNode:
        if isinstance(d, VNode) and claims(d.query):
            return self.tags.mkdir(d, name)
        real = self._real_dir(d, name)
        n = self.local.mkdir(real, name, mode)
        self._noted(real, name)
        return n

    def symlink(self, d: Node | VNode, name: bytes, target: bytes) -> Node | VNode:
        if isinstance(d, VNode) and claims(d.query):
            return self.tags.symlink(d, name, target)
        real = self._real_dir(d, name)
        n = self.local.symlink(real, name, target)
        self._noted(real, name)
        return n

    def mknod(self, d: Node | VNode, name: bytes, mode: int, device: int = 0) -> Node:
        real = self._real_dir(d, name)
        n = self.local.mknod(real, name, mode, device)
        self._noted(real, name)
        return n

    def remove(self, d: Node | VNode, name: bytes, directory: bool) -> None:
        if isinstance(d, VNode) and claims(d.query):
            return self.tags.remove(d, name, directory)
        real = self._real_dir(d, name)
        self.local.remove(real, name, directory)
        self._noted(real, name, removed=not directory)

    def rename(self, src: Node | VNode, sname: bytes, dst: Node | VNode, dname: bytes) -> None:
        if isinstance(src, VNode) and claims(src.query):
            return self.tags.rename(src, sname, dst, dname)
        rsrc, rdst = self._real_dir(src, sname), self._real_dir(dst, dname)
        self.local.rename(rsrc, sname, rdst, dname)
        self.index.note_entry(rsrc.ino, sname)
        self._noted(rdst, dname)

    def link(self, n: Node | VNode, d: Node | VNode, name: bytes) -> None:
        if isinstance(d, VNode) and claims(d.query):
            return self.tags.link(n, d, name)
        real = self._real_dir(d, name)
        self.local.link(self._real(n), real, name)
        self._noted(real, name)

    def set_mode(self, n: Node | VNode, mode: int) -> None:
        self.local.set_mode(n if isinstance(n, Node) else self._real(n), mode)  # (a frame less: chmod)
        self._noted_ino(n.ino)

    def set_owner(self, n: Node | VNode, uid: int, gid: int) -> None:
        if isinstance(n, VNode) and claims(n.query):
            return  # a tag directory or link just made: the reply gives it to its caller
        self.local.set_owner(self._real(n), uid, gid)
        self._noted_ino(n.ino)

    def truncate(self, n: Node | VNode, size: int) -> None:
        self.local.truncate(self._real(n), size)
        self._noted_ino(n.ino)

    def set_times(self, n: Node | VNode, atime: TimeSet, mtime: TimeSet) -> None:
        self.local.set_times(self._real(n), atime, mtime)
        self._noted_ino(n.ino)

    def read(self, n: Node | VNode, offset: int, count: int, cached: bool = False) -> bytes | memoryview:
        if not isinstance(n, Node):
            raise NfsError(nfsstat3.NFS3ERR_ISDIR if n.is_dir else nfsstat3.NFS3ERR_INVAL)
        return self.local.read(n, offset, count, cached)

    def write(self, n: Node | VNode, offset: int, data: memoryview, sync: int) -> int:
        if not isinstance(n, Node):
            raise NfsError(nfsstat3.NFS3ERR_ISDIR if n.is_dir else nfsstat3.NFS3ERR_ROFS)
        done = self.local.write(n, offset, data, sync)
        self._noted_ino(n.ino)  # re-extracted lazily: before the next query, or within a second
        return done

    def commit(self, n: Node | VNode) -> None:
        if isinstance(n, Node):
            self.local.commit(n)

    def open_for_writing(self, n: Node | VNode) -> None:
        if isinstance(n, Node):
            self.local.open_for_writing(n)

    def put_verifier(self, n: Node | VNode, verf: bytes) -> None:
        self.local.put_verifier(self._real(n), verf)

    def verifier(self, n: Node | VNode) -> bytes | None:
        return self.local.verifier(n) if isinstance(n, Node) else None

    def flush(self) -> None:
        self.local.flush()

    def close(self) -> None:
        self.local.close()

