"""LocalFS: handles and parents stay right when the tree changes behind the server's back."""
import asyncio
import fcntl
import os
import weakref

import pytest

from nfsd.nfs3.errors import NfsError
from nfsd.fs.localfs import LocalFS, ioctl_generation
from nfsd.state.store import Store
from protocol.nfs3 import nfsstat3


@pytest.fixture
def fs(tmp_path):
    (tmp_path / "exp" / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "exp" / "x").mkdir()
    store = Store(str(tmp_path / "state"))
    f = LocalFS(str(tmp_path / "exp"), 1, store)
    yield f
    f.close()
    store.close()


def test_parent_learnt_after_move_behind_our_back(fs, tmp_path):
    c = fs.lookup(fs.lookup(fs.lookup(fs.root, b"a"), b"b"), b"c")
    os.rename(tmp_path / "exp" / "a" / "b", tmp_path / "exp" / "x" / "newb")
    parent = fs.parent_of(c)
    assert parent.ino == (tmp_path / "exp" / "x" / "newb").stat().st_ino
    assert fs.store.get_object(1, parent.ino).name == b"newb"
    assert fs.parent_of(parent).ino == (tmp_path / "exp" / "x").stat().st_ino
    assert fs.parent_of(fs.parent_of(parent)) is fs.root


def test_parent_of_directory_moved_out_of_export_is_stale(fs, tmp_path):
    c = fs.lookup(fs.lookup(fs.lookup(fs.root, b"a"), b"b"), b"c")
    os.rename(tmp_path / "exp" / "a", tmp_path / "outside")
    with pytest.raises(NfsError) as err:
        fs.parent_of(c)
    assert err.value.status == nfsstat3.NFS3ERR_STALE


def test_handle_found_again_after_move_and_restart(fs, tmp_path):
    fh = fs.lookup(fs.lookup(fs.lookup(fs.root, b"a"), b"b"), b"c").fh
    os.rename(tmp_path / "exp" / "a", tmp_path / "exp" / "x" / "moved")
    fresh = LocalFS(str(tmp_path / "exp"), 1, fs.store)  # a restart: nothing in memory
    node = fresh.node(fh)
    assert node.ino == (tmp_path / "exp" / "x" / "moved" / "b" / "c").stat().st_ino
    assert fresh.store.get_object(1, node.ino).name == b"c"


def test_setattr_of_one_timestamp_never_writes_back_the_other(tmp_path):
    """SETATTR of the atime alone (``touch -a -d``) leaves the mtime as it is at that moment:
    nothing read before is written back, so a WRITE landing between a read and the update
    keeps its mtime.  The race is made certain by having every read of attributes answer
    what it was before that WRITE."""
    from nfsd.rpc.call import CallContext
    from nfsd.nfs3.service import Nfs3Service
    from protocol import nfs3
    from tests.rpc_client import ROOT

    (tmp_path / "exp").mkdir()
    f = tmp_path / "exp" / "f"
    f.write_bytes(b"x")
    os.utime(f, ns=(10**18, 10**18))
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    try:
        service = Nfs3Service({1: fs}, store, b"verifier")
        n = fs.lookup(fs.root, b"f")
        before_write = fs.stat(n)
        os.utime(f, ns=(10**18, 2 * 10**18))  # the concurrent WRITE's mtime
        fs.stat = lambda node: before_write
        atime_only = nfs3.sattr3.cls(None, None, None, None, (2, nfs3.nfstime3.cls(5, 0)), (0, None))
        status, _ = service.SETATTR(CallContext(ROOT, ("127.0.0.1", 0)),
                                    nfs3.SETATTR3args.cls(nfs3.nfs_fh3.cls(n.fh), atime_only, None))
        assert status == nfsstat3.NFS3_OK
        assert (f.stat().st_atime_ns, f.stat().st_mtime_ns) == (5 * 10**9, 2 * 10**18)
    finally:
        fs.close()
        store.close()


