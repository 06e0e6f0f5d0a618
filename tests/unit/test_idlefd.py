"""Idle I/O descriptors close (nfsd/fs/idlefd.py): a file written through the server can be
run on its host, nothing a call still uses closes under it, nothing unCOMMITted is lost."""
import errno
import os
import subprocess

import pytest

from nfsd.fs import idlefd
from nfsd.fs.dirsync import durability
from nfsd.fs.localfs import LocalFS
from nfsd.state.store import Store

SCRIPT = b"#!/bin/sh\necho ran\n"


@pytest.fixture
def fs(tmp_path):
    (tmp_path / "exp").mkdir()
    store = Store(str(tmp_path / "state"))
    f = LocalFS(str(tmp_path / "exp"), 1, store)
    yield f
    f.close()
    store.close()


def _write_file(fs, tmp_path, name="prog", data=SCRIPT, sync=0):
    (tmp_path / "exp" / name).write_bytes(b"")
    os.chmod(tmp_path / "exp" / name, 0o755)
    n = fs.lookup(fs.root, name.encode())
    fs.write(n, 0, memoryview(data), sync)
    return n.fh


def _sweep(fs, on_error=lambda: None):
    taken = fs.detach_idle()
    idlefd.close_detached(taken, on_error)
    return taken


def test_a_file_written_through_the_server_runs_after_two_idle_looks(fs, tmp_path):
    fh = _write_file(fs, tmp_path)
    path = str(tmp_path / "exp" / "prog")
    try:  # what the user saw before: the server holds it open for writing
        subprocess.run([path], capture_output=True)
    except OSError as busy:
        assert busy.errno == errno.ETXTBSY
    # (else a kernel that lets a file open for writing be run: Linux 6.11 did for a while)
    assert _sweep(fs) == []  # used since the last look: a second chance
    taken = _sweep(fs)
    assert [t[0].fh for t in taken] == [fh]
    n = fs.cached(fh)
    assert n._io_fd == -1 and not n._io_writable
    assert subprocess.run([path], capture_output=True, check=True).stdout == b"ran\n"
    assert os.pread(n.io_fd(write=False), 4, 0) == SCRIPT[:4]  # opened again when needed


def _held(export):
    """This process's descriptors on files of ``export``: (O_PATH ones, others)."""
    kinds = ([], [])
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = int(open(f"/proc/self/fdinfo/{fd}").read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError):
            continue
        if target.startswith(str(export) + "/"):
            kinds[not flags & os.O_PATH].append(target)
    return kinds


def test_descriptors_held_fall_after_idle(fs, tmp_path):
    for i in range(20):
        _write_file(fs, tmp_path, f"f{i}", b"x")
    paths, io = _held(tmp_path / "exp")
    assert len(paths) == 20 and len(io) == 20
    _sweep(fs)
    _sweep(fs)
    assert _held(tmp_path / "exp") == (paths, [])  # the nodes' O_PATH ones only


def test_a_node_a_call_holds_keeps_its_descriptor(fs, tmp_path):
    """A call that took the descriptor unlocked (a READ mid-pread) holds its node: the
    number must not close under it, nor be reused by the next open."""
    fh = _write_file(fs, tmp_path)
    n = fs.cached(fh)
    taken = n.io_fd(write=False)
    n._io_used = False
    assert _sweep(fs) == [] and _sweep(fs) == []
    assert n._io_fd == taken and os.pread(taken, 4, 0) == SCRIPT[:4]
    del n
    _sweep(fs)
    assert fs.cached(fh)._io_fd == -1


def test_a_retired_descriptor_closes_too(fs, tmp_path):
    (tmp_path / "exp" / "f").write_bytes(b"data")
    n = fs.lookup(fs.root, b"f")
    fs.set_mode(n, 0o640)
    fs.set_mode(n, 0o644)  # the second change keeps a read-only descriptor (test_localfs.py)
    fs.write(n, 0, memoryview(b"DATA"), 0)
    retired = n._io_retired
    assert retired >= 0
    del n
    _sweep(fs)
    (n,) = [t[0] for t in _sweep(fs)]
    assert n._io_retired == -1
    with pytest.raises(OSError):
        os.fstat(retired)


