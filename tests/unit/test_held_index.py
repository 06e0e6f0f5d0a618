"""A call to a query directory while the start-up index is being built is held until the
index is far enough along, then answered (nfsd/fs/indexwaits.py), instead of answered
NFS3ERR_JUKEBOX, which the Linux client retries only after 5 s.  The index's readiness is
set by hand here, as the server sets it when a scan pass ends (NfsServer._index_export)."""
from __future__ import annotations

import asyncio
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Iterator

import pytest

from nfsd.exports.guard import ExportPolicy, GuardedNfs3
from nfsd.exports.rules import load_exports
from nfsd.fs.indexwaits import IndexWaits
from nfsd.fs.localfs import LocalFS
from nfsd.fs.semantic import SemanticFS
from nfsd.index import Index
from nfsd.nfs3.errors import NfsPending
from nfsd.nfs3.procedures import offloads
from nfsd.nfs3.service import Nfs3Service
from nfsd.query.names import Query
from nfsd.rpc.dispatch import Dispatcher
from nfsd.rpc.drc import DuplicateRequestCache
from nfsd.state.store import Store
from protocol import nfs3
from protocol.nfs3 import nfsstat3
from protocol.rpc import decode_reply, encode_call

from tests.nfs3_helpers import cred, sattr

READDIRPLUS, GETATTR, MKDIR = nfs3.NFS3.procedures[17], nfs3.NFS3.procedures[1], nfs3.NFS3.procedures[9]
CLIENT = ("127.0.0.1", 801)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Dispatcher, SemanticFS]]:
    """An export whose index holds every file but is not yet told ready (as mid-scan)."""
    export = tmp_path / "export"
    export.mkdir()
    for name in ("a.c", "b.c", "n.txt"):
        (export / name).write_text("x\n")
    store = Store(str(tmp_path / "state"))
    eid = store.export_id(str(export))
    fs = SemanticFS(LocalFS(str(export), eid, store), Index(store.env, str(export), eid))
    try:
        fs.index.scan()
        rules, = load_exports([f"{export} *(rw,no_root_squash,insecure)"])
        nfs = Nfs3Service({eid: fs}, store, b"verifier")
        d = Dispatcher(None, drc=DuplicateRequestCache())
        d.register(nfs3.NFS3, None, offloads(nfs), GuardedNfs3(nfs, ExportPolicy({eid: rules}), acting=False).handlers)
        yield d, fs
    finally:
        fs.close()
        store.close()


def _record(proc: Any, args: Any, xid: int) -> bytes:
    buf = encode_call(xid, nfs3.NFS3.number, 3, proc.number, cred(0, 0))
    proc.args.pack(buf, args)
    return bytes(buf)


def _listing(fh: bytes, xid: int) -> bytes:
    return _record(READDIRPLUS, nfs3.READDIRPLUS3args.cls(nfs3.nfs_fh3.cls(fh), 0, bytes(8), 4096, 8192), xid)


def _result(reply: Any, proc: Any) -> Any:
    assert isinstance(reply, (bytes, bytearray)), reply
    _, _, off = decode_reply(bytes(reply))
    return proc.res.unpack(memoryview(reply), off)[0]


def _ext_c(fs: SemanticFS) -> bytes:
    return fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"c"),))).fh


def test_a_listing_of_a_query_directory_is_held_until_the_index_is_ready(served: Any) -> None:
    d, fs = served

    async def go() -> None:
        held = d.dispatch(_listing(_ext_c(fs), 1), CLIENT, 0)
        assert held is not None and not isinstance(held, (bytes, bytearray)), _result(held, READDIRPLUS)
        task = asyncio.ensure_future(held)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done() and d.held.count == 1
        # another call (a real file's attributes) is served meanwhile
        getattr_ = _record(GETATTR, nfs3.GETATTR3args.cls(nfs3.nfs_fh3.cls(fs.root.fh)), 2)
        assert _result(d.dispatch(getattr_, ("127.0.0.1", 802), 0), GETATTR)[0] == nfsstat3.NFS3_OK
        fs.ready.set()  # the scan ends: the server tells the waiting calls
        fs.index_waits.progressed()
        status, ok = _result(await asyncio.wait_for(task, 10), READDIRPLUS)
        assert status == nfsstat3.NFS3_OK
        names = {bytes(e.name) for e in ok.reply.entries}
        assert names >= {b"a.c", b"b.c"} and b"n.txt" not in names
        assert d.held.count == 0 and len(fs.index_waits) == 0
    asyncio.run(go())


def test_over_udp_it_is_still_jukebox(served: Any) -> None:
    d, fs = served
    """UDP's client retransmits after 1.1 s: the transport holds nothing (hold=False)."""
    reply = d.dispatch(_listing(_ext_c(fs), 3), CLIENT, 0, hold=False)
    assert _result(reply, READDIRPLUS)[0] == nfsstat3.NFS3ERR_JUKEBOX