@pytest.mark.parametrize("readable", [True, False])
def test_a_directory_made_here_has_the_handle_a_lookup_gives_after_a_restart(fs, tmp_path, monkeypatch, readable):
    """MKDIR's node is opened read-only straight away, its generation read from that
    descriptor (``LocalFS._new_dir``); one the caller may not read comes from ``lookup``.
    Either way: the handle a fresh server finds by name, a directory to work in, the mode
    asked for (the umask undone)."""
    if not readable:
        real_open = os.open

        def refusing(path, flags, *args, **kwargs):
            if flags & os.O_DIRECTORY and not flags & os.O_PATH and path == b"made":
                raise PermissionError(13, "no read permission")
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", refusing)
    d = fs.mkdir(fs.root, b"made", 0o775)
    monkeypatch.undo()
    path = tmp_path / "exp" / "made"
    assert d.ino == path.stat().st_ino and d.is_dir
    assert bool(fcntl.fcntl(d.fd, fcntl.F_GETFL) & os.O_PATH) is not readable  # which way it was made
    assert path.stat().st_mode & 0o777 == 0o775
    fresh = LocalFS(str(tmp_path / "exp"), 1, fs.store)  # a restart: nothing in memory
    assert fresh.lookup(fresh.root, b"made").fh == d.fh
    assert fresh.node(d.fh).ino == d.ino
    inside = fs.create_file(d, b"inside", 0o644, exclusive=True)
    assert (path / "inside").stat().st_ino == inside.ino
    assert fs.lookup(d, b"inside") is inside
    fresh.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown, and opening a 0000 file, need root")
def test_attributes_are_set_through_an_ordinary_descriptor(fs, tmp_path):
    """chmod, chown and the times of a looked-up regular file (held by an O_PATH descriptor,
    which fchmod, fchown and futimens refuse) go, from its second change on, through a
    read-only descriptor opened once and kept as its I/O descriptor (a later WRITE still gets
    a writable one; a file changed once opens nothing); a file the server made through the
    descriptor that made it; a looked-up directory the old way.  Each timestamp left alone
    stays as it was."""
    from nfsd.fs.backend import SERVER_TIME

    path = tmp_path / "exp" / "f"
    path.write_bytes(b"x")
    os.chmod(path, 0)  # nobody's to read: the descriptor is opened as the server
    n = fs.lookup(fs.root, b"f")
    assert fcntl.fcntl(n.fd, fcntl.F_GETFL) & os.O_PATH
    fs.set_mode(n, 0o604)
    assert path.stat().st_mode & 0o7777 == 0o604
    assert n._io_fd == -1  # a first change: nothing opened for it
    fs.set_mode(n, 0o640)
    assert path.stat().st_mode & 0o7777 == 0o640
    kept = n._io_fd
    assert kept >= 0 and not n._io_writable
    assert fcntl.fcntl(kept, fcntl.F_GETFL) & (os.O_PATH | os.O_ACCMODE) == os.O_RDONLY
    os.utime(path, ns=(10**18, 2 * 10**18))
    fs.set_times(n, 5 * 10**9, None)  # the atime alone
    assert (path.stat().st_atime_ns, path.stat().st_mtime_ns) == (5 * 10**9, 2 * 10**18)
    fs.set_times(n, 7 * 10**9, 8 * 10**9)
    assert (path.stat().st_atime_ns, path.stat().st_mtime_ns) == (7 * 10**9, 8 * 10**9)
    fs.set_times(n, None, SERVER_TIME)
    assert path.stat().st_atime_ns == 7 * 10**9 and path.stat().st_mtime_ns > 8 * 10**9
    fs.set_owner(n, 4321, 8765)
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 8765)
    assert n._io_fd == kept  # one descriptor for all of them
    assert fs.write(n, 0, memoryview(b"yz"), 0) == 2 and path.read_bytes() == b"yz"
    assert n._io_writable
    writable = n._io_fd
    fs.set_mode(n, 0o600)  # through the read-write descriptor the WRITE left
    assert path.stat().st_mode & 0o7777 == 0o600 and n._io_fd == writable

    made = fs.create_file(fs.root, b"made", 0o600, exclusive=True)
    fs.set_mode(made, 0o604)
    assert (tmp_path / "exp" / "made").stat().st_mode & 0o7777 == 0o604
    assert made._io_fd == -1  # its own descriptor served

    d = fs.lookup(fs.root, b"x")
    fs.set_mode(d, 0o701)
    fs.set_times(d, 3 * 10**9, None)
    assert (tmp_path / "exp" / "x").stat().st_mode & 0o7777 == 0o701
    assert (tmp_path / "exp" / "x").stat().st_atime_ns == 3 * 10**9


