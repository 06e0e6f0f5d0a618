"""``--workers 2``: two server processes serve one export (nfsd/workers.py).

Every test makes sure its connections really reach different workers: it finds the
process holding the server's end of each TCP connection through /proc."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from protocol import nfs3, nsm
from protocol.nlm4 import nlm4_stats as S_NLM
from tests.conftest import REPO, ServerProcess, start_indexing
from tests.nfs3_helpers import (CREATE, OK, S, attrs, create_ok, getattr_, list_dir, look, lookup, mkdir_ok, names,
                                remove, sattr, write)
from tests.nlm_helpers import CallbackServices, NlmClient
from tests.rpc_client import ROOT, RpcClient, fh
from tests.waiting import DEADLINE_S, eventually

# which worker serves a connection: the load scripts' /proc reader, loaded by path
_spec = importlib.util.spec_from_file_location(
    "procfs", REPO / "scripts" / "benchmarks" / "load_generator" / "procfs.py")
assert _spec is not None and _spec.loader is not None
_procfs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_procfs)

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")


def workers_of(srv: ServerProcess) -> list[int]:
    assert srv.proc is not None
    with open(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children") as f:
        return [int(p) for p in f.read().split()]


def serving_pid(client: RpcClient, server_port: int, pids: list[int]) -> int | None:
    """Which worker of ``pids`` serves ``client``'s connection."""
    return _procfs.connection_holder(server_port, client.sock.getsockname()[1], pids)


def one_per_worker(srv: ServerProcess) -> dict[int, RpcClient]:
    """A connection served by each worker (pid -> client), opening more until each has one."""
    pids = workers_of(srv)
    assert len(pids) == 2, pids
    return connect_per_worker(srv.port, pids)


def connect_per_worker(port: int, pids: list[int]) -> dict[int, RpcClient]:
    """A connection to ``port`` served by each worker of ``pids`` (pid -> client)."""
    found: dict[int, RpcClient] = {}
    spare: list[RpcClient] = []
    for _ in range(200):
        c = RpcClient(port)
        c.raw_call(100003, 3, 0)  # NULL: the connection is accepted and served
        pid = serving_pid(c, port, pids)
        if pid is not None and pid not in found:
            found[pid] = c
        else:
            spare.append(c)
        if len(found) == len(pids):
            break
    for c in spare:
        c.close()
    assert len(found) == len(pids), f"every connection went to one worker: {found}"
    return found


@contextmanager
def two_workers(base: Path, *args: str) -> Iterator[ServerProcess]:
    (base / "export").mkdir()
    (base / "export" / "src").mkdir()
    (base / "export" / "src" / "old.c").write_text("int old;\n")
    srv = ServerProcess(base / "export", base / "state", args=("--workers", "2", *args)).start()
    try:
        yield srv
    finally:
        err = srv.stop()
        assert "Traceback" not in err, err[-4000:]


@pytest.fixture
def two(tmp_path: Path) -> Iterator[ServerProcess]:
    with two_workers(tmp_path) as srv:
        yield srv


def test_connections_opened_together_spread_evenly_over_the_workers(two: ServerProcess) -> None:
    """Eight connections opened at once (as the load generator does) are served four by
    each worker, give or take one: a worker serving more lets the other accept first."""
    pids = workers_of(two)
    clients = [RpcClient(two.port) for _ in range(8)]
    try:
        for c in clients:
            c.raw_call(100003, 3, 0)
        served = [serving_pid(c, two.port, pids) for c in clients]
        counts = sorted(served.count(pid) for pid in pids)
        assert counts[0] >= 3, (served, pids)
    finally:
        for c in clients:
            c.close()


def test_two_workers_share_handles(two: ServerProcess) -> None:
    (a_pid, a), (b_pid, b) = one_per_worker(two).items()
    assert a_pid != b_pid
    root_a, root_b = a.mount(two.export_b), b.mount(two.export_b)
    assert root_a == root_b
    made = create_ok(a, look(a, root_a, b"src"), b"from_a.txt")
    st, _ = getattr_(b, made)
    assert st == OK
    assert look(b, root_b, b"src", b"from_a.txt") == made
    made_b = create_ok(b, look(b, root_b, b"src"), b"from_b.txt")
    assert getattr_(a, made_b)[0] == OK
    assert names(a, look(a, root_a, b"src")) >= {b"from_a.txt", b"from_b.txt", b"old.c"}


