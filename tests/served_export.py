"""An export served in process, as the unit tests drive the NFSv3 service without a server
process: its state store, the ``SemanticFS`` over it, the service and the export's policy."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, NamedTuple

from nfsd.exports.guard import ExportPolicy
from nfsd.exports.rules import load_exports
from nfsd.fs.localfs import LocalFS
from nfsd.fs.semantic import SemanticFS
from nfsd.index import Index
from nfsd.nfs3.service import Nfs3Service
from nfsd.state.store import Store


class Served(NamedTuple):
    store: Store
    fs: SemanticFS
    nfs: Nfs3Service
    policy: ExportPolicy


@contextlib.contextmanager
def served_export(export: Path, state: Path) -> Iterator[Served]:
    """``export`` (made beforehand) served ``rw,no_root_squash,insecure``, its state in
    ``state``; closed after."""
    store = Store(str(state))
    eid = store.export_id(str(export))
    fs = SemanticFS(LocalFS(str(export), eid, store), Index(store.env, str(export), eid))
    try:
        rules, = load_exports([f"{export} *(rw,no_root_squash,insecure)"])
        yield Served(store, fs, Nfs3Service({eid: fs}, store, b"verifier"), ExportPolicy({eid: rules}))
    finally:
        fs.close()
        store.close()