def test_mkdir_undoes_the_umask_through_its_own_descriptor(fs, tmp_path, monkeypatch):
    """The mode MKDIR asked for is restored over the server's umask with ``fchmod`` of the
    read-only descriptor the directory was made with, not a chmod of /proc/self/fd/N."""
    def no_path_chmod(*args, **kwargs):
        raise AssertionError("chmod by path")
    old = os.umask(0o077)
    try:
        monkeypatch.setattr(os, "chmod", no_path_chmod)
        d = fs.mkdir(fs.root, b"made", 0o775)
    finally:
        os.umask(old)
        monkeypatch.undo()
    assert d.plain
    assert (tmp_path / "exp" / "made").stat().st_mode & 0o7777 == 0o775


def test_lookup_attrs_are_the_found_objects_own(fs, tmp_path):
    """LOOKUP's reply attributes come from the look-up's own stat (no second fstat): those
    of the object found, whether its node was opened now or found in the cache, after a
    change behind the server's back too; ``.`` and ``..`` read none."""
    path = tmp_path / "exp" / "a" / "f"
    path.write_bytes(b"12345")
    a = fs.lookup(fs.root, b"a")
    for _ in range(2):  # opened, then from the node cache
        n, st = fs.lookup_attrs(a, b"f")
        assert st is not None and (st.st_ino, st.st_size) == (n.ino, 5)
        assert st.st_mode == os.lstat(path).st_mode
    path.write_bytes(b"123")
    os.chmod(path, 0o600)
    n, st = fs.lookup_attrs(a, b"f")
    assert st is not None and (st.st_size, st.st_mode & 0o777) == (3, 0o600)
    assert fs.lookup_attrs(a, b".") == (a, None)
    assert fs.lookup_attrs(a, b"..")[1] is None
    with pytest.raises(FileNotFoundError):
        fs.lookup_attrs(a, b"missing")


def test_read_descriptor_replaced_by_a_write_stays_open_for_calls_that_took_it(fs, tmp_path):
    """A READ takes the node's read-only descriptor without the lock; a WRITE on another
    thread then opens the read-write one.  The read-only one must not close under the READ:
    its number could be reused by the next open and the READ would read another file."""
    (tmp_path / "exp" / "f").write_bytes(b"mine")
    n = fs.lookup(fs.root, b"f")
    fs.set_mode(n, 0o640)
    fs.set_mode(n, 0o644)  # the second change keeps a read-only descriptor (see above)
    taken = n.io_fd(write=False)  # what a READ holds, mid-pread
    assert not n._io_writable and taken == n._io_fd
    assert fs.write(n, 0, memoryview(b"MINE"), 0) == 4  # the upgrade to read-write
    assert n._io_writable and n._io_fd != taken
    (tmp_path / "exp" / "other").write_bytes(b"other's secret")
    reused = os.open(tmp_path / "exp" / "other", os.O_RDONLY)  # the lowest free number
    try:
        assert reused != taken
        assert os.pread(taken, 4, 0) == b"MINE"
    finally:
        os.close(reused)
    n.close()  # the retired descriptor goes with the node
    with pytest.raises(OSError):
        os.fstat(taken)


