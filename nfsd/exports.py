"""Exports: which clients may use a directory, how, and as whom.

Syntax
------
``--exports FILE`` reads the familiar ``/etc/exports`` syntax (exports(5)); ``--export``
takes either a bare directory or one such line::

    # comment
    /srv/data   10.0.0.0/8(rw,no_root_squash) host.example(ro) *(ro,all_squash,anonuid=1000)
    "/srv/with space"  192.168.1.0/255.255.255.0(rw,insecure) \\
                       2001:db8::/32(rw)

A line is a path (double quotes for spaces; ``\\040``-style octal escapes too) and client
specifications ``CLIENT(OPTIONS)``, with no space before the parenthesis: ``host (rw)`` is
*two* specifications, ``host`` with the defaults and ``(rw)`` for everyone, as in knfsd.  A
line that is only a path exports to everyone with the defaults.  ``#`` starts a comment, a
trailing backslash continues the line, and the same directory on several lines (or in both
``--exports`` and ``--export``) has its specifications joined in order (file first).

Clients: ``*`` (anyone), an address, a network (``10.0.0.0/8``, ``10.0.0.0/255.0.0.0``,
``2001:db8::/32``), or a host name, resolved with ``getaddrinfo`` once at start-up (a name
that does not resolve is a start-up error: a rule silently matching nobody is worse).
Host-name wildcards and ``@netgroups`` need reverse lookups and are refused.  The first
specification that matches the client's address applies; no match, no access.

Options (unknown ones stop the server with a message, rather than being ignored):

``rw`` / ``ro``
    may the client modify (``ro``: every modifying procedure gets NFS3ERR_ROFS).
``root_squash`` / ``no_root_squash``
    uid 0 acts as ``anonuid``, gid 0 (primary or supplementary) as ``anongid``.
``all_squash`` / ``no_all_squash``
    everyone acts as ``anonuid``/``anongid`` with no supplementary groups.
``anonuid=N``, ``anongid=N``
    the anonymous identity (default 65534, *nobody*); AUTH_NONE callers are anonymous.
``secure`` / ``insecure``
    ``secure`` requires a source port below 1024 (a client root started), for MOUNT and NFS.
``sync``, ``wdelay``, ``no_wdelay``, ``subtree_check``, ``no_subtree_check``, ``sec=sys``
    accepted because they describe what this server does anyway (WRITE honours ``stable``;
    handles never reach outside their export; AUTH_SYS).

Squashing follows knfsd's ``nfsd_setuser``: ``root_squash`` maps uid 0 and every gid 0 and
keeps the other supplementary groups (a client that can send uid 0 can send any groups, so
dropping them would protect nothing); ``all_squash`` drops them.

Defaults.  A specification in the exports syntax has knfsd's defaults: ``ro``,
``root_squash``, ``secure``.  A bare ``--export DIR`` means ``DIR *(rw,root_squash,insecure)``,
NFS-Ganesha's defaults, so a first mount works from an unprivileged client or through NAT;
tighten it with an explicit line (``--export 'DIR 192.168.1.0/24(rw,secure)'``).

Enforcement
-----------
``GuardedNfs3`` stands in front of the NFSv3 handlers: every call's handles name their
export (the export id is in every handle, real or virtual), and the client must be allowed
by that export's rules -- a handle alone is not a capability: one of an export the client
may not use gets NFS3ERR_ACCES, without attributes.  Modifying procedures on a read-only
export get NFS3ERR_ROFS with full wcc data.  Handlers then see the *effective* (squashed)
credentials, and, when the server runs as root, run with them as the thread's file-system
identity (``nfsd.identity``).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from types import MethodType
from typing import Any, Callable, Iterator, Sequence

from protocol import nfs3
from protocol.nfs3 import NFS3_OK, nfsstat3
from protocol.program import Procedure
from xdr import Union
from protocol.rpc import AUTH_NONE, Credentials

from . import identity
from .config_error import ConfigError
from .attrs import fattr, wcc, wcc_before
from .errors import NfsError
from .handles import handle_kind
from .identity import Identity
from .backend import StatResult
from .call import CallContext
from .nfs3_procedures import NFS3_PROCEDURES, Guard
from .nfs3_service import Nfs3Service

log = logging.getLogger("pysfsd.exports")

ANONYMOUS = 65534
MAX_ID = 0xFFFFFFFE


class ExportsError(ConfigError):
    """A malformed exports line or option: the server does not start."""


@dataclass(frozen=True)
class Options:
    writable: bool = False
    root_squash: bool = True
    all_squash: bool = False
    anonuid: int = ANONYMOUS
    anongid: int = ANONYMOUS
    secure: bool = True


LINE_DEFAULTS = Options()  # exports(5): ro, root_squash, secure
BARE_DEFAULTS = Options(writable=True, secure=False)  # --export DIR: Ganesha's
_FLAGS = {
    "rw": ("writable", True), "ro": ("writable", False),
    "root_squash": ("root_squash", True), "no_root_squash": ("root_squash", False),
    "all_squash": ("all_squash", True), "no_all_squash": ("all_squash", False),
    "secure": ("secure", True), "insecure": ("secure", False),
}
_ACCEPTED = {"sync", "wdelay", "no_wdelay", "subtree_check", "no_subtree_check", "sec=sys"}


def parse_options(text: str, defaults: Options, where: str) -> Options:
    values = dict(defaults.__dict__)
    for opt in text.split(","):
        opt = opt.strip()
        if opt in _FLAGS:
            key, value = _FLAGS[opt]
            values[key] = value
        elif opt.startswith(("anonuid=", "anongid=")):
            name, _, number = opt.partition("=")
            try:
                n = int(number, 10)
            except ValueError:
                n = -1
            if not 0 <= n <= MAX_ID:
                raise ExportsError(f"{where}: {name} wants a number from 0 to {MAX_ID}, not {number!r}")
            values[name] = n
        elif opt in _ACCEPTED:
            pass
        else:
            known = ", ".join(sorted([*_FLAGS, "anonuid=N", "anongid=N", *_ACCEPTED]))
            raise ExportsError(f"{where}: unknown or unsupported export option {opt!r} (known: {known})")
    return Options(**values)


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(host: str) -> Address | None:
    """The address of a client as the transport reports it (IPv4-mapped IPv6 unmapped)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass
