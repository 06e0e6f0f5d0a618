"""A call resolves each of its handles once: the export guard, which finds handles as the
server before acting as the caller, hands what it found to the handler
(``Nfs3Service.resolved``), and a real object's cached node is found without parsing its
handle (``SemanticFS.node`` asks ``LocalFS.cached`` first)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from nfsd.exports.guard import GuardedNfs3
from nfsd.fs import handles
from nfsd.fs import semantic as semantic_module
from nfsd.fs.localfs import LocalFS
from nfsd.fs.semantic import SemanticFS
from nfsd.index import Index
from nfsd.nfs3.errors import NfsError
from nfsd.nfs3.service import Nfs3Service
from nfsd.rpc.call import CallContext
from nfsd.state.store import Store
from protocol import nfs3

from tests.nfs3_helpers import cred, fh, sattr
from tests.served_export import served_export

LOOKUP, SETATTR = 3, 2  # NFSv3 procedure numbers (protocol/nfs3.py)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as the caller needs root")


def in_a_thread(call: Any, *args: Any) -> Any:
    """``call(*args)`` in a scratch thread, as the server runs calls: acting as a caller
    leaves that caller's fsgid and groups on the thread (``identity.become``), which must
    not be the test runner's."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call, *args).result()


def test_a_call_as_the_caller_resolves_its_handles_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "export"
    export.mkdir()
    os.chmod(export, 0o777)
    (export / "f").write_bytes(b"x")
    os.chown(export / "f", 1000, 1000)
    with served_export(export, tmp_path / "state") as (_, fs, nfs, policy):
        guarded = GuardedNfs3(nfs, policy, acting=True)
        ctx = CallContext(cred(1000, 1000), ("127.0.0.1", 800))
        status, res = in_a_thread(guarded.handlers[LOOKUP],
                                  ctx, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(fs.root.fh), b"f")))
        assert status == nfs3.NFS3_OK, status
        handle = bytes(res.object.data)
        fs.node(handle)  # met before, as any handle a client holds: its node is cached

        looked: list[bytes] = []
        parsed: list[bytes] = []
        node, kind = fs.node, handles.handle_kind
        def counting_node(h: bytes) -> Any:
            looked.append(h)
            return node(h)
        monkeypatch.setattr(fs, "node", counting_node)

        def counting_kind(h: bytes) -> Any:
            parsed.append(h)
            return kind(h)
        monkeypatch.setattr(semantic_module, "handle_kind", counting_kind)
        args: Any = nfs3.SETATTR3args.cls(fh(bytes(handle)), sattr(mode=0o640), None)
        def setattr_call() -> Any:  # the call, then what it left for this thread's next one
            return guarded.handlers[SETATTR](ctx, args), getattr(nfs._call, "resolved", None)
        (status, _), left = in_a_thread(setattr_call)
        assert status == nfs3.NFS3_OK, status
        assert (export / "f").stat().st_mode & 0o777 == 0o640
        assert len(looked) == 1, looked      # the guard's resolution served the handler
        assert parsed == [], parsed          # a cached real node is found without parsing
        assert left is None                  # nothing left for the thread's next call


def test_resolve_remembers_exports_by_handle_prefix_only(tmp_path: Path) -> None:
    """``Nfs3Service.resolve`` finds a handle's export by its first four bytes once parsed
    (``_export_of``); each handle is still checked: another export's is STALE, another
    version or an unknown kind is BADHANDLE, a removed object's is STALE."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_bytes(b"x")
    store = Store(str(tmp_path / "state"))
    eid = store.export_id(str(export))
    fs = SemanticFS(LocalFS(str(export), eid, store), Index(store.env, str(export), eid))
    try:
        nfs = Nfs3Service({eid: fs}, store, b"verifier")
        f = fs.local.lookup(fs.local.root, b"f")
        for _ in range(2):  # the second round finds the export remembered
            assert nfs.resolve(fs.root.fh) == (fs, fs.root)
            found_fs, n = nfs.resolve(f.fh)
            assert found_fs is fs and n.ino == f.ino
        bad = [(handles.pack_real(eid + 1, f.ino, f.gen), nfs3.nfsstat3.NFS3ERR_STALE),
               (b"\x02" + f.fh[1:], nfs3.nfsstat3.NFS3ERR_BADHANDLE),
               (f.fh[:1] + b"\x7f" + f.fh[2:], nfs3.nfsstat3.NFS3ERR_BADHANDLE),
               (f.fh[:3], nfs3.nfsstat3.NFS3ERR_BADHANDLE)]
        for h, status in bad:
            with pytest.raises(NfsError) as info:
                nfs.resolve(h)
            assert info.value.status == status, h
        fs.remove(fs.root, b"f", False)
        with pytest.raises(NfsError) as info:
            found_fs, n = nfs.resolve(f.fh)  # STALE here, or at the stat of a node still cached
            found_fs.stat(n)
        assert info.value.status == nfs3.nfsstat3.NFS3ERR_STALE
    finally:
        store.close()
