"""The NFSv3 procedure table (nfsd/nfs3/procedures.py): one row per procedure, and the
facts the dispatcher and the export guard read from it."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from protocol import nfs3
from nfsd.fs import writeback
from nfsd.fs.handles import pack_real
from nfsd.nfs3 import procedures
from nfsd.nfs3.procedures import NFS3_PROCEDURES, SMALL_IO, Guard, offloads
from nfsd.nfs3.service import Nfs3Service


def test_one_row_per_procedure_with_its_handler() -> None:
    assert [r.proc for r in NFS3_PROCEDURES] == [nfs3.NFS3.procedures[n] for n in sorted(nfs3.NFS3.procedures)]
    for row in NFS3_PROCEDURES:
        assert row.handler is getattr(Nfs3Service, row.proc.name)
        # every procedure that takes a handle names it; only NULL has none
        assert bool(row.handles) == (row.proc.name != "NULL")
        # a procedure the guard treats as modifying is one the DRC must replay
        if row.guard.modifying:
            assert not row.proc.idempotent


def test_offload_predicates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(writeback.page_cache, "roomy", lambda: True)
    export = SimpleNamespace(root_path=str(tmp_path))  # what the predicate reads of an export
    run_in_thread = offloads(Nfs3Service({7: export}, None, b"\0" * 8))  # type: ignore[arg-type]  # no store: none is used
    fh = nfs3.nfs_fh3.cls(pack_real(7, 2, 3))
    write = run_in_thread[7]
    small = b"x" * 100
    assert not write(nfs3.WRITE3args.cls(fh, 0, 100, nfs3.stable_how.UNSTABLE, small))
    assert write(nfs3.WRITE3args.cls(fh, 0, 100, nfs3.stable_how.DATA_SYNC, small))
    # a large UNSTABLE write of whole pages fills the page cache inline; one with partial
    # pages may have to read them first: in a thread
    assert not write(nfs3.WRITE3args.cls(fh, 0, 1 << 20, nfs3.stable_how.UNSTABLE, b"x" * (1 << 20)))
    assert write(nfs3.WRITE3args.cls(fh, 0, SMALL_IO + 1, nfs3.stable_how.UNSTABLE, b"x" * (SMALL_IO + 1)))
    assert write(nfs3.WRITE3args.cls(fh, 100, 1 << 20, nfs3.stable_how.UNSTABLE, b"x" * (1 << 20)))
    # a handle of no export (the handler answers it), or an export whose writes do more than
    # copy into the page cache (FUSE, NFS: nfsd/fs/writeback.py copies_only): in a thread
    assert write(nfs3.WRITE3args.cls(nfs3.nfs_fh3.cls(b"\0" * 16), 0, 100, nfs3.stable_how.UNSTABLE, small))
    assert write(nfs3.WRITE3args.cls(nfs3.nfs_fh3.cls(pack_real(8, 2, 3)), 0, 100, nfs3.stable_how.UNSTABLE, small))
    monkeypatch.setitem(procedures._copies_only, str(tmp_path), False)
    assert write(nfs3.WRITE3args.cls(fh, 0, 100, nfs3.stable_how.UNSTABLE, small))
    monkeypatch.setitem(procedures._copies_only, str(tmp_path), True)
    where = nfs3.diropargs3.cls(fh, b"f")
    create = run_in_thread[8]  # EXCLUSIVE syncs its verifier to LMDB: in a thread
    assert create(nfs3.CREATE3args.cls(where, (nfs3.createmode3.EXCLUSIVE, b"v" * 8)))
    sattr = nfs3.sattr3.cls(None, None, None, None, (0, None), (0, None))
    # the other directory changes are inline, their replies held for the burst's directory
    # fsync (nfsd/fs/dirsync.py)
    assert not create(nfs3.CREATE3args.cls(where, (nfs3.createmode3.GUARDED, sattr)))
    assert not any(r.proc.number in run_in_thread for r in NFS3_PROCEDURES
                   if r.guard is Guard.CHANGE and r.proc.name != "CREATE")
    # READ: inline from the page cache, in a thread only when it would wait for the disk
    # (WouldBlock, tests/unit/test_read_cached.py)
    assert 6 not in run_in_thread
    assert run_in_thread[21](nfs3.COMMIT3args.cls(fh, 0, 0))
    assert 1 not in run_in_thread  # GETATTR: always inline
    # dirty pages near the kernel's throttling point: every WRITE in a thread (the copy may sleep)
    monkeypatch.setattr(writeback.page_cache, "roomy", lambda: False)
    assert write(nfs3.WRITE3args.cls(fh, 0, 100, nfs3.stable_how.UNSTABLE, small))
    assert write(nfs3.WRITE3args.cls(fh, 0, 1 << 20, nfs3.stable_how.UNSTABLE, b"x" * (1 << 20)))
    assert {r.proc.name for r in NFS3_PROCEDURES if r.guard is Guard.PLAIN} == {
        "GETATTR", "FSSTAT", "FSINFO", "PATHCONF", "COMMIT"}


def test_a_lone_clients_small_stable_write_runs_inline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A FILE_SYNC or DATA_SYNC WRITE fsyncs: in a thread, so that the loop serves others
    meanwhile, unless it is a lone client's only call (the transport's
    ``ConnectionActivity.lone_call``), where the thread round trip only adds cost."""
    monkeypatch.setattr(writeback.page_cache, "roomy", lambda: True)
    export = SimpleNamespace(root_path=str(tmp_path))
    service = Nfs3Service({7: export}, None, b"\0" * 8)  # type: ignore[arg-type]  # no store: none is used
    write = offloads(service)[7]
    fh = nfs3.nfs_fh3.cls(pack_real(7, 2, 3))
    small = nfs3.WRITE3args.cls(fh, 0, 100, nfs3.stable_how.FILE_SYNC, b"x" * 100)
    large = nfs3.WRITE3args.cls(fh, 0, SMALL_IO + 4096, nfs3.stable_how.DATA_SYNC, b"x" * (SMALL_IO + 4096))
    assert write(small) and write(large)  # by default no call is a lone one
    service.lone_call = lambda: True
    assert not write(small)
    assert write(large)  # a large one may take long on the disk: a thread still
    monkeypatch.setattr(writeback.page_cache, "roomy", lambda: False)
    assert write(small)  # near dirty-page throttling the copy itself may sleep


def test_connection_activity_tells_a_lone_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from nfsd.rpc.server import ConnectionActivity
    now = [100.0]
    monkeypatch.setattr("nfsd.rpc.server.time.monotonic", lambda: now[0])
    activity = ConnectionActivity()
    one, other = object(), object()
    activity.serving(one, 1)
    assert activity.alone() and activity.lone_call()
    activity.serving(one, 4)  # a pipelined burst: its fsyncs may run side by side in threads
    assert activity.alone() and not activity.lone_call()
    now[0] += 0.1
    activity.serving(other, 1)  # another connection within QUIET
    assert not activity.alone() and not activity.lone_call()
    now[0] += ConnectionActivity.QUIET + 0.1
    activity.serving(other, 1)
    assert activity.lone_call()
    activity.shared()  # a UDP call: no connection of its own
    assert not activity.lone_call()
