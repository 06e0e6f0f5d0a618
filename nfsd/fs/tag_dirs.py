"""Tagging with ordinary file operations, inside ``tag:`` directories (see nfsd/fs/tags.py).

Every value directory is read-only, except those of a *user field* (``tag``), where the
operations people already know set and clear the field's values:

* ``mkdir D/tag:/vacation`` declares the tag (an empty value directory that persists);
* ``ln -s ../../photos/beach.jpg D/tag:/vacation/`` (a symlink whose target resolves to a
  regular file of the scope D) or ``ln photos/beach.jpg D/tag:/vacation/`` (LINK with the
  file's handle) tags the file; nothing is created on disk;
* ``rm D/tag:/vacation/beach.jpg`` untags it; ``mv D/tag:/a/x D/tag:/b/`` moves the tag
  (RENAME between two value directories of the same field);
* ``rmdir D/tag:/vacation`` forgets a tag no file carries any more;
* ``mv D/tag:/trip D/tag:/holiday`` renames a tag on every file that carries it.

The value directory may hold other terms too (``tag:/vacation/ext:/jpg``): only the user
field's value is set or cleared.  Changing a file's values needs what changing its user
attributes needs, asked of the kernel as the caller (nfsd/fs/identity.py): write permission on
the file.  The index is brought up to date before the reply, so the next listing shows it.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from typing import TYPE_CHECKING, Any, Sequence

from protocol.nfs3 import nfsstat3

from . import identity
from ..nfs3.errors import NfsError
from ..index.search import FileRef
from .localfs import Node, check_name, proc_path
from ..query.names import Query
from .tags import USER_FIELDS, TagError, change_values, value_of_name

if TYPE_CHECKING:
    from .semantic import SemanticFS, VNode

log = logging.getLogger("pysfsd.tags")

MAX_DECLARED = 100_000  # state-store entries of an export's tags: endless mkdirs get NOSPC


def user_term(q: Query) -> tuple[bytes, bytes] | None:
    """The (field, value) of a user field in a value directory's query, if exactly one."""
    if q.is_lab or q.is_field_dir:
        return None
    found = [t for t in q.terms if t[0] in USER_FIELDS]
    return found[0] if len(found) == 1 else None


def is_user_field_dir(q: Query) -> bool:
    """``D/tag:`` itself (no other term): where tags are made and removed."""
    return not q.is_lab and q.open_field in USER_FIELDS and not q.terms


def claims(q: Query) -> bool:
    """Whether changes inside this query directory are tag operations."""
    return is_user_field_dir(q) or user_term(q) is not None


