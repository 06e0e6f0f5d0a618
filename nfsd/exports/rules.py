"""Exports: which clients may use a directory, how, and as whom -- the rules as written.

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
``sync`` / ``async``
    ``sync`` (the default): a change is on stable storage before its reply, as NFSv3 wants:
    CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME and LINK wait for an fsync of the
    directory, WRITE honours ``stable``, COMMIT fsyncs.  ``async`` is knfsd's unsafe option
    (``!EX_ISSYNC``): none of these wait for the disk -- namespace replies are not held for
    the directory fsync, a FILE_SYNC or DATA_SYNC WRITE is written like an UNSTABLE one but
    answered with the stability the client asked for, and COMMIT returns without an fsync.
    A crash of the *host* (power, kernel) can then lose changes the client was told are
    done; a crash of the server process alone loses nothing (the kernel holds them).
``wdelay``, ``no_wdelay``, ``subtree_check``, ``no_subtree_check``, ``sec=sys``
    accepted because they describe what this server does anyway (handles never reach
    outside their export; AUTH_SYS).

Squashing follows knfsd's ``nfsd_setuser``: ``root_squash`` maps uid 0 and every gid 0 and
keeps the other supplementary groups (a client that can send uid 0 can send any groups, so
dropping them would protect nothing); ``all_squash`` drops them.

Defaults.  A specification in the exports syntax has knfsd's defaults: ``ro``,
``root_squash``, ``secure``.  A bare ``--export DIR`` means ``DIR *(rw,root_squash,insecure)``,
NFS-Ganesha's defaults, so a first mount works from an unprivileged client or through NAT;
tighten it with an explicit line (``--export 'DIR 192.168.1.0/24(rw,secure)'``).

The rules are enforced per call by ``nfsd.exports.guard`` (the policy and the NFS guard);
this module only reads them and knows what they mean for one caller (squashing).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from protocol.rpc import AUTH_NONE, Credentials

from ..config.errors import ConfigError
from ..fs.identity import Identity

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
    sync: bool = True  # False: exports(5) ``async`` (see the module docstring)


LINE_DEFAULTS = Options()  # exports(5): ro, root_squash, secure
BARE_DEFAULTS = Options(writable=True, secure=False)  # --export DIR: Ganesha's
_FLAGS = {
    "rw": ("writable", True), "ro": ("writable", False),
    "root_squash": ("root_squash", True), "no_root_squash": ("root_squash", False),
    "all_squash": ("all_squash", True), "no_all_squash": ("all_squash", False),
    "secure": ("secure", True), "insecure": ("secure", False),
    "sync": ("sync", True), "async": ("sync", False),
}
_ACCEPTED = {"wdelay", "no_wdelay", "subtree_check", "no_subtree_check", "sec=sys"}


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