@pytest.mark.parametrize("writer_first", [True, False])
def test_create_shows_at_once_in_a_query_directory_of_the_other_worker(tmp_path: Path,
                                                                       writer_first: bool) -> None:
    """A create acknowledged by one worker is in the next listing of a query directory
    served by the other, whichever of them writes the index.  Without inotify (--no-watch):
    the worker's note, not the writer's own watcher, must bring it."""
    with two_workers(tmp_path, "--no-watch") as two:
        _create_shows(two, writer_first)


def _create_shows(two: ServerProcess, writer_first: bool) -> None:
    conns = one_per_worker(two)
    primary = workers_of(two)[0]  # started first: the index writer
    order = sorted(conns, key=lambda pid: (pid != primary) == writer_first)
    creator, reader = conns[order[0]], conns[order[1]]
    root = creator.mount(two.export_b)
    reader.mount(two.export_b)
    c_dir = look(reader, root, b"ext:", b"c")
    assert names(reader, c_dir) == {b"old.c"}
    for i in range(5):
        create_ok(creator, look(creator, root, b"src"), b"new%d.c" % i)
        assert b"new%d.c" % i in names(reader, c_dir)


@pytest.mark.parametrize("writer_first", [True, False])
def test_query_directory_attributes_show_another_workers_create_at_once(tmp_path: Path,
                                                                       writer_first: bool) -> None:
    """What the Linux client with nconnect=2 does: a create on one connection, then a
    GETATTR of the query directory on the other decides whether its cached listing is
    still good; the attributes must already count the new file (no listing in between)."""
    with two_workers(tmp_path, "--no-watch") as two:
        conns = one_per_worker(two)
        primary = workers_of(two)[0]
        order = sorted(conns, key=lambda pid: (pid != primary) == writer_first)
        creator, reader = conns[order[0]], conns[order[1]]
        root = creator.mount(two.export_b)
        reader.mount(two.export_b)
        c_dir = look(reader, root, b"ext:", b"c")
        size = len(names(reader, c_dir))
        for i in range(5):
            create_ok(creator, look(creator, root, b"src"), b"fresh%d.c" % i)
            assert attrs(reader, c_dir).size == size + i + 1, i
        for c in conns.values():
            c.close()


def _create_call(d: bytes, name: bytes) -> bytes:
    args = nfs3.CREATE3args.cls(nfs3.diropargs3.cls(fh(d), name),
                                (nfs3.createmode3.GUARDED, sattr(mode=0o644)))
    buf = bytearray()
    nfs3.NFS3.procedures[CREATE].args.pack(buf, args)
    return bytes(buf)


def test_retransmission_on_another_worker_is_answered_from_the_cache(two: ServerProcess) -> None:
    """A GUARDED CREATE resent (same xid, same client address, another connection and so
    another worker) gets the first reply again, not NFS3ERR_EXIST."""
    (_, a), (_, b) = one_per_worker(two).items()
    root = a.mount(two.export_b)
    args = _create_call(root, b"once.txt")
    xid = 0x5EED0001
    _, _, res1 = a.raw_call(100003, 3, CREATE, args, xid=xid)
    assert res1[:4] == b"\0\0\0\0"  # NFS3_OK
    _, _, res2 = b.raw_call(100003, 3, CREATE, args, xid=xid)
    assert res2 == res1
    # a new xid is a new call: now the name exists
    _, _, res3 = b.raw_call(100003, 3, CREATE, args, xid=xid + 1)
    assert int.from_bytes(res3[:4], "big") == S.NFS3ERR_EXIST


