"""The export rules applied to every call: the policy, and the guard in front of NFSv3.

The rules themselves (the exports(5) syntax, options, squashing) are read by ``nfsd.exports.rules``.

Enforcement
-----------
``GuardedNfs3`` stands in front of the NFSv3 handlers: every call's handles name their
export (the export id is in every handle, real or virtual), and the client must be allowed
by that export's rules -- a handle alone is not a capability: one of an export the client
may not use gets NFS3ERR_ACCES, without attributes.  Modifying procedures on a read-only
export get NFS3ERR_ROFS with full wcc data.  Handlers then see the *effective* (squashed)
credentials, and, when the server runs as root, run with them as the thread's file-system
identity (``nfsd.fs.identity``).  A modifying call or COMMIT on an ``async`` export runs
marked as such (``nfsd.fs.dirsync.durability``), so nothing it changes waits for the disk.
"""
from __future__ import annotations

import os
import stat
from types import MethodType
from typing import Any, Callable, Sequence

from protocol import nfs3
from protocol.nfs3 import NFS3_OK, nfsstat3
from protocol.program import Procedure
from protocol.rpc import Credentials
from xdr import Union

from ..fs import identity
from ..fs.dirsync import durability
from ..nfs3.attrs import fattr, wcc, wcc_before
from ..fs.backend import StatResult
from ..rpc.call import CallContext
from ..nfs3.errors import NfsError
from .rules import ClientSpec, Export, Options
from ..fs.handles import handle_kind
from ..fs.identity import Identity
from ..nfs3.procedures import NFS3_PROCEDURES, Guard
from ..nfs3.service import Nfs3Service


# -- the policy --------------------------------------------------------------------------
# Handles of no export are answered STALE by the handlers; until then they act as nobody.
_NO_EXPORT = ClientSpec("", Options(all_squash=True, secure=False), anyone=True)


def _handed(resolved: Callable[[Any], None], found: list[tuple[bytes, Any, Any]],
            handler: Callable[..., Any], ctx: CallContext, a: Any) -> Any:
    """Call ``handler`` with the objects the guard found for its handles
    (``Nfs3Service.resolved``), so it does not resolve them again."""
    resolved(found)
    try:
        return handler(ctx, a)
    finally:
        resolved(None)


class ExportPolicy:
    """The exports by export id, and the decision for a client."""

    def __init__(self, exports: dict[int, Export]) -> None:
        self.exports = exports
        # rules found by (handle's first four bytes, client): see ``rule``
        self._known: dict[tuple[bytes, tuple[str, int]], ClientSpec] = {}

    def allowed(self, export_id: int, client: tuple[str, int]) -> ClientSpec | None:
        """The rule for ``client`` (address, source port) on an export, None if refused."""
        export = self.exports.get(export_id)
        if export is None:
            return _NO_EXPORT
        rule = export.rule_for(client[0])
        if rule is None or (rule.options.secure and not 0 < client[1] < 1024):
            return None
        return rule

    def rule(self, fh: bytes, client: tuple[str, int]) -> ClientSpec:
        """The rule for a call on handle ``fh``; NFS3ERR_ACCES if the client may not use
        that handle's export (BADHANDLE for what cannot be one of our handles).  A rule
        granted is remembered by the handle's version, kind and export id (its first four
        bytes, all ``handle_kind`` checks and reads) and the client: one look-up per call."""
        known = self._known.get((fh[:4], client))
        if known is not None:
            return known
        _kind, export_id = handle_kind(fh)
        rule = self.allowed(export_id, client)
        if rule is None:
            raise NfsError(nfsstat3.NFS3ERR_ACCES, f"{client[0]}:{client[1]} may not use export {export_id}")
        if len(self._known) >= 4096:  # (a client's every connection is a new source port)
            self._known.clear()
        self._known[(fh[:4], client)] = rule
        return rule

    def groups(self, export_id: int) -> list[bytes]:
        """The client specifications of an export as MOUNT's EXPORT lists them."""
        export = self.exports.get(export_id)
        return [os.fsencode(c.pattern) for c in export.clients] if export else []