def _fd_names(fd: int) -> str | None:
    """What descriptor ``fd`` of this process names now (None: closed)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        return None


def _removed_node(fs, name: bytes):
    """Create ``name`` and remove it; (a weak reference to its node, its descriptor's
    number, what that descriptor named)."""
    n = fs.create_file(fs.root, name, 0o644, True)
    ref, fd = weakref.ref(n), n.fd
    named = _fd_names(fd)
    del n
    fs.remove(fs.root, name, False)
    return ref, fd, named


def test_removed_file_closed_after_the_loop_turn_on_the_event_loop(fs):
    """On the event loop, the descriptors the server holds of a file it removed close at
    the loop's next turn, after the burst's replies are written (late_close.py): that close
    is where the kernel frees the inode, work the client need not wait for."""
    async def remove_on_loop():
        ref, fd, named = _removed_node(fs, b"gone")
        held = ref() is not None and _fd_names(fd) == named + " (deleted)"
        await asyncio.sleep(0)
        return held, ref() is None and _fd_names(fd) != named + " (deleted)"

    held, closed = asyncio.run(remove_on_loop())
    assert held, "closed before the loop turned"
    assert closed, "still open after the loop turned"


def test_removed_file_closed_at_once_in_a_thread(fs):
    """Without a running event loop (a thread of the pool) nothing is held: the removed
    file's descriptors close in the call, as before."""
    ref, fd, named = _removed_node(fs, b"gone")
    assert ref() is None
    assert _fd_names(fd) != named + " (deleted)"


def _remove_then_stop(fs, name: bytes):
    """``_removed_node`` in a loop that stops before its next turn (as at a shutdown)."""
    loop = asyncio.new_event_loop()
    out = []

    def step():
        out.append(_removed_node(fs, name))
        loop.stop()  # the loop stops after this turn: what it scheduled never runs
    loop.call_soon(step)
    try:
        loop.run_forever()
    finally:
        loop.close()
    return out[0]


def test_removed_file_held_by_a_loop_that_stopped_is_closed_later(fs):
    """A loop that stops before its next turn does not keep what it held for ever: the
    next loop's turn lets go of it, and so does closing the backend."""
    ref, fd, named = _remove_then_stop(fs, b"first")
    assert ref() is not None

    async def again():
        later = _removed_node(fs, b"second")[0]
        await asyncio.sleep(0)
        return later
    assert asyncio.run(again())() is None
    assert ref() is None and _fd_names(fd) != named + " (deleted)"

    ref = _remove_then_stop(fs, b"third")[0]
    assert ref() is not None
    fs.close()
    assert ref() is None


def test_a_removed_files_handle_stays_stale_without_a_search_once_the_index_saw_it_go(fs, monkeypatch):
    """The index reports every entry that vanished, the server's own removals too
    (``LocalFS.vanished``, after its flush): the tombstone the REMOVE wrote must survive
    that, so a client's later call with the old handle is STALE from the handle table, not
    after a walk of the whole export (~14 ms for 10,000 files; longer ones in slices), and
    still after a restart.  A live place of a file deleted behind the server's back still
    goes (nothing is left of it to answer)."""
    d = fs.lookup(fs.root, b"x")
    gone = fs.create_file(d, b"gone", 0o644, exclusive=True)
    behind = fs.create_file(d, b"behind", 0o644, exclusive=True)
    gone_fh, gone_ino, behind_ino = gone.fh, gone.ino, behind.ino
    fs.store.end_burst()
    fs.remove(d, b"gone", False)
    os.unlink(os.path.join(fs.root_path, "x", "behind"))
    fs.store.end_burst()
    fs.vanished([(gone_ino, d.ino, b"gone"), (behind_ino, d.ino, b"behind")])  # the index's report
    assert fs.store.get_object(1, behind_ino) is None
    assert fs.store.get_object(1, gone_ino).deleted

    def no_search(ino):
        raise AssertionError(f"searched the export for inode {ino}")
    fresh = LocalFS(fs.root_path, 1, fs.store)  # a restart: nothing in memory
    monkeypatch.setattr(fresh, "_search", no_search)
    with pytest.raises(NfsError) as err:
        fresh.node(gone_fh)
    assert err.value.status == nfsstat3.NFS3ERR_STALE
    fresh.close()


def _counting_walks(fs, monkeypatch):
    walks = []
    real = fs._search

    def counted(ino):
        walks.append(ino)
        return real(ino)
    monkeypatch.setattr(fs, "_search", counted)
    return walks