def test_write_verifier_is_the_same_in_every_worker_and_changes_on_restart(two: ServerProcess) -> None:
    conns = one_per_worker(two)
    (_, a), (_, b) = conns.items()
    root = a.mount(two.export_b)
    h = create_ok(a, root, b"data")
    verfs = set()
    for c in (a, b):
        st, res = write(c, h, 0, b"x" * 100, stable=0)
        assert st == OK
        verfs.add(res.verf)
    assert len(verfs) == 1
    for c in conns.values():
        c.close()
    two.restart()
    conns = one_per_worker(two)
    for c in conns.values():
        st, res = write(c, h, 0, b"y", stable=0)
        assert st == OK
        assert res.verf not in verfs
    for c in conns.values():
        c.close()


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and _state(p) != "Z"]
        time.sleep(0.05)
    return alive


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_handles_survive_a_restart_and_kill_of_the_parent(two: ServerProcess, sig: int) -> None:
    """Handles given by either worker resolve after a restart (kill -9 of the parent
    included), and no worker outlives its parent."""
    (_, a), (_, b) = one_per_worker(two).items()
    root = a.mount(two.export_b)
    made = [create_ok(a, look(a, root, b"src"), b"a.txt"), create_ok(b, look(b, root, b"src"), b"b.txt")]
    made.append(create_ok(b, mkdir_ok(b, root, b"deep"), b"c.txt"))
    a.close()
    b.close()
    old = workers_of(two)
    two.restart(sig)
    assert _wait_gone(old) == [], "workers outlived their parent"
    for c in one_per_worker(two).values():
        for h in made:
            assert getattr_(c, h)[0] == OK
        assert lookup(c, root, b"deep")[0] == OK
        c.close()