def test_a_stat_field_waits_for_the_stat_pass_only(served: Any) -> None:
    """``ext`` answers once the stat tier is indexed; the pending call's future is settled
    by that pass, not by the end of the whole scan."""
    _, fs = served
    v = fs._placeholder(Query(fs.local.root_ino, ((b"ext", b"c"),)))
    with pytest.raises(NfsPending) as raised:
        fs._fault(v)
    assert not raised.value.ready.done()
    fs.stat_ready.set()
    fs.index_waits.progressed()
    assert raised.value.ready.result() is True
    assert len(fs._fault(v).names) == 2


def test_a_tag_made_before_the_index_is_ready_is_pending_before_anything_changed(served: Any) -> None:
    """Tagging asks the index which files carry a tag: pending until it is ready, raised
    before anything changed (the MKDIR handler lets it through: the call is held, below)."""
    _, fs = served
    tags = fs._placeholder(Query(fs.local.root_ino, (), open_field=b"tag"))
    with pytest.raises(NfsPending):
        fs.tags.mkdir(tags, b"urgent")
    assert not fs.tags.store.is_declared(b"tag", b"urgent")


async def _held_until_ready(d: Dispatcher, fs: SemanticFS, record: bytes, proc: Any) -> Any:
    """The result of a call held while the index is not ready, once it is."""
    held = d.dispatch(record, CLIENT, 0)
    assert held is not None and not isinstance(held, (bytes, bytearray)), _result(held, proc)
    task = asyncio.ensure_future(held)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done() and d.held.count == 1
    fs.ready.set()  # the scan ends: the server tells the waiting calls
    fs.index_waits.progressed()
    return _result(await asyncio.wait_for(task, 10), proc)


def test_a_tagging_mkdir_is_held_until_the_index_is_ready_then_made(served: Any) -> None:
    """It was answered JUKEBOX (the handler caught NfsPending as the NfsError it is too)."""
    d, fs = served
    tags = fs._placeholder(Query(fs.local.root_ino, (), open_field=b"tag")).fh
    mkdir = _record(MKDIR, nfs3.MKDIR3args.cls(nfs3.diropargs3.cls(nfs3.nfs_fh3.cls(tags), b"urgent"),
                                               sattr(mode=0o755)), 4)
    status, _ = asyncio.run(_held_until_ready(d, fs, mkdir, MKDIR))
    assert status == nfsstat3.NFS3_OK and fs.tags.store.is_declared(b"tag", b"urgent")


def test_an_index_wait_is_held_past_hold_seconds(served: Any) -> None:
    """A pass of the index always ends: its waits are held up to LONG_HOLD_SECONDS, not
    cut at HOLD_SECONDS (0 here: any other wait would be answered JUKEBOX at once)."""
    d, fs = served
    d.held.hold_seconds = 0.0
    status, _ = asyncio.run(_held_until_ready(d, fs, _listing(_ext_c(fs), 5), READDIRPLUS))
    assert status == nfsstat3.NFS3_OK


def test_progress_between_the_look_and_the_wait_settles_the_wait_at_once() -> None:
    """Readiness set after the fault looked but before its future was listed: the future
    is settled when made (else the call would sleep until the next pass or time out)."""
    waits = IndexWaits()
    assert waits.pending(lambda: False, "ready meanwhile").ready.result() is True
    still = waits.pending(lambda: True, "not yet").ready
    assert not still.done() and len(waits) == 1
    still.cancel()  # its call was let go (closed connection, hold expired)
    waits.progressed()  # a cancelled future is passed over
    assert len(waits) == 0


def test_futures_of_calls_let_go_do_not_pile_up() -> None:
    waits = IndexWaits()
    for _ in range(100):
        fut: Future[bool] = waits.pending(lambda: True, "not yet").ready
        fut.cancel()
    assert len(waits._waiting._futures) <= 10


def test_a_value_looked_up_before_the_index_is_ready_waits_for_it(served: Any) -> None:
    """LOOKUP of ``c`` in ``ext:`` as root asked the index at once: mid-scan, before the
    ``.c`` files were reached, it answered NOENT (and a client remembers that).  Now it
    waits, as the listing does, and finds it once the stat pass is done."""
    _, fs = served
    ext = fs._placeholder(Query(fs.local.root_ino, (), open_field=b"ext"))
    with pytest.raises(NfsPending) as raised:
        fs.lookup(ext, b"c")
    fs.stat_ready.set()
    fs.index_waits.progressed()
    assert raised.value.ready.result() is True
    assert fs.lookup(ext, b"c").query.terms == ((b"ext", b"c"),)