def test_handles_of_ever_new_inode_numbers_do_not_each_walk_the_export(fs, monkeypatch):
    """A handle the table cannot place (never recorded: e.g. a client making up inode
    numbers) used to walk the whole export on every call, on the event loop; the memory of
    stale handles is per handle, so new numbers walked every time.  One complete walk now
    answers them all STALE for a while (``SearchGate``)."""
    from nfsd.fs.handles import pack_real
    walks = _counting_walks(fs, monkeypatch)
    used = {os.stat(os.path.join(fs.root_path, *p)).st_ino for p in (("a",), ("a", "b"), ("a", "b", "c"), ("x",))}
    made_up = [ino for ino in range(10**9, 10**9 + 200) if ino not in used]
    for ino in made_up:
        with pytest.raises(NfsError) as err:
            fs.node(pack_real(1, ino, 0))
        assert err.value.status == nfsstat3.NFS3ERR_STALE
    assert len(walks) == 1


def test_a_file_moved_behind_our_back_is_found_after_a_walk_proved_others_absent(fs, tmp_path, monkeypatch):
    """The gate answers STALE from the last walk only for a handle with no recorded place:
    one whose place is recorded but out of date (moved behind the server's back after that
    walk) is still searched for, and found."""
    from nfsd.fs.handles import pack_real
    from nfsd.fs.searchgate import SearchGate
    clock = [100.0]
    fs._searches.gate = SearchGate(clock=lambda: clock[0])
    c_fh = fs.lookup(fs.lookup(fs.lookup(fs.root, b"a"), b"b"), b"c").fh
    with pytest.raises(NfsError):
        fs.node(pack_real(1, 10**9 + 7, 0))  # a complete walk: c was met where it was
    os.rename(tmp_path / "exp" / "a" / "b" / "c", tmp_path / "exp" / "x" / "c2")
    fresh = LocalFS(fs.root_path, 1, fs.store)
    fresh._searches.gate = fs._searches.gate
    clock[0] += 1.0  # (the walk took no time on this clock: it left no wait)
    assert fresh.node(c_fh).ino == (tmp_path / "exp" / "x" / "c2").stat().st_ino
    fresh.close()


def test_walks_take_a_bounded_share_and_an_early_one_is_jukebox_not_stale(fs, monkeypatch):
    """Once the last walk's inode numbers no longer hold (a live place dropped: something
    moved behind the server's back), a handle that needs a walk while walks have used up
    their share is answered JUKEBOX (try again: it may only have moved), not STALE."""
    from nfsd.fs.handles import pack_real
    from nfsd.fs.searchgate import SearchGate
    clock = [100.0]
    fs._searches.gate = SearchGate(share=0.1, clock=lambda: clock[0])
    walks = _counting_walks(fs, monkeypatch)
    with pytest.raises(NfsError) as err:
        fs.node(pack_real(1, 10**9 + 1, 0))
    assert err.value.status == nfsstat3.NFS3ERR_STALE
    fs._searches.gate.spend(99.0)  # as if that walk had taken a second
    fs._searches.gate.finished(None)  # and not gone through
    fs._searches.gate.moved()
    with pytest.raises(NfsError) as err:
        fs.node(pack_real(1, 10**9 + 2, 0))
    assert err.value.status == nfsstat3.NFS3ERR_JUKEBOX
    clock[0] += 9.0
    with pytest.raises(NfsError) as err:
        fs.node(pack_real(1, 10**9 + 2, 0))
    assert err.value.status == nfsstat3.NFS3ERR_STALE  # walked: not memorised as STALE before
    assert walks == [10**9 + 1, 10**9 + 2]


@pytest.fixture
def indexed_fs(tmp_path):
    """A LocalFS and its Index on one store, wired as the server wires them (nfsd/app.py)."""
    from nfsd.index import Index
    (tmp_path / "exp").mkdir()
    store = Store(str(tmp_path / "state"))
    fs = LocalFS(str(tmp_path / "exp"), 1, store)
    index = Index(store.env, fs.root_path, 1)
    index.on_vanished, index.on_purged = fs.vanished, fs.purged
    yield fs, index
    index.close()
    fs.close()
    store.close()