class ClientSpec:
    """One ``CLIENT(OPTIONS)``: who it matches, and the options for them."""

    pattern: str
    options: Options
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    anyone: bool = False
    _effective: dict[int, tuple[Credentials, Credentials, Identity]] = field(default_factory=dict, repr=False)

    def matches(self, addr: Address | None) -> bool:
        if self.anyone:
            return True
        return addr is not None and any(addr in net for net in self.networks)

    def effective(self, cred: Credentials) -> tuple[Credentials, Identity]:
        """The caller after squashing: credentials for the handlers, identity to act as."""
        known = self._effective.get(id(cred))
        if known is not None and known[0] is cred:
            return known[1], known[2]
        o = self.options
        groups: tuple[int, ...]
        if cred.flavor == AUTH_NONE or cred.uid is None or o.all_squash:
            uid, gid, groups = o.anonuid, o.anongid, ()
        else:
            uid, gid, groups = cred.uid, cred.gid or 0, tuple(cred.gids)
            if o.root_squash:
                uid = o.anonuid if uid == 0 else uid
                gid = o.anongid if gid == 0 else gid
                groups = tuple(o.anongid if g == 0 else g for g in groups)
        ident = Identity(uid, gid, tuple(sorted(set(groups))))
        unchanged = (uid, gid, groups) == (cred.uid, cred.gid, tuple(cred.gids))
        # None: unchanged, the handlers see the very credentials of the call
        squashed = None if unchanged else Credentials(cred.flavor, uid, gid, groups, cred.machinename)
        if len(self._effective) > 4096:
            self._effective.clear()
        # Keyed by identity: the RPC layer hands out the same object for the same credential
        # body (hashing a tuple per call costs more); holding it keeps its id unique.
        self._effective[id(cred)] = (cred, squashed or cred, ident)
        return squashed or cred, ident