class TagDirs:
    """The tag operations of one export's semantic layer."""

    def __init__(self, fs: "SemanticFS") -> None:
        self.fs = fs
        self.index = fs.index
        self.store = fs.index.user_values

    # -- listing --------------------------------------------------------------------------
    def with_declared(self, q: Query, values: list[bytes]) -> list[bytes]:
        """A user field directory lists the declared values besides those files carry."""
        if not is_user_field_dir(q):
            return values
        assert q.open_field is not None
        declared = self.store.declared(q.open_field)
        return sorted(set(values).union(declared)) if declared else values

    # -- making and removing tags -----------------------------------------------------------
    def mkdir(self, d: "VNode", name: bytes) -> "VNode":
        field, value = self._named(d, name)
        q = d.query
        self._flush()
        if self.store.is_declared(field, value) or self._carried(field, value):
            raise NfsError(nfsstat3.NFS3ERR_EXIST)
        if self.store.entries() >= MAX_DECLARED:
            raise NfsError(nfsstat3.NFS3ERR_NOSPC, "too many declared tags")
        self.store.declare(field, value)
        self.fs.forget_results()
        return self.fs._placeholder(q.with_value(value))

    def rmdir(self, d: "VNode", name: bytes) -> None:
        field, value = self._named(d, name)
        if self._carried(field, value):
            raise NfsError(nfsstat3.NFS3ERR_NOTEMPTY, "files still carry this tag")
        if not self.store.declare(field, value, present=False):
            raise NfsError(nfsstat3.NFS3ERR_NOENT)
        self.fs.forget_results()

    @staticmethod
    def _named(d: "VNode", name: bytes) -> tuple[bytes, bytes]:
        """(field, value) of a name in a user field directory, where tags are made and removed."""
        if not is_user_field_dir(d.query):
            raise NfsError(nfsstat3.NFS3ERR_ROFS, "tags are made and removed in FIELD: itself")
        assert d.query.open_field is not None
        check_name(name)
        return d.query.open_field, value_of_name(name)

    def _carried(self, field: bytes, value: bytes) -> bool:
        """Whether any file of the export carries the value (the queue applied first)."""
        self._flush()
        return bool(self.index.query(self.index.root_ino, [(field, value)]))

    # -- tagging ----------------------------------------------------------------------------
    def symlink(self, d: "VNode", name: bytes, target: bytes) -> "VNode":
        """``ln -s TARGET tag:/v/``: tag the file TARGET resolves to (from the value
        directory, as a client would resolve it), which must be a regular file of D."""
        term = self._term(d.query)
        check_name(name)
        self._flush()
        scope = self.fs._scope_path(d.query)
        path = self._resolve(d.query, scope, target)
        n = self._walk(path)
        self._change(n, term[0], add=[term[1]], where=[d])
        return self.fs._link_node(d.query, n.ino, self.fs._relative_target(d.query, scope, path))

    def link(self, n: Node | Any, d: "VNode", name: bytes) -> None:
        """``ln FILE tag:/v/``: LINK with the file's handle tags it."""
        term = self._term(d.query)
        check_name(name)
        if not isinstance(n, Node):
            raise NfsError(nfsstat3.NFS3ERR_XDEV, "only real files can be tagged")
        self._flush()
        path = self.index.path_of(n.ino)
        scope = self.fs._scope_path(d.query)
        if path is None or (scope and not path.startswith(scope + b"/")):
            raise NfsError(nfsstat3.NFS3ERR_XDEV, "the file is not in the query's scope")
        self._change(n, term[0], add=[term[1]], where=[d])

    def remove(self, d: "VNode", name: bytes, directory: bool) -> None:
        if directory:
            self.rmdir(d, name)
            return
        term = self._term(d.query)
        self._change(self._result(d, name), term[0], drop=[term[1]], where=[d])

    def rename(self, src: "VNode", sname: bytes, dst: Any, dname: bytes) -> None:
        """``mv tag:/a/x tag:/b/``: the file loses ``a`` and gets ``b`` in one change."""
        if is_user_field_dir(src.query):
            return self._rename_tag(src, sname, dst, dname)
        sterm = self._term(src.query)
        dterm = user_term(dst.query) if not isinstance(dst, Node) else None
        if dterm is None or dterm[0] != sterm[0]:
            raise NfsError(nfsstat3.NFS3ERR_ROFS, "a tag moves only to another value of its field")
        check_name(dname)
        self._flush()
        n = self._result(src, sname)
        scope = self.fs._scope_path(dst.query)
        path = self.index.path_of(n.ino)
        if path is None or (scope and not path.startswith(scope + b"/")):
            raise NfsError(nfsstat3.NFS3ERR_XDEV, "the file is not in the target's scope")
        if dterm[1] != sterm[1]:
            self._change(n, sterm[0], add=[dterm[1]], drop=[sterm[1]], where=[src, dst])

    def _rename_tag(self, d: "VNode", sname: bytes, dst: Any, dname: bytes) -> None:
        """``mv D/tag:/a D/tag:/b``: every file of the export carrying ``a`` carries ``b``
        instead, and the declared tag is renamed (a tag is the export's, as for ``rmdir``).
        As for a directory: onto a tag no file carries it replaces it; onto one carried,
        NOTEMPTY.  All or nothing: a carrier the caller may not reach by path, or may not
        change (the tagging rule), refuses the whole rename, the files already changed
        changed back."""
        if isinstance(dst, Node) or dst.query.qid() != d.query.qid():
            raise NfsError(nfsstat3.NFS3ERR_ROFS, "a tag is renamed only within its field directory")
        field, old = self._named(d, sname)
        new = self._named(dst, dname)[1]
        self._flush()
        refs = self.index.query(self.index.root_ino, [(field, old)])
        if not refs and not self.store.is_declared(field, old):
            raise NfsError(nfsstat3.NFS3ERR_NOENT)
        if new == old:
            return
        if self._carried(field, new):
            raise NfsError(nfsstat3.NFS3ERR_NOTEMPTY, "files carry the new name already")
        who = identity.current()
        if who is not None and who.uid != 0:
            reach = identity.Reach(self.fs.root)
            if not all(reach.visible(r.path, who, False) for r in refs):
                raise NfsError(nfsstat3.NFS3ERR_ACCES, "a file carrying the tag is out of the caller's reach")
        declared = self.store.is_declared(field, new)
        done: list[Node] = []
        try:
            for r in refs:
                n = self.fs._real_node(r)
                self._change(n, field, add=[new], drop=[old])
                done.append(n)
        except BaseException:
            for n in reversed(done):  # as the caller, who just changed them
                try:
                    self._change(n, field, add=[old], drop=[new])
                except (OSError, NfsError) as exc:
                    log.warning("tag rename %r -> %r: %s keeps %r: %s", old, new, n.name, new, exc)
            if not declared and not self._carried(field, new):
                self.store.declare(field, new, present=False)  # (tagging declared it)
                self.fs.forget_results()
            raise
        self.store.declare(field, new)
        self.store.declare(field, old, present=False)
        self.fs.forget_results()

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _term(q: Query) -> tuple[bytes, bytes]:
        term = user_term(q)
        if term is None:
            raise NfsError(nfsstat3.NFS3ERR_ROFS, "query directories are read-only")
        return term

    def _flush(self) -> None:
        """Apply the index's queue (as the server); until the start-up scan is complete the
        index cannot tell which files carry a tag: the call is held, as for a directory
        fault (nfsd/fs/indexwaits.py).  Every path here flushes before it changes anything,
        and ``ready`` is never cleared: a later flush in the same call cannot raise."""
        fs = self.fs
        if not fs.ready.is_set():
            raise fs.index_waits.pending(lambda: not fs.ready.is_set(), "the index is still being built")
        with identity.as_server():
            self.index.flush()

    def _result(self, d: "VNode", name: bytes) -> Node:
        """The real file behind entry ``name`` of a value directory (as the caller sees it)."""
        found = self.fs.lookup(d, name)
        if isinstance(found, Node):
            return found
        if not found.is_link:
            raise NfsError(nfsstat3.NFS3ERR_ISDIR)
        path = self.index.path_of(found.target_ino)
        if path is None:
            raise NfsError(nfsstat3.NFS3ERR_STALE, "result no longer indexed")
        return self.fs._real_node(FileRef(found.target_ino, path))

    def _walk(self, path: bytes) -> Node:
        """The object at an export-relative path, looked up as the caller (search
        permission on every directory on the way, as for any path)."""
        n: Node = self.fs.root
        for part in path.split(b"/"):
            if not n.is_dir:
                raise NfsError(nfsstat3.NFS3ERR_INVAL, "target is not a file of the export")
            n = self.fs.local.lookup(n, part)
        return n

    def _resolve(self, q: Query, scope: bytes, target: bytes) -> bytes:
        """The export-relative path a symlink made in value directory ``q`` points to:
        relative targets from the value directory (``../`` * depth climbs to D); absolute
        ones by the longest tail that names a file of D (the client's mount point is not
        known here)."""
        base = scope.split(b"/") if scope else []
        if target.startswith(b"/"):
            self._flush()  # a file just made is known by its path only then
            parts = [p for p in target.split(b"/") if p and p != b"."]
            for i in range(len(parts)):
                tail = parts[i:]
                if b".." in tail:
                    continue
                path = b"/".join(tail)
                inside = not scope or path.startswith(scope + b"/")
                if inside and self.index.ino_of(path) is not None:
                    return path
            raise NfsError(nfsstat3.NFS3ERR_INVAL, "target is not a file of the query's scope")
        stack: list[bytes | None] = [*base, *([None] * q.depth)]
        for part in target.split(b"/"):
            if part in (b"", b"."):
                continue
            if part == b"..":
                if not stack:
                    raise NfsError(nfsstat3.NFS3ERR_INVAL, "target leaves the export")
                stack.pop()
            else:
                stack.append(part)
        if not stack or any(p is None for p in stack):
            raise NfsError(nfsstat3.NFS3ERR_INVAL, "target is not a real file")
        path = b"/".join(p for p in stack if p is not None)
        if scope and not path.startswith(scope + b"/"):
            raise NfsError(nfsstat3.NFS3ERR_INVAL, "target is not in the query's scope")
        return path

    def _change(self, n: Node, field: bytes, add: Sequence[bytes] = (), drop: Sequence[bytes] = (),
                where: Sequence["VNode"] = ()) -> None:
        """Set and clear values of the file, bring the index up to date, and update the
        cached answers of the value directories ``where`` it happened."""
        if not stat.S_ISREG(n.mode):
            raise NfsError(nfsstat3.NFS3ERR_INVAL, "only regular files carry tags")
        self._flush()  # what was pending goes first: then the next flush holds only this change
        cached = [(v, self.fs._cache.get(v.query.qid())) for v in where]
        who = identity.current()
        fallback = self.store
        if who is not None and who.uid != 0:
            st = os.stat(proc_path(n.fd))
            if not identity.may(st, who, identity.W):
                fallback = None  # the kernel decides for attributes; the state store cannot
                self._check_xattr_permission(n)
        change_values(proc_path(n.fd), field, add, drop, fallback)
        declared = [self.store.declare(field, value) for value in add]
        self.index.note_ino(n.ino, force=True)
        self._flush()
        if any(declared):
            self.fs.forget_results()
            return
        for v, results in cached:
            if results is not None:
                self._patch(v, results, n)

    def _patch(self, d: "VNode", old: Any, n: Node) -> None:
        """Update the cached answer of value directory ``d`` for a change of file ``n`` alone,
        instead of running its query again (a fault costs time linear in its results: 50 ms
        for 10,000; tagging 10,000 files one by one would be quadratic).  Only when the last
        flush applied nothing but notes about ``n`` and moved the index exactly one version
        on from the cached answer's, so that answer plus this file's new state is exactly
        what the query would return; anything else leaves the next fault to run the query."""
        last = self.index.last_flush
        if (last is None or last.before != old.version or last.after != last.before + 1
                or self.index.version != last.after or last.dirs or last.inos - {n.ino}
                or any(e != (n.parent, n.name) for e in last.entries)):
            return
        q = d.query
        path = self.index.path_of(n.ino)
        if path is None or b"name" in q.fields_used():
            return
        from .semantic import result_names  # the fault's own naming rules
        base = os.path.basename(path)
        ref = FileRef(n.ino, path)
        if base not in result_names([ref]):
            return  # a field-like name: renamed even alone
        # the name a clash gives it (with a second result of the same name)
        clash = [k for k, r in result_names([ref, FileRef(0, b"\0/" + base)]).items() if r is ref]
        if clash[0] in old.names:
            return  # it is there under its clash name: let the query rename
        same = self.index.query(q.scope, [*q.terms, (b"name", base)])
        if any(r.ino != n.ino for r in same):
            return  # another result has this name: clash renaming
        present = old.names.get(base)
        if present is not None and present.ino != n.ino:
            return
        names = old.names.replaced(base, same[0] if same else None)
        self.fs.replace_results(q, old, names, last.after, (b"+" if same else b"-") + base)

    @staticmethod
    def _check_xattr_permission(n: Node) -> None:
        """A caller without write permission: the kernel refuses attributes; where the file
        system has none, refuse here the same way."""
        try:
            os.getxattr(proc_path(n.fd), "user.pysfsd.probe")
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                raise TagError(errno.EACCES, "no write permission on the file") from None