@pytest.mark.parametrize("purge", ["ttl", "scan"])
def test_a_tombstone_goes_when_the_index_forgets_the_file(indexed_fs, monkeypatch, purge):
    """A tombstone used to last until its inode number was reused: a workload that only
    removes grew the handle table by one record per removal.  It now goes when the index
    forgets the file for good (``Index.on_purged``: an hour after it vanished, or at a full
    scan after it); until then the handle is STALE from the table, after it STALE after
    at most the walk ``SearchGate`` allows.  A live place is never dropped so."""
    import nfsd.index.index as index_mod
    fs, index = indexed_fs
    store = fs.store
    gone = fs.create_file(fs.root, b"gone", 0o644, exclusive=True)
    kept = fs.create_file(fs.root, b"kept", 0o644, exclusive=True)
    index.scan(progress=False)
    fs.remove(fs.root, b"gone", False)
    index.note_removed(fs.root_ino, b"gone")
    index.flush()  # reports it vanished: the tombstone stays
    assert store.get_object(1, gone.ino).deleted
    if purge == "ttl":
        monkeypatch.setattr(index_mod, "TOMB_TTL_NS", 0)
        monkeypatch.setattr(index_mod, "PURGE_EVERY", -1.0)
        index.note_removed(fs.root_ino, b"nothing")  # (a flush with something to do)
        index.flush()
    else:
        index.scan(progress=False)
    assert store.get_object(1, gone.ino) is None
    assert store.get_object(1, kept.ino).name == b"kept"
    with pytest.raises(NfsError) as err:
        LocalFS(fs.root_path, 1, store).node(gone.fh)
    assert err.value.status == nfsstat3.NFS3ERR_STALE


def test_store_drops_only_tombstones(tmp_path):
    store = Store(str(tmp_path / "state"))
    store.put_objects(1, [(10, 2, 1, b"a"), (11, 2, 1, b"b")])
    store.mark_deleted(1, 10)
    store.drop_tombstones(1, [10, 11, 12])
    assert store.get_object(1, 10) is None
    assert store.get_object(1, 11).name == b"b"
    store.close()


def test_the_place_of_a_file_that_came_and_went_behind_our_back_unindexed_goes_once_used(indexed_fs, tmp_path):
    """A file created behind the server's back, looked up through it (its place recorded)
    and removed behind its back before the index's flush ever saw it: the index never
    reports it vanished, so its live place stayed in the table until its inode number was
    reused.  The first call with its handle that proves it gone (its place empty, a walk of
    the whole export without it) now drops that place; later calls are STALE without a walk."""
    fs, index = indexed_fs
    store = fs.store
    index.scan(progress=False)
    (tmp_path / "exp" / "brief").write_text("x")
    n = fs.lookup(fs.root, b"brief")
    store.end_burst()
    fh, ino = n.fh, n.ino
    fs.forget(fh)
    os.unlink(tmp_path / "exp" / "brief")
    index.note_create_event(fs.root_ino, b"brief")  # what inotify would note
    index.note_entry(fs.root_ino, b"brief")
    index.flush()
    assert store.get_object(1, ino) is not None  # the index could not report it
    fresh = LocalFS(fs.root_path, 1, store)  # (a restart: no memory of stale handles)
    with pytest.raises(NfsError) as err:
        fresh.node(fh)
    assert err.value.status == nfsstat3.NFS3ERR_STALE
    assert store.get_object(1, ino) is None
    fresh.close()


def test_handles_of_older_generations_of_a_removed_inode_walk_once(fs, monkeypatch):
    """The kernel reuses a removed file's inode number at once: after a client created and
    removed 2,000 files, their handles all named one inode, whose tombstone is the last
    file's.  Each other generation's handle walked the export (11 ms each for 10,000 files
    after a restart, base b0a7101); with that tombstone taken for no place, one walk answers
    them all (and never JUKEBOX for want of a share)."""
    from nfsd.fs.handles import pack_real
    d = fs.lookup(fs.root, b"x")
    n = fs.create_file(d, b"f", 0o644, exclusive=True)
    fs.store.end_burst()
    fs.remove(d, b"f", False)
    fs.store.end_burst()
    walks = _counting_walks(fs, monkeypatch)
    for gen in range(n.gen + 1, n.gen + 51):
        with pytest.raises(NfsError) as err:
            fs.node(pack_real(1, n.ino, gen))
        assert err.value.status == nfsstat3.NFS3ERR_STALE
    assert len(walks) == 1