def parse_client(token: str, defaults: Options, where: str) -> ClientSpec:
    host, paren, rest = token.partition("(")
    opts = ""
    if paren:
        if not rest.endswith(")") or "(" in rest[:-1]:
            raise ExportsError(f"{where}: malformed client specification {token!r}")
        opts = rest[:-1]
    options = parse_options(opts, defaults, where) if opts else defaults
    host = host or "*"
    if host == "*":
        return ClientSpec("*", options, anyone=True)
    if host.startswith("@"):
        raise ExportsError(f"{where}: netgroups ({host}) are not supported; use addresses or networks")
    if any(c in host for c in "*?["):
        raise ExportsError(f"{where}: host name wildcards ({host}) are not supported; use a network "
                           "such as 192.168.1.0/24")
    if "/" in host:
        try:
            return ClientSpec(host, options, (ipaddress.ip_network(host, strict=False),))
        except ValueError as exc:
            raise ExportsError(f"{where}: bad network {host!r}: {exc}") from None
    addr = client_address(host)
    if addr is not None:
        return ClientSpec(host, options, (ipaddress.ip_network(addr),))
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ExportsError(f"{where}: cannot resolve host {host!r}: {exc}") from None
    nets = {ipaddress.ip_network(a) for a in (client_address(str(i[4][0])) for i in infos) if a is not None}
    if not nets:
        raise ExportsError(f"{where}: host {host!r} has no address")
    return ClientSpec(host, options, tuple(sorted(nets, key=str)))


@dataclass
class Export:
    """An exported directory and its client specifications, in order."""

    path: str
    clients: list[ClientSpec]
    _rules: dict[str, ClientSpec | None] = field(default_factory=dict, repr=False)

    def rule_for(self, host: str) -> ClientSpec | None:
        """The first specification matching ``host`` (an address), or None: no access."""
        try:
            return self._rules[host]
        except KeyError:
            pass
        addr = client_address(host)
        rule = next((c for c in self.clients if c.matches(addr)), None)
        if len(self._rules) > 65536:
            self._rules.clear()
        self._rules[host] = rule
        return rule


# -- the syntax -----------------------------------------------------------------------------
_OCTAL = re.compile(r"\\([0-7]{3})")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each line, comments removed, continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(pending).strip()
        pending = []
        if joined:
            yield start, joined
    if pending and " ".join(pending).strip():
        yield start, " ".join(pending).strip()


def _strip_comment(line: str) -> str:
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c == "#" and not quoted:
            return line[:i].rstrip()
    return line.rstrip()