# -- the NFS front ---------------------------------------------------------------------------
_MODIFY_BITS = nfs3.ACCESS3_MODIFY | nfs3.ACCESS3_EXTEND | nfs3.ACCESS3_DELETE
_BY_NAME = {r.proc.name: r for r in NFS3_PROCEDURES}
MODIFYING = frozenset(r.proc.name for r in NFS3_PROCEDURES if r.guard.modifying)


class GuardedNfs3:
    """The NFSv3 handlers behind the export rules and acting as the caller.

    Per procedure, after the export check (and ROFS for modifications of a read-only
    export):

    * GETATTR, FSSTAT, FSINFO, PATHCONF, COMMIT: as the server (attributes are anybody's
      who holds the handle, as in knfsd; COMMIT only flushes what was written), but GETATTR
      of a virtual object as the caller (a query directory's size counts what they see:
      ``_getattr``);
    * ACCESS: computed from the mode bits for the effective identity (its modify bits
      cleared on a read-only export);
    * READ: checked here (``identity.may_read_data``), then read as the server through the
      file's shared descriptor;
    * WRITE, and SETATTR of the size: checked here (owner override), the file's descriptor
      opened as the server, then the call acts as the caller (so the kernel clears set-id
      bits as for that user);
    * READDIR, READDIRPLUS: read permission on the directory checked here (a listing can
      come from the cache), then as the caller (entry attributes need search permission,
      query directories filter their results by what the caller can reach);
    * LOOKUP, READLINK, SETATTR, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK:
      as the caller, so the kernel decides.

    Root, when not squashed, skips the server's own checks (it passes the kernel's).
    Handles are resolved as the server before switching: finding a handle after a restart
    walks the tree, and a walk that failed for one user's lack of permission must neither
    fail the call nor be remembered as STALE for everyone.  When the server does not run as
    root, only the export rules apply and everything runs as the server's user.
    """

    def __init__(self, inner: Nfs3Service, policy: ExportPolicy, acting: bool | None = None) -> None:
        self.inner = inner
        self.policy = policy
        self.acting = identity.ACTING if acting is None else acting
        wrap = {Guard.PLAIN: self._plain, Guard.ACCESS: self._access, Guard.READ: self._read,
                Guard.AS_CALLER: self._switch, Guard.CHANGE: self._switch, Guard.LISTING: self._listing,
                Guard.SETATTR: self._setattr, Guard.WRITE: self._write}
        #: the guarded handlers by procedure number, as the dispatcher calls them
        self.handlers: dict[int, Callable[[CallContext, Any], Any]] = {}
        for row in NFS3_PROCEDURES:
            handler = MethodType(row.handler, inner)
            self.handlers[row.proc.number] = (handler if row.guard is Guard.NONE
                                              else wrap[row.guard](row.proc, handler, row.handles))

    def trace_credentials(self, name: str, ctx: CallContext, a: Any) -> str | None:
        """For PYSFSD_TRACE: whom the call ran as after the export rules (squashing), which
        is what explains an NFS3ERR_ACCES; None for a call without a handle (NULL)."""
        row = _BY_NAME.get(name)
        if row is None or not row.handles:
            return None
        try:
            rule = self.policy.rule(row.handles[0](a), ctx.client)
        except NfsError:
            return "refused by the export rules"
        _, ident = rule.effective(ctx.cred)
        text = f"uid={ident.uid} gid={ident.gid} gids={list(ident.groups)} (rule {rule.pattern!r}"
        if not self.acting:
            return text + f"; the server is not root, so it runs as uid {identity.SERVER.uid})"
        return text + ")"

    # -- helpers -------------------------------------------------------------------------
    def _failure(self, proc: Procedure, status: int, fhs: Sequence[bytes]) -> tuple[int, Any]:
        """The procedure's resfail with the attributes of the objects involved."""
        res = proc.res
        assert isinstance(res, Union)  # every NFSv3 result but NULL's switches on nfsstat3
        arm: Any = res.arm_type(status)
        values: list[Any] = []
        st: StatResult | None
        for (_, ftype), fh in zip(arm.fields, fhs):
            try:
                fs, n = self.inner.resolve(fh)
                st = fs.stat(n)
                attr = fattr(st, fs.fsid)
            except (OSError, NfsError):
                st, attr = None, None
            values.append(wcc(wcc_before(st), attr) if ftype is nfs3.wcc_data else attr)
        return status, arm.cls(*values)

    # -- the kinds of procedures -----------------------------------------------------------
    def _plain(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        rule_of = self.policy.rule
        get, = getters
        settles = proc.name == "COMMIT"
        if self.acting and proc.name == "GETATTR":
            return self._getattr(proc, handler, getters)

        def call(ctx: CallContext, a: Any) -> Any:
            rule = rule_of(get(a), ctx.client)
            cred, _ = rule.effective(ctx.cred)
            if cred is not ctx.cred:
                ctx = _with_cred(ctx, cred)
            if settles and not rule.options.sync:  # COMMIT on an async export
                return _relaxed(handler, ctx, a)
            return handler(ctx, a)
        return call

    def _getattr(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        """GETATTR as the server, but of a virtual object as a caller other than root: a
        query directory's size is the number of entries *this caller* sees
        (``SemanticFS._seen_count``).  The object found is handed to the handler."""
        rule_of = self.policy.rule
        get, = getters
        resolve, resolved = self.inner.resolve, self.inner.resolved
        as_caller = self._switch(proc, handler, getters)

        def call(ctx: CallContext, a: Any) -> Any:
            fh = get(a)
            cred, ident = rule_of(fh, ctx.client).effective(ctx.cred)
            mapped = ctx if cred is ctx.cred else _with_cred(ctx, cred)
            if ident.uid == 0:
                return handler(mapped, a)
            fs, n = resolve(fh)
            if n.virtual:
                return as_caller(ctx, a)  # (which maps the credentials itself)
            return _handed(resolved, [(fh, fs, n)], handler, mapped, a)
        return call

    def _access(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        rule_of = self.policy.rule
        get, = getters

        def call(ctx: CallContext, a: Any) -> Any:
            rule = rule_of(get(a), ctx.client)
            cred, _ = rule.effective(ctx.cred)
            status, res = handler(ctx if cred is ctx.cred else _with_cred(ctx, cred), a)
            if status == NFS3_OK and not rule.options.writable:
                res = res._replace(access=res.access & ~_MODIFY_BITS)
            return status, res
        return call

    def _read(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        rule_of = self.policy.rule
        get, = getters
        resolve, resolved = self.inner.resolve, self.inner.resolved

        def call(ctx: CallContext, a: Any) -> Any:
            fh = get(a)
            cred, ident = rule_of(fh, ctx.client).effective(ctx.cred)
            if self.acting and ident.uid != 0:
                fs, n = resolve(fh)
                st = fs.stat(n)
                if not identity.may_read_data(st, ident):
                    return nfsstat3.NFS3ERR_ACCES, nfs3.READ3resfail.cls(fattr(st, fs.fsid))
                return _handed(resolved, [(fh, fs, n)], handler, _with_cred(ctx, cred), a)
            return handler(_with_cred(ctx, cred), a)
        return call

    def _switch(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any],
                check: Callable[[Any, Any, Any, Identity, Any], tuple[int, Any] | None] | None = None
                ) -> Callable[..., Any]:
        """A call acting as the caller, after the export checks and, for a caller other than
        root, after ``check`` (a check of the server's own: a failure result, or None)."""
        rule_of = self.policy.rule
        resolve, resolved = self.inner.resolve, self.inner.resolved
        become, restore = identity.become, identity.restore
        modifying = proc.name in MODIFYING
        acting = self.acting
        get0 = getters[0]
        more = getters[1:]
        get1 = more[0] if len(more) == 1 else None

        def call(ctx: CallContext, a: Any) -> Any:
            fh = get0(a)
            rule = rule_of(fh, ctx.client)  # NFS3ERR_ACCES (raised) before anything else
            options = rule.options
            if get1 is not None:  # two handles (RENAME, LINK): no generators, one rule if one export
                fh2 = get1(a)
                # (the rule depends on the export alone: a second handle of the same version,
                # kind and export as the first, which passed, has the same one)
                o2 = options if fh2[:4] == fh[:4] else rule_of(fh2, ctx.client).options
                fhs: tuple[bytes, ...] = (fh, fh2)
                writable = options.writable and o2.writable
                synchronous = options.sync or o2.sync
            elif more:  # (one handle, the common case, builds no tuple or list here)
                fhs = (fh, *(g(a) for g in more))
                others = [rule_of(h, ctx.client).options for h in fhs[1:]]
                writable = options.writable and all(o.writable for o in others)
                synchronous = options.sync or any(o.sync for o in others)
            else:
                fhs, writable, synchronous = (), options.writable, options.sync
            if modifying and not writable:
                return self._failure(proc, nfsstat3.NFS3ERR_ROFS, fhs or (fh,))
            cred, ident = rule.effective(ctx.cred)
            if cred is not ctx.cred:
                ctx = _with_cred(ctx, cred)
            # an async export: nothing the call changes waits for the disk
            relax = modifying and not synchronous
            if relax:
                durability.relaxed = True
            try:
                if not acting:
                    return handler(ctx, a)
                found = None
                if ident.uid != 0:
                    # Handles are found as the server (see the class docstring), once: the
                    # handler is given what was found (``Nfs3Service.resolved``).
                    fs, n = resolve(fh)
                    found = [(fh, fs, n)]
                    for h in fhs[1:]:
                        found.append((h, *resolve(h)))
                    if check is not None:
                        refused = check(fs, n, a, ident, fhs or (fh,))
                        if refused is not None:
                            return refused
                    resolved(found)
                become(ident)
                try:
                    return handler(ctx, a)
                finally:
                    restore(ident)
                    if found is not None:
                        resolved(None)
            finally:
                if relax:
                    durability.relaxed = False
        return call

    def _write(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        def check(fs: Any, n: Any, a: Any, ident: Identity, fhs: Any) -> tuple[int, Any] | None:
            return self._may_write_data(proc, fs, n, ident, fhs)
        return self._switch(proc, handler, getters, check)

    def _setattr(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        def check(fs: Any, n: Any, a: Any, ident: Identity, fhs: Any) -> tuple[int, Any] | None:
            if a.new_attributes.size is None:
                return None
            return self._may_write_data(proc, fs, n, ident, fhs)
        return self._switch(proc, handler, getters, check)

    def _listing(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        def check(fs: Any, n: Any, a: Any, ident: Identity, fhs: Any) -> tuple[int, Any] | None:
            st = fs.stat(n)
            if stat.S_ISDIR(st.st_mode) and not identity.may(st, ident, identity.R):
                return self._failure(proc, nfsstat3.NFS3ERR_ACCES, fhs)
            return None
        return self._switch(proc, handler, getters, check)

    def _may_write_data(self, proc: Procedure, fs: Any, n: Any, ident: Identity, fhs: Any) -> tuple[int, Any] | None:
        """Write permission (the owner always has it, as in knfsd), then the file's shared
        read-write descriptor opened as the server: the check above is what guards it."""
        st = fs.stat(n)
        if not stat.S_ISREG(st.st_mode):
            return None  # the handler answers (ISDIR, INVAL, ROFS for virtual objects)
        if not identity.may(st, ident, identity.W, owner_override=True):
            return self._failure(proc, nfsstat3.NFS3ERR_ACCES, fhs)
        try:
            fs.open_for_writing(n)
        except OSError:
            pass  # the handler meets the same error and answers it
        return None


def _relaxed(serve: Callable[..., Any], *args: Any) -> Any:
    """``serve(*args)`` marked as a call on an ``async`` export: nothing it changes waits
    for the disk (``nfsd.fs.dirsync.durability``)."""
    durability.relaxed = True
    try:
        return serve(*args)
    finally:
        durability.relaxed = False


def _with_cred(ctx: CallContext, cred: Credentials) -> CallContext:
    """The call context with the effective credentials (the same object when unchanged)."""
    if cred is ctx.cred:
        return ctx
    return tuple.__new__(type(ctx), (cred,) + ctx[1:])


