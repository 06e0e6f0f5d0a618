"""MOUNT v3: hands out root handles of the exports and keeps the mount list."""
from __future__ import annotations

import os
from typing import Any, Mapping

from protocol import mount3
from protocol.mount3 import mountstat3
from protocol.nfs3 import nfsstat3
from protocol.rpc import AUTH_NONE, AUTH_SYS

from .errors import NfsError
from ..fs.backend import Backend
from ..rpc.call import CallContext

#: LOOKUP failures (NfsError) that MNT answers as such; any other is ACCES
_MNT_STATUS = {nfsstat3.NFS3ERR_NOENT: mountstat3.MNT3ERR_NOENT,
               nfsstat3.NFS3ERR_NOTDIR: mountstat3.MNT3ERR_NOTDIR,
               nfsstat3.NFS3ERR_NAMETOOLONG: mountstat3.MNT3ERR_NAMETOOLONG}
#: DUMP is informational (RFC 1813): the mount list is bounded, however many MNTs arrive.
MAX_MOUNTS = 4096


class MountService:
    def __init__(self, exports: Mapping[int, Backend], policy: Any = None) -> None:
        self.exports = exports
        self.policy = policy  # nfsd.exports.guard.ExportPolicy: who may mount what (None: anyone)
        self.mounts: set[tuple[bytes, bytes]] = set()

    def _find(self, path: bytes) -> tuple[Backend, list[bytes]] | None:
        """The export holding ``path`` and the components below its root."""
        clean = os.path.normpath(path) if path else b""
        for fs in self.exports.values():
            root = os.fsencode(fs.root_path)
            if clean == root:
                return fs, []
            if clean.startswith(root.rstrip(b"/") + b"/"):
                return fs, [c for c in clean[len(root):].split(b"/") if c]
        return None

    def NULL(self, ctx: CallContext, a: None) -> None:
        return None

    def MNT(self, ctx: CallContext, path: bytes) -> Any:
        found = self._find(path)
        if found is None:
            return mountstat3.MNT3ERR_NOENT, None
        fs, parts = found
        if self.policy is not None and self.policy.allowed(fs.export_id, ctx.client) is None:
            return mountstat3.MNT3ERR_ACCES, None
        node = fs.root
        try:
            for part in parts:
                node = fs.lookup(node, part)
                if not node.is_dir:
                    return mountstat3.MNT3ERR_NOTDIR, None
        except FileNotFoundError:
            return mountstat3.MNT3ERR_NOENT, None
        except NfsError as exc:  # below a query directory: what LOOKUP answers there
            return _MNT_STATUS.get(exc.status, mountstat3.MNT3ERR_ACCES), None
        except OSError:
            return mountstat3.MNT3ERR_ACCES, None
        if len(self.mounts) < MAX_MOUNTS:  # normalized: "/x//./" is "/x", not one entry per spelling
            self.mounts.add((ctx.client[0].encode(), os.path.normpath(path)))
        return mountstat3.MNT3_OK, mount3.mountres3_ok.cls(node.fh, [AUTH_SYS, AUTH_NONE])

    def DUMP(self, ctx: CallContext, a: None) -> Any:
        return [mount3.mountbody.cls(host, path) for host, path in sorted(self.mounts)]

    def UMNT(self, ctx: CallContext, path: bytes) -> None:
        self.mounts.discard((ctx.client[0].encode(), os.path.normpath(path) if path else path))

    def UMNTALL(self, ctx: CallContext, a: None) -> None:
        host = ctx.client[0].encode()
        self.mounts = {m for m in self.mounts if m[0] != host}

    def EXPORT(self, ctx: CallContext, a: None) -> Any:
        return [mount3.exportnode.cls(os.fsencode(fs.root_path), [
                    mount3.groupnode.cls(g) for g in
                    (self.policy.groups(eid) if self.policy is not None else [b"*"])])
                for eid, fs in self.exports.items()]