def test_a_symlink_whose_parent_must_be_searched_for_is_jukebox_never_held(fs, tmp_path):
    """set_owner and set_times of a symbolic link find its directory by name; one moved
    behind the server's back (and its old places gone) needs the search, which must not
    hold the call (SYMLINK has made the link by then): plain JUKEBOX, the wait let go."""
    from nfsd.nfs3.errors import NfsPending
    exp = tmp_path / "exp"
    link = fs.symlink(fs.lookup(fs.root, b"a"), b"l", b"target")
    fs._searches.slice_dirs = 1  # the walk does not find it within the call's slice
    os.rename(exp / "a" / "l", exp / "a" / "b" / "c" / "l2")
    waits = []
    real = fs._searches._pending
    fs._searches._pending = lambda ino, why: waits.append(real(ino, why)) or waits[-1]
    with pytest.raises(NfsError) as err:
        fs.set_owner(link, -1, -1)
    assert err.value.status == nfsstat3.NFS3ERR_JUKEBOX and not isinstance(err.value, NfsPending)
    assert waits and waits[0].ready.cancelled()


@pytest.mark.parametrize("sole_writer", [True, False])
def test_a_new_inodes_place_is_written_without_reading_the_old_one(fs, tmp_path, monkeypatch, sole_writer):
    """CREATE and MKDIR write the new inode's place without first reading what the handle
    table holds for that number (with ``--workers`` that read was an LMDB read transaction
    per call).  What an earlier file of the number left there (the tombstone of a removal)
    is overwritten, so the new handle resolves, in this process and after a restart."""
    fs.sole_writer = sole_writer
    reads = []
    real_get = fs.store.get_object
    monkeypatch.setattr(fs.store, "get_object", lambda *a: reads.append(a) or real_get(*a))
    fs.store.begin_burst()
    new = fs.create_file(fs.root, b"new", 0o644, exclusive=True)
    made = fs.mkdir(fs.root, b"dir", 0o755)
    fs.store.end_burst()
    assert reads == []  # no read of the handle table for the new inodes
    # an inode number whose earlier file was removed: its tombstone, another place and generation
    fd = os.open(tmp_path / "exp" / "reused", os.O_CREAT | os.O_RDONLY)
    st = os.fstat(fd)
    gen = ioctl_generation(fd)
    fs.store.put_objects(fs.export_id, [(st.st_ino, made.ino, gen ^ 1, b"gone")])
    fs.store.mark_deleted(fs.export_id, st.st_ino)
    reused = fs._node_from_fd(fd, st, fs.root_ino, b"reused", gen, new=True)  # as ``create_file`` makes it
    assert reads == []
    fresh = LocalFS(str(tmp_path / "exp"), 1, fs.store)  # a restart: nothing in memory
    fresh.sole_writer = sole_writer
    for n, name in ((new, b"new"), (made, b"dir"), (reused, b"reused")):
        rec = fs.store.get_object(fs.export_id, n.ino)
        assert rec is not None and not rec.deleted and (rec.parent, rec.name, rec.gen) == (fs.root_ino, name, n.gen)
        assert fresh.node(n.fh).ino == n.ino
    fresh.close()


def _flat_export(tmp_path, files: int, max_nodes: int) -> LocalFS:
    """A LocalFS over an export of ``files`` empty files f0, f1... and a node cache of
    ``max_nodes``; the caller closes it and its ``store``."""
    exp = tmp_path / "exp"
    exp.mkdir()
    for i in range(files):
        (exp / f"f{i}").write_bytes(b"")
    return LocalFS(str(exp), 1, Store(str(tmp_path / "state")), max_nodes=max_nodes)