def test_uncommitted_data_is_synced_before_the_close(fs, tmp_path, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(idlefd.os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    fh = _write_file(fs, tmp_path, sync=0)
    _sweep(fs)
    taken = fs.detach_idle()
    assert idlefd.needs_sync(taken)
    idlefd.close_detached(taken, lambda: None)
    assert synced == [taken[0][1]]
    assert (tmp_path / "exp" / "prog").read_bytes() == SCRIPT
    assert not fs.cached(fh)._io_dirty


def test_committed_or_async_data_is_closed_without_a_sync(fs, tmp_path, monkeypatch):
    fh = _write_file(fs, tmp_path, "committed")
    fs.commit(fs.cached(fh))
    _write_file(fs, tmp_path, "stable", sync=1)
    durability.relaxed = True  # a WRITE on an async export: its COMMIT would not sync either
    try:
        _write_file(fs, tmp_path, "async")
    finally:
        durability.relaxed = False
    monkeypatch.setattr(idlefd.os, "fdatasync", lambda fd: pytest.fail("synced again"))
    _sweep(fs)
    taken = fs.detach_idle()
    assert len(taken) == 3 and not idlefd.needs_sync(taken)
    idlefd.close_detached(taken, lambda: None)


def test_a_write_back_error_changes_the_verifier_before_a_commit_can_answer(fs, tmp_path, monkeypatch):
    """The fdatasync reports the error once (errseq): a COMMIT through a descriptor opened
    after would be told nothing.  The verifier changes while the node's I/O lock is held,
    so a COMMIT of that file waits for it and answers with the new one."""
    seen = []

    def failing(fd):
        raise OSError(errno.EIO, "write-back failed")
    monkeypatch.setattr(idlefd.os, "fdatasync", failing)
    fh = _write_file(fs, tmp_path)
    n = fs.cached(fh)
    _sweep(fs)
    del n
    _sweep(fs, lambda: seen.append(fs.cached(fh)._io_lock.locked()))
    assert seen == [True]
    assert fs.cached(fh)._io_fd == -1


def test_the_write_verifier_reset_keeps_the_boot_and_changes(tmp_path):
    from nfsd.nfs3.service import Nfs3Service
    store = Store(str(tmp_path / "state2"))
    try:
        nfs = Nfs3Service({}, store, b"\0\0\0\7abcd")
        nfs.reset_write_verifier()
        assert nfs.verifier.current()[:4] == b"\0\0\0\7" and nfs.verifier.current() != b"\0\0\0\7abcd"
    finally:
        store.close()


def test_no_call_reads_through_a_closed_or_reused_number(fs, tmp_path):
    """Readers on threads take the node and its descriptor unlocked while looks close
    whatever is idle and other opens take the lowest free numbers: every read must come
    from its own file (a number closed under it would give EBADF, or reused, another file)."""
    import sys
    import threading
    import time
    (tmp_path / "exp" / "a").write_bytes(b"AAAA")
    (tmp_path / "exp" / "b").write_bytes(b"BBBB")
    fh = fs.lookup(fs.root, b"a").fh
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                n = fs.cached(fh)
                assert fs.read(n, 0, 4) == b"AAAA"
                n._io_used = False  # as if idle: only the holding keeps it open
                del n
                time.sleep(0)  # let a look run while no reader holds it, now and then
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
        finally:
            stop.set()

    def opener():
        while not stop.is_set():
            os.close(os.open(tmp_path / "exp" / "b", os.O_RDONLY))

    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=reader), threading.Thread(target=reader), threading.Thread(target=opener)]
    closed = 0
    try:
        for t in threads:
            t.start()
        for _ in range(20_000_000):  # until the looks closed it between reads many times
            closed += len(_sweep(fs))
            if closed >= 200 or errors:
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(saved)
    assert not errors, errors[0]
    assert closed >= 200