def test_a_worker_that_dies_is_started_again(two: ServerProcess) -> None:
    first = workers_of(two)
    os.kill(first[1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = workers_of(two)
        if len(now) == 2 and first[1] not in now:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker not restarted: {workers_of(two)}")
    conns = one_per_worker(two)
    for c in conns.values():
        root = c.mount(two.export_b)
        assert getattr_(c, root)[0] == OK
        c.close()
    assert "died" in two.log_path.read_text()


def test_a_name_recreated_through_the_other_worker_gets_its_new_handle(tmp_path: Path) -> None:
    """A follower listed ``f``; the primary removes it and creates ``f`` again, which on
    ext4 usually reuses the inode number with a new generation.  The follower's next
    listing hands out the new file's handle, not the old one (whose generation it had
    recorded itself).  --no-watch: no entry cache, no inotify, only the handle table."""
    with two_workers(tmp_path, "--no-watch") as two:
        conns = one_per_worker(two)
        primary = workers_of(two)[0]
        writer = conns[primary]
        follower = next(c for pid, c in conns.items() if pid != primary)
        root = writer.mount(two.export_b)
        follower.mount(two.export_b)
        d = mkdir_ok(writer, root, b"box")
        reused = 0
        for attempt in range(20):
            old = create_ok(writer, d, b"f")
            listed = {e.name: e for e in list_dir(follower, d)}
            assert listed[b"f"].name_handle.data == old
            assert remove(writer, d, b"f")[0] == OK
            new = create_ok(writer, d, b"f")
            if _ino(new) != _ino(old) or new == old:
                assert remove(writer, d, b"f")[0] == OK
                continue  # another inode: nothing to learn from this round
            reused += 1
            listed = {e.name: e for e in list_dir(follower, d)}
            got = listed[b"f"].name_handle.data
            assert got == new, f"follower listed the removed file's handle (attempt {attempt})"
            assert getattr_(follower, got)[0] == OK
            assert remove(writer, d, b"f")[0] == OK
        if not reused:
            pytest.skip("the file system never reused an inode number here")


def _ino(handle: bytes) -> bytes:
    return handle[4:12]


def _inotify_instances(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue
    return count


def _modes(rpc: RpcClient, d: bytes) -> dict[bytes, int]:
    return {e.name: e.name_attributes.mode & 0o7777 for e in list_dir(rpc, d) if e.name not in (b".", b"..")}


def test_only_the_primary_watches_and_followers_caches_forget_what_it_sees(tmp_path: Path) -> None:
    """Only the primary has an inotify instance; a follower's entry cache forgets an entry
    changed behind the server's back, or through the other worker, as soon as the primary's
    watcher sees it (long --attr-cache-seconds: not the maximum age)."""
    with two_workers(tmp_path, "--attr-cache-seconds", "600") as two:
        conns = one_per_worker(two)
        primary = workers_of(two)[0]
        follower_pid = next(pid for pid in conns if pid != primary)
        assert _inotify_instances(primary) == 1 and _inotify_instances(follower_pid) == 0
        f, p = conns[follower_pid], conns[primary]
        root = f.mount(two.export_b)
        p.mount(two.export_b)
        src = look(f, root, b"src")
        path = two.export / "src" / "old.c"
        os.chmod(path, 0o644)
        time.sleep(0.2)
        assert _modes(f, src)[b"old.c"] == 0o644
        assert _modes(f, src)[b"old.c"] == 0o644   # from the follower's entry cache now
        os.chmod(path, 0o600)                       # behind the server's back
        _wait_for(lambda: _modes(f, src)[b"old.c"] == 0o600)
        st, _ = setattr_mode(p, look(p, root, b"src", b"old.c"), 0o640)   # through the primary
        assert st == OK
        _wait_for(lambda: _modes(f, src)[b"old.c"] == 0o640)
        for c in conns.values():
            c.close()


def setattr_mode(rpc: RpcClient, h: bytes, mode: int) -> tuple[int, object]:
    args = nfs3.SETATTR3args.cls(fh(h), sattr(mode=mode), None)
    return rpc.nfs(2, args)


def _nlm_client(conn: RpcClient, name: str) -> NlmClient:
    """An NLM client talking over ``conn`` (a connection a known worker serves)."""
    client = NlmClient.__new__(NlmClient)
    client.rpc, client.name, client.cred = conn, name.encode(), ROOT
    return client


def test_locks_through_either_worker_share_one_lock_table(tmp_path: Path) -> None:
    """NLM and NSM sent to the NFS port reach whichever worker took the connection; the
    follower relays them to the primary, which holds the lock table: locks taken through
    one worker conflict with those taken through the other, a lock blocked through the
    follower is granted by a GRANTED callback when the holder unlocks through the primary,
    and SM_NOTIFY through the follower drops the notifying client's locks."""
    callbacks = CallbackServices()
    try:
        with two_workers(tmp_path, "--client-portmap-port", str(callbacks.port)) as two:
            conns = one_per_worker(two)
            primary = workers_of(two)[0]
            follower_pid = next(pid for pid in conns if pid != primary)
            root = conns[primary].mount(two.export_b)
            h = look(conns[primary], root, b"src", b"old.c")
            a = _nlm_client(conns[follower_pid], "alpha")   # alpha's calls reach the follower
            b = _nlm_client(conns[primary], "beta")         # beta's the primary
            assert a.lock(h, 1, 0, 100) == S_NLM.NLM4_GRANTED
            assert b.lock(h, 2, 50, 10) == S_NLM.NLM4_DENIED
            stat, holder = b.test(h, 2, 0, 1)
            assert stat == S_NLM.NLM4_DENIED and holder.oh == b"1@alpha"
            assert b.lock(h, 2, 200, 10) == S_NLM.NLM4_GRANTED
            assert a.lock(h, 1, 205, 1, block=True) == S_NLM.NLM4_BLOCKED
            assert b.unlock(h, 2, 200, 10) == S_NLM.NLM4_GRANTED
            granted = callbacks.next_call("GRANTED")
            assert granted.alock.oh == b"1@alpha" and granted.alock.l_offset == 205
            assert b.lock(h, 2, 205, 1) == S_NLM.NLM4_DENIED   # alpha holds it now
            # alpha's host restarted: its statd tells us through the follower
            notify = nsm.stat_chge(b"alpha", 3)
            conns[follower_pid].call(nsm.SM, 6, notify, ROOT)
            assert b.lock(h, 2, 0, 0) == S_NLM.NLM4_GRANTED
            assert serving_pid(conns[follower_pid], two.port, workers_of(two)) == follower_pid
            for c in conns.values():
                c.close()
            trace = two.log_path.read_text()
            assert "Traceback" not in trace
    finally:
        callbacks.close()


class _Notes:
    """What NotesInbox needs of an index: its notes and flushes, counted."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, bytes]] = []
        self.flushes = 0
        self.version = 7
        self.before_flush = None

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        self.entries.append((dir_ino, name))

    def flush(self) -> bool:
        if self.before_flush is not None:
            self.before_flush()
        self.flushes += 1
        self.version += 1
        return True


def test_a_flush_request_taken_in_by_the_writers_own_flush_is_still_answered() -> None:
    """The writer's own flush (its event loop) may read a follower's flush request off the
    channel before the inbox thread sees it: the thread must still answer it."""
    from nfsd.index.writer_channel import NotesInbox, NoteSender, channel_pair
    w, f = channel_pair()
    index = _Notes()
    inbox = NotesInbox({1: index}, [w], lambda eid: 3)  # type: ignore[dict-item]
    sender = NoteSender(f)
    sender.send(b"E", 1, 42, b"new.c")
    answer: list[object] = []
    import threading
    asking = threading.Thread(target=lambda: answer.append(sender.flush(1, timeout=5.0)))
    asking.start()
    deadline = time.monotonic() + DEADLINE_S
    while not inbox._requests and time.monotonic() < deadline:
        inbox.drain()  # as the writer's own Index.flush does, before the thread runs
        time.sleep(0.01)
    assert inbox._requests and index.entries == [(42, b"new.c")]
    inbox.start()
    asking.join(timeout=10)
    inbox.stop()
    assert answer == [(8, 3)], answer
    w.close()
    f.close()


@contextmanager
def woken_inbox(fold: Callable[[], None] | None = None) -> Iterator[tuple[_Notes, Any]]:
    """A writer's inbox thread (export 1: a ``_Notes``) with the followers' wake-up pipe,
    and a follower's ``NoteSender``; ``fold``: the store's journal fold."""
    from nfsd.index.writer_channel import NotesInbox, NoteSender, channel_pair
    w, f = channel_pair()
    r, wr = os.pipe2(os.O_NONBLOCK)
    index = _Notes()
    inbox = NotesInbox({1: index}, [w], lambda eid: 3, r, fold)  # type: ignore[dict-item]
    inbox.start()
    try:
        yield index, NoteSender(f, wake=wr)
    finally:
        inbox.stop()
        for fd in (r, wr):
            os.close(fd)
        w.close()
        f.close()


def test_with_a_wake_pipe_notes_are_taken_in_by_period_and_a_flush_request_at_once() -> None:
    """The writer's inbox thread with the followers' wake-up pipe: it does not wake for each
    note message, but takes notes in every INBOX_PERIOD, and answers a flush request (the
    follower writes the pipe after sending it) without waiting for the period."""
    with woken_inbox() as (index, sender):
        sender.send(b"E", 1, 42, b"new.c")
        _wait_for(lambda: bool(index.entries))
        assert index.entries == [(42, b"new.c")] and index.flushes == 0
        sender.send(b"E", 1, 43, b"other.c")
        assert sender.flush(1, timeout=5.0) == (8, 3)
        assert index.entries[-1] == (43, b"other.c")


def test_an_idle_writers_inbox_sleeps_until_a_note_comes() -> None:
    """With the wake-up pipe, a period that takes in nothing ends the polling: the inbox
    thread then sleeps on the channels (no wake-up while nothing comes), and the first note
    after the quiet spell is taken in without a flush request; then it polls again."""
    with woken_inbox() as (index, sender):
        inbox = _inbox_of(index)
        _wait_for(lambda: inbox.quiet)
        woken = inbox.wakeups
        time.sleep(0.2)  # ten periods: a polling thread would have woken for each
        assert inbox.wakeups == woken and inbox.quiet
        sender.send(b"E", 1, 42, b"new.c")
        _wait_for(lambda: index.entries == [(42, b"new.c")])
        assert index.flushes == 0
        _wait_for(lambda: inbox.quiet)  # nothing more came: asleep again
        sender.send(b"E", 1, 43, b"other.c")
        assert sender.flush(1, timeout=5.0) == (8, 3)
        assert index.entries[-1] == (43, b"other.c")


def _inbox_of(index: _Notes) -> Any:
    """The NotesInbox serving ``index`` (it is the index's ``before_flush``)."""
    return index.before_flush.__self__  # type: ignore[attr-defined]


def _wait_for(condition: Callable[[], bool]) -> None:
    eventually(condition, every=0.005)


def test_a_bursts_identical_notes_leave_the_follower_once() -> None:
    """A follower's burst of SETATTRs (or WRITEs) to one file notes its inode per call: the
    burst's message carries it once (the writer would only merge them), distinct notes all."""
    from nfsd.index.writer_channel import _MSG, NoteSender, channel_pair
    w, f = channel_pair()
    sender = NoteSender(f)
    try:
        sender.begin_burst()
        for _ in range(8):
            sender.send(b"I", 1, 42)
        sender.send(b"E", 1, 7, b"a.c")
        sender.send(b"E", 1, 7, b"b.c")
        sender.send(b"E", 1, 7, b"a.c")
        sender.send(b"I", 1, 43)
        sender.end_burst()
        data = w.recv(65536)
        notes, at = [], 0
        while at < len(data):
            kind, _, number, length = _MSG.unpack_from(data, at)
            at += _MSG.size
            notes.append((kind, number, data[at:at + length]))
            at += length
        assert notes == [(b"I", 42, b""), (b"E", 7, b"a.c"), (b"E", 7, b"b.c"), (b"I", 43, b"")]
        assert sender.sent == 4
        sender.send(b"I", 1, 42)  # outside a burst (another thread): at once, again
        assert w.recv(65536) == _MSG.pack(b"I", 1, 42, 0)
    finally:
        w.close()
        f.close()


def test_a_second_server_with_workers_is_refused_in_one_line_naming_the_first(two: ServerProcess) -> None:
    """The primary of a second server cannot take the store: one line naming the first
    server's parent (the process to stop), no "died: starting it again", exit status 2."""
    assert two.proc is not None
    proc = subprocess.run([sys.executable, "-m", "nfsd", "--export", str(two.export), "--bind", "127.0.0.1",
                           "--port", "0", "--no-register", "--state-dir", str(two.state_dir), "--workers", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"another pysfsd server (pid {two.proc.pid})" in lines[0]
    assert two.proc.poll() is None


def test_a_followers_content_fields_answer_pass_by_pass(tmp_path: Path) -> None:
    """On a first index a field answers once its own content pass is done, on a follower
    too: ``exports`` (the C file's, a quick pass) while ``text`` (every 1 MiB file read)
    still answers JUKEBOX (over UDP, either worker; over TCP the call is held).  A follower
    used to answer JUKEBOX for every content field until the whole index was done (the
    writer's flush replies now say which passes are)."""
    from tests.nfs3_helpers import content_pass_tree, udp_listing_status, wait_listable
    export = tmp_path / "export"
    content_pass_tree(export)
    with start_indexing(export, tmp_path, "--workers", "2") as (proc, port):
        clients: list[RpcClient] = []
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                pids = [int(p) for p in f.read().split()]
            deadline = time.monotonic() + 10  # the parent's line, just after "listening on"
            while not (lines := [x for x in (tmp_path / "stderr").read_text().splitlines() if " workers: pids " in x]):
                assert time.monotonic() < deadline, (tmp_path / "stderr").read_text()
                time.sleep(0.05)
            line = lines[0]
            follower = int(line.split("pids ")[1].split(";")[0].split()[1])  # worker 1
            rpc = None
            for _ in range(200):  # a connection the follower serves
                c = RpcClient(port)
                clients.append(c)
                c.raw_call(100003, 3, 0)
                if serving_pid(c, port, pids) == follower:
                    rpc = c
                    break
            assert rpc is not None, "no connection reached the follower"
            root = rpc.mount(os.fsencode(str(export)))
            ext, exports, text = (look(rpc, root, f) for f in (b"ext:", b"exports:", b"text:"))
            wait_listable(rpc, ext)
            assert udp_listing_status(port, text) == S.NFS3ERR_JUKEBOX
            wait_listable(rpc, exports)
            assert names(rpc, look(rpc, exports, b"exported_fn")) == {b"a.c"}
            assert udp_listing_status(port, text) == S.NFS3ERR_JUKEBOX  # its own pass takes seconds more
            wait_listable(rpc, text)
            assert names(rpc, look(rpc, text, b"needle")) == {f"n{i:02d}.txt".encode() for i in range(40)}
        finally:
            for c in clients:
                c.close()
