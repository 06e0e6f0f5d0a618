"""Start-up checks: each problem a user can meet before the first call, told in one line.

The server, ``pysfsd index``/``query`` use these to turn what would be a traceback from deep
inside (``makedirs``, ``lmdb.open``, ``bind``) into a ``ConfigError`` that names the path or
address, the reason, and what to do about it.  ``unwritable_note`` is not an error: it says,
once at start-up, why a client will get NFS3ERR_ACCES on its first write.
"""
from __future__ import annotations

import errno
import os
import socket
import stat

import lmdb

from ..fs import identity
from .errors import ConfigError
from ..exports.rules import Export
from ..state.store import Store


def check_export(root: str, state_dir: str) -> None:
    """An export must be a directory the server can read and search, apart from the state."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise ConfigError(f"export {root} does not exist: create it (mkdir -p {root}) or correct the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot reach export {root}: {exc.strerror}: run the server as a user "
                          "who may (or as root)") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"export {root} is not a directory: export the directory that holds it")
    if not os.access(root, os.R_OK | os.X_OK):
        raise ConfigError(f"cannot read export {root} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid "
                          f"{st.st_uid}) as uid {os.geteuid()}: run the server as a user who may read "
                          "it (or as root), or change its permissions")
    state = os.path.realpath(state_dir)
    if state == root or state.startswith(root.rstrip("/") + "/"):
        raise ConfigError(f"state directory {state} must not be inside export {root}: "
                          "give --state-dir a directory outside it")


def open_store(state_dir: str, path: str) -> Store:
    """The LMDB environment at ``path`` (under ``state_dir``), created if need be."""
    hint = ("give --state-dir a directory you may write" +
            (" (the default lies under $HOME; XDG_STATE_HOME moves it)" if _is_default(state_dir) else ""))
    if os.path.exists(state_dir) and not os.path.isdir(state_dir):
        raise ConfigError(f"state directory {state_dir} is not a directory: {hint}")
    try:
        return Store(path)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise ConfigError(f"state directory {state_dir} is not a directory (or a file stands in "
                              f"its path): {hint}") from None
        raise ConfigError(f"cannot create the state in {path}: {exc.strerror}: {hint}") from None
    except lmdb.Error as exc:
        raise ConfigError(f"cannot open the state in {path}: {_lmdb_reason(exc)}: {hint}") from None


def _is_default(state_dir: str) -> bool:
    from ..app import default_state_dir
    return os.path.realpath(state_dir) == os.path.realpath(default_state_dir())


def _lmdb_reason(exc: lmdb.Error) -> str:
    """lmdb's message is ``path: reason``; the reason alone."""
    return str(exc).rpartition(": ")[2] or str(exc)


_LISTEN_HINTS = {
    errno.EADDRINUSE: "address already in use (another NFS server, or pysfsd, listens there): stop "
                      "it, or give another --port (0 picks a free one)",
    errno.EADDRNOTAVAIL: "this host has no such address: give --bind one of its addresses, or 0.0.0.0",
    errno.EACCES: "ports below 1024 need root (or CAP_NET_BIND_SERVICE): run as root, or give a "
                  "port from 1024 up",
}


def listen_error(host: str, port: int, exc: OSError, what: str = "listen") -> ConfigError:
    """Why ``bind`` failed, and what to do."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    hint = _LISTEN_HINTS.get(exc.errno or 0)
    if isinstance(exc, socket.gaierror):  # a --bind name that does not resolve
        hint = f"{exc.strerror}: give --bind one of this host's addresses, or 0.0.0.0"
    elif hint is None:
        hint = f"{exc.strerror or exc}"
    if exc.errno == errno.EACCES and what != "listen":
        hint = hint.replace("give a port from 1024 up", "leave out --portmap (mount with explicit ports)")
    return ConfigError(f"cannot {what} on {where}: {hint}")


def unwritable_note(export: Export) -> str | None:
    """Why a client that may write this export will get NFS3ERR_ACCES on its top directory,
    if it will: the squashed identity (root on a client, or everyone with all_squash) may not
    write it, or the server runs as a user who may not."""
    try:
        st = os.stat(export.path)
    except OSError:
        return None
    writable = [c for c in export.clients if c.options.writable]
    if not writable:
        return None
    mode = f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"
    if not identity.ACTING:
        if os.access(export.path, os.W_OK | os.X_OK):
            return None
        return (f"export {export.path} ({mode}) is not writable by uid {os.geteuid()}, whom every "
                f"client acts as: clients can read it but not write; chmod it, or run the server as its owner")
    for c in writable:
        if not (c.options.root_squash or c.options.all_squash):
            continue
        anon = identity.Identity(c.options.anonuid, c.options.anongid)
        if identity.may(st, anon, identity.W | identity.X):
            continue
        who = "every client user" if c.options.all_squash else "root on a client"
        return (f"export {export.path} ({mode}) is not writable by {who}, squashed to uid "
                f"{anon.uid}: writes from it get NFS3ERR_ACCES; 'chmod 1777 {export.path}' lets "
                "everyone write (like /tmp), or export with no_root_squash")
    return None