def _tokens(line: str, where: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    started = False
    for c in line:
        if c == '"':
            quoted = not quoted
            started = True
        elif c.isspace() and not quoted:
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(c)
            started = True
    if quoted:
        raise ExportsError(f"{where}: unterminated quote")
    if started:
        out.append("".join(cur))
    return out


def parse_line(line: str, where: str, defaults: Options = LINE_DEFAULTS) -> Export:
    """One exports line: ``PATH [CLIENT(OPTIONS)]...``."""
    tokens = _tokens(line, where)
    path = _OCTAL.sub(lambda m: chr(int(m[1], 8)), tokens[0])
    if not path.startswith("/"):
        raise ExportsError(f"{where}: the exported path must be absolute, not {path!r}")
    specs = tokens[1:] or ["*"]
    for i, t in enumerate(specs):
        if t.startswith("-"):
            raise ExportsError(f"{where}: line-wide default options ({t}) are not supported; "
                               "give the options to each client")
        if t.startswith("("):
            # exportfs warns too: 'host (rw)' gives host the defaults (ro) and (rw) to everyone.
            if i:
                prev = specs[i - 1]
                log.warning("%s: '%s %s' is two client specifications, %r with the defaults "
                            "(ro,root_squash,secure) and %r for everyone; write '%s%s' (no space before "
                            "the parenthesis)", where, prev, t, prev, t, prev, t)
            else:
                log.warning("%s: %r names no client, so it applies to everyone; write '*%s' to say so",
                            where, t, t)
    return Export(path, [parse_client(t, defaults, where) for t in specs])


def parse_exports(text: str, source: str = "exports") -> list[Export]:
    return [parse_line(line, f"{source}:{number}") for number, line in _logical_lines(text)]


def parse_export_arg(arg: str) -> Export:
    """``--export``: a bare directory (``*(rw,root_squash,insecure)``) or an exports line."""
    if os.path.isdir(arg) or not any(c.isspace() for c in arg.strip()):
        return Export(arg, [ClientSpec("*", BARE_DEFAULTS, anyone=True)])
    return parse_line(arg.strip(), f"--export {arg!r}")


def load_exports(args: Sequence[str], exports_file: str | None = None) -> list[Export]:
    """Every export, from ``--exports FILE`` then ``--export`` arguments; a directory given
    more than once keeps one entry whose client specifications are joined in that order."""
    found: list[Export] = []
    if exports_file is not None:
        try:
            with open(exports_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ExportsError(f"cannot read {exports_file}: {exc.strerror}") from None
        found.extend(parse_exports(text, exports_file))
    found.extend(parse_export_arg(a) for a in args)
    merged: dict[str, Export] = {}
    for e in found:
        key = os.path.realpath(e.path)
        if key in merged:
            merged[key].clients.extend(e.clients)
        else:
            merged[key] = Export(key, list(e.clients))
    if not merged:
        raise ExportsError("nothing to export: give --export DIR or --exports FILE")
    return list(merged.values())


# -- the policy --------------------------------------------------------------------------
# Handles of no export are answered STALE by the handlers; until then they act as nobody.
_NO_EXPORT = ClientSpec("", Options(all_squash=True, secure=False), anyone=True)


class ExportPolicy:
    """The exports by export id, and the decision for a client."""

    def __init__(self, exports: dict[int, Export]) -> None:
        self.exports = exports

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
        that handle's export (BADHANDLE for what cannot be one of our handles)."""
        _kind, export_id = handle_kind(fh)
        rule = self.allowed(export_id, client)
        if rule is None:
            raise NfsError(nfsstat3.NFS3ERR_ACCES, f"{client[0]}:{client[1]} may not use export {export_id}")
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
      who holds the handle, as in knfsd; COMMIT only flushes what was written);
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

        def call(ctx: CallContext, a: Any) -> Any:
            cred, _ = rule_of(get(a), ctx.client).effective(ctx.cred)
            return handler(_with_cred(ctx, cred), a)
        return call

    def _access(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        rule_of = self.policy.rule
        get, = getters

        def call(ctx: CallContext, a: Any) -> Any:
            rule = rule_of(get(a), ctx.client)
            cred, _ = rule.effective(ctx.cred)
            status, res = handler(_with_cred(ctx, cred), a)
            if status == NFS3_OK and not rule.options.writable:
                res = res._replace(access=res.access & ~_MODIFY_BITS)
            return status, res
        return call

    def _read(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any]) -> Callable[..., Any]:
        rule_of = self.policy.rule
        get, = getters
        resolve = self.inner.resolve

        def call(ctx: CallContext, a: Any) -> Any:
            fh = get(a)
            cred, ident = rule_of(fh, ctx.client).effective(ctx.cred)
            if self.acting and ident.uid != 0:
                fs, n = resolve(fh)
                st = fs.stat(n)
                if not identity.may_read_data(st, ident):
                    return nfsstat3.NFS3ERR_ACCES, nfs3.READ3resfail.cls(fattr(st, fs.fsid))
            return handler(_with_cred(ctx, cred), a)
        return call

    def _switch(self, proc: Procedure, handler: Callable[..., Any], getters: Sequence[Any],
                check: Callable[[Any, Any, Any, Identity, Any], tuple[int, Any] | None] | None = None
                ) -> Callable[..., Any]:
        """A call acting as the caller, after the export checks and, for a caller other than
        root, after ``check`` (a check of the server's own: a failure result, or None)."""
        rule_of = self.policy.rule
        resolve = self.inner.resolve
        become, restore = identity.become, identity.restore
        modifying = proc.name in MODIFYING
        acting = self.acting
        get0 = getters[0]
        more = getters[1:]

        def call(ctx: CallContext, a: Any) -> Any:
            fh = get0(a)
            rule = rule_of(fh, ctx.client)  # NFS3ERR_ACCES (raised) before anything else
            if more:
                fhs: tuple[bytes, ...] = (fh, *(g(a) for g in more))
                others = [rule_of(h, ctx.client) for h in fhs[1:]]
            else:
                fhs, others = (fh,), []
            if modifying and not (rule.options.writable and all(r.options.writable for r in others)):
                return self._failure(proc, nfsstat3.NFS3ERR_ROFS, fhs)
            cred, ident = rule.effective(ctx.cred)
            if cred is not ctx.cred:
                ctx = _with_cred(ctx, cred)
            if not acting:
                return handler(ctx, a)
            if ident.uid != 0:
                # Handles are found as the server (see the class docstring).
                fs, n = resolve(fh)
                for h in fhs[1:]:
                    resolve(h)
                if check is not None:
                    refused = check(fs, n, a, ident, fhs)
                    if refused is not None:
                        return refused
            become(ident)
            try:
                return handler(ctx, a)
            finally:
                restore(ident)
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


def _with_cred(ctx: CallContext, cred: Credentials) -> CallContext:
    """The call context with the effective credentials (the same object when unchanged)."""
    if cred is ctx.cred:
        return ctx
    return tuple.__new__(type(ctx), (cred,) + ctx[1:])