@pytest.mark.parametrize("sole_writer", [True, False])
def test_a_rename_reads_the_moved_inodes_place_once(fs, tmp_path, monkeypatch, sole_writer):
    """RENAME reads the moved inode's place in the handle table once, for its generation
    and to compare with the new place (with ``--workers`` each read is an LMDB read
    transaction; it was read twice, by ``_known_gen`` and by ``record``).  The new place
    keeps the generation: the handle looked up before the rename resolves after it, in
    this process and after a restart."""
    fs.sole_writer = sole_writer
    a = fs.lookup(fs.root, b"a")
    x = fs.lookup(fs.root, b"x")
    moved = fs.create_file(a, b"f", 0o644, exclusive=True)
    ino = moved.ino
    reads = []
    real_get = fs.store.get_object
    monkeypatch.setattr(fs.store, "get_object", lambda *args: reads.append(args) or real_get(*args))
    fs.store.begin_burst()
    fs.rename(a, b"f", x, b"g")
    fs.store.end_burst()
    assert len([r for r in reads if r[1] == ino]) == (0 if sole_writer else 1)
    rec = fs.store.get_object(fs.export_id, ino)
    assert rec is not None and not rec.deleted and (rec.parent, rec.name, rec.gen) == (x.ino, b"g", moved.gen)
    fresh = LocalFS(str(tmp_path / "exp"), 1, fs.store)  # a restart: nothing in memory
    fresh.sole_writer = sole_writer
    try:
        assert fresh.node(moved.fh).ino == ino
    finally:
        fresh.close()


def test_places_kept_beside_other_workers_are_bounded_by_the_node_cache(tmp_path):
    """With other workers writing the handle table, ``_recorded`` serves only LOOKUP's fast
    path to a cached node, and a file another worker removes never leaves it: under the
    soak it grew ~230 bytes a file for hours (bounded only at a million).  Now at most
    ``PLACES_PER_NODE`` per cached node, and the fast path still finds a cached node."""
    f = _flat_export(tmp_path, 300, max_nodes=16)
    f.sole_writer = False
    store = f.store
    try:
        root = f.root
        for i in range(300):
            f.lookup(root, b"f%d" % i)
        assert len(f._recorded) <= 2 * 16   # PLACES_PER_NODE x max_nodes (300 before)
        last = f.lookup(root, b"f299")
        fd = last.fd
        assert f.lookup(root, b"f299") is last and last.fd == fd   # the cached node, no new open
    finally:
        f.close()
        store.close()


def test_a_lookup_that_finds_a_cached_node_marks_it_recently_used(tmp_path):
    """The fast path of ``lookup_attrs`` finds a cached node and moves it to the recent end
    of the node cache under one hold of the lock (no ``_remember``): it outlives nodes
    cached after it was first looked up.  (Guards the behaviour the base had.)"""
    f = _flat_export(tmp_path, 5, max_nodes=4)
    store = f.store
    try:
        first = [f.lookup(f.root, b"f%d" % i) for i in range(4)]
        again, st = f.lookup_attrs(f.root, b"f0")
        assert again is first[0] and st.st_ino == first[0].ino
        f.lookup(f.root, b"f4")  # one too many: the least recently used goes, f1, not f0
        assert f.cached(first[0].fh) is first[0]
        assert f.cached(first[1].fh) is None
    finally:
        f.close()
        store.close()


@pytest.mark.parametrize("name, status", [
    (b"", nfsstat3.NFS3ERR_ACCES), (b"a/b", nfsstat3.NFS3ERR_ACCES), (b"nul\0", nfsstat3.NFS3ERR_ACCES),
    (b"n" * 256, nfsstat3.NFS3ERR_NAMETOOLONG)])
def test_lookup_refuses_what_is_not_one_name(fs, name, status):
    """``lookup_attrs`` tests a name inline and calls ``check_name`` only to raise: the
    statuses are ``check_name``'s."""
    with pytest.raises(NfsError) as err:
        fs.lookup_attrs(fs.root, name)
    assert err.value.status == status


def test_lookup_in_a_file_is_notdir(fs, tmp_path):
    (tmp_path / "exp" / "file").write_bytes(b"")
    with pytest.raises(NfsError) as err:
        fs.lookup_attrs(fs.lookup(fs.root, b"file"), b"x")
    assert err.value.status == nfsstat3.NFS3ERR_NOTDIR
