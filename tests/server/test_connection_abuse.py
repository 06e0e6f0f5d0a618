"""Connection-level abuse against a real server process: forged record marks, endless
fragments, stalled partial records, a thousand idle connections, and a client that
pipelines READs and never reads the replies.  After each, a fresh client's NULL is answered
at once, a connection opened before the abuse still works, and the server's resident memory
(``/proc/PID/status``) has stayed bounded; the figures are printed (``pytest -s``).

The server runs with short timeouts (``--stall-timeout``, ``--idle-timeout``) so the
reaper's work shows within seconds; the defaults are minutes.
"""
from __future__ import annotations

import os
import resource
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from protocol import nfs3
from protocol.record import LAST_FRAGMENT, frame
from protocol.rpc import encode_call
from tests.conftest import ServerProcess
from tests.nfs3_helpers import NFS, READ, create_ok, null_ok, pack
from tests.rpc_client import ROOT, RpcClient, fh

STALL, IDLE = 1.5, 4.0
MAX_RECORD = (1 << 20) + (64 << 10)  # ServerConfig.max_record
LOW_SOFT_LIMIT = 256  # the server starts with about this many descriptors and must raise it
started_with_nofile = 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("abuse")
    (base / "export").mkdir()
    srv = ServerProcess(base / "export", base / "state",
                        args=("--stall-timeout", str(STALL), "--idle-timeout", str(IDLE)))
    # The server inherits a low limit (leaving this process room for what it has open).
    global started_with_nofile
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    started_with_nofile = min(soft, max(LOW_SOFT_LIMIT, len(os.listdir("/proc/self/fd")) + 64))
    resource.setrlimit(resource.RLIMIT_NOFILE, (started_with_nofile, hard))
    try:
        srv.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield srv
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err[-4000:]


@pytest.fixture
def bystander(server: ServerProcess) -> Iterator[RpcClient]:
    """A client connected before the abuse, which must keep being served."""
    with RpcClient(server.port) as client:
        null_ok(client)
        yield client
    # (its NULL after the abuse is asserted by each test)


def rss_kib(server: ServerProcess) -> int:
    """VmRSS of every process of the server summed: with several workers the connections,
    and their buffers, are the workers', not the parent's."""
    total = 0
    for pid in server.pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
        else:
            raise AssertionError(f"no VmRSS for pid {pid}")
    return total


def fresh_null(server: ServerProcess, within: float = 2.0) -> float:
    """A NULL call on a new connection; returns its latency, which must be short."""
    start = time.monotonic()
    with RpcClient(server.port, timeout=within) as client:
        null_ok(client)
    elapsed = time.monotonic() - start
    assert elapsed < within, elapsed
    return elapsed


def report(what: str, server: ServerProcess, before_kib: int, **figures: object) -> int:
    after = rss_kib(server)
    extra = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[{what}] server RSS {before_kib // 1024} -> {after // 1024} MiB "
          f"(+{(after - before_kib) // 1024} MiB) {extra} fresh NULL {fresh_null(server) * 1000:.1f} ms")
    return after - before_kib


def closed_by_server(sock: socket.socket, within: float, cap: int = 64 << 20) -> bool:
    """True when the peer closes (EOF or reset) within ``within`` seconds, after at most
    ``cap`` bytes of whatever it still had to send."""
    deadline = time.monotonic() + within
    received = 0
    while received <= cap:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        if not data:
            return True
        received += len(data)
    return False


_ESTABLISHED = 1


def still_open(sock: socket.socket) -> bool:
    """The connection is established: the server has neither closed nor reset it.  Asked of
    the kernel (TCP_INFO), so nothing is read: reading would be progress."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == _ESTABLISHED


def wait_closed(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closes ``sock`` (None: not within ``within``)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if not still_open(sock):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


# --- forged and endless records ---------------------------------------------------------------

@pytest.mark.parametrize("mark", [0x7FFFFFFF, LAST_FRAGMENT | 0x7FFFFFFF])
def test_record_mark_claiming_2gib_closes_at_once(server: ServerProcess, bystander: RpcClient,
                                                  mark: int) -> None:
    """The mark alone, no data: refused before any of the 2 GiB is awaited or allocated."""
    before = rss_kib(server)
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(struct.pack(">I", mark))
        assert closed_by_server(sock, within=2.0)
        elapsed = time.monotonic() - start
    growth = report("2 GiB mark", server, before, closed_after_ms=f"{elapsed * 1000:.1f}")
    assert growth < 8 << 10
    null_ok(bystander)


def _send_until_closed(sock: socket.socket, chunk: bytes, limit: int) -> tuple[int, bool]:
    """Send ``chunk`` over and over; (bytes sent, whether the server closed first)."""
    sent = 0
    sock.settimeout(5)
    try:
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return sent, True
    except (socket.timeout, TimeoutError):
        pass  # the server stopped reading: it must have closed, or be about to
    return sent, closed_by_server(sock, within=5.0)


@pytest.mark.parametrize("size", [0, 1, 4096], ids=["empty", "1-byte", "4KiB"])
def test_endless_non_final_fragments_are_closed_at_the_bound(server: ServerProcess,
                                                             bystander: RpcClient, size: int) -> None:
    """Empty fragments count their marks, tiny ones cost their bytes: either way the
    record bound ends the connection after about MAX_RECORD bytes."""
    before = rss_kib(server)
    fragment = struct.pack(">I", size) + bytes(size)
    chunk = fragment * max(1, (64 << 10) // len(fragment))
    with connect(server) as sock:
        sent, closed = _send_until_closed(sock, chunk, limit=256 << 20)
    assert closed, f"still open after {sent} bytes of non-final fragments"
    # Sent: the bound, plus what the two kernels' socket buffers absorbed before the reset.
    assert sent < MAX_RECORD + (32 << 20), sent
    growth = report(f"endless {size}-byte fragments", server, before, sent_kib=sent >> 10)
    assert growth < 32 << 10
    null_ok(bystander)


# --- stalls and idleness ---------------------------------------------------------------------------

def test_half_a_record_then_silence_is_closed_after_the_stall_timeout(server: ServerProcess,
                                                                      bystander: RpcClient) -> None:
    before = rss_kib(server)
    call = bytes(encode_call(1, NFS, 3, 0, ROOT))
    partials = {
        "half a mark": struct.pack(">I", LAST_FRAGMENT | len(call))[:2],
        "half a record": frame(call)[:len(call) // 2],
        "a fragment, no last one": frame(call)[:4].replace(b"\x80", b"\x00", 1) + call,
        "1 MiB of a larger record": struct.pack(">I", LAST_FRAGMENT | MAX_RECORD) + bytes(1 << 20),
    }
    socks = {name: connect(server) for name in partials}
    idle = connect(server)  # connected, nothing sent: only the (longer) idle timeout applies
    try:
        start = time.monotonic()
        for name, data in partials.items():
            socks[name].sendall(data)
        closed_at: dict[str, float] = {}
        while len(closed_at) < len(socks) and time.monotonic() - start < STALL + 5:
            null_ok(bystander)  # a busy connection is never closed
            for name, sock in socks.items():
                if name not in closed_at and not still_open(sock):
                    closed_at[name] = time.monotonic() - start
            time.sleep(0.1)
        assert set(closed_at) == set(socks), f"not closed: {set(socks) - set(closed_at)}"
        for name, t in closed_at.items():
            assert STALL <= t <= STALL + 3, (name, t)
        assert still_open(idle), "an idle connection was closed at the stall timeout"
    finally:
        for sock in [*socks.values(), idle]:
            sock.close()
    report("partial records", server, before,
           closed_after_s=",".join(f"{t:.2f}" for t in closed_at.values()))
    null_ok(bystander)


def _ensure_descriptors(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"this process may open only {hard} descriptors")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def _answer(sock: socket.socket) -> str:
    try:
        data = sock.recv(64)
    except ConnectionResetError:
        return "refused"
    if not data:
        return "refused"
    return "answered" if len(data) == 28 and data[4:8] == struct.pack(">I", 7) else repr(data)


def test_thousand_idle_connections(server: ServerProcess, bystander: RpcClient) -> None:
    """The server raised its descriptor limit (it started with about 256), holds 1000
    connections, answers each and a fresh client at once, then closes them when idle while
    a connection in use stays open."""
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()  # type: ignore[union-attr]
    soft, hard = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
    assert int(soft) > started_with_nofile and soft == hard or int(soft) == 1 << 20, limits
    _ensure_descriptors(1200)
    before = rss_kib(server)
    start = time.monotonic()
    socks = [connect(server) for _ in range(1000)]
    opened = time.monotonic() - start
    try:
        null_call = frame(bytes(encode_call(7, NFS, 3, 0, ROOT)))
        for sock in socks:
            sock.sendall(null_call)
        answers = [_answer(sock) for sock in socks]
        answered = sum(a == "answered" for a in answers)
        # Accepted and answered, or refused cleanly (closed) past the server's connection
        # cap (half its descriptors): with a hard limit of 2000 or more, all are answered.
        assert set(answers) <= {"answered", "refused"}, set(answers)
        assert answered >= min(1000, int(soft) // 2 - 16), (answered, soft)
        held = rss_kib(server) - before
        latency = fresh_null(server, within=1.0)
        # Nothing pending on them: the idle timeout closes them all; the bystander, used
        # meanwhile, stays.
        deadline = time.monotonic() + IDLE + 5
        # (every one of them: with several workers each closes its own connections on its own
        # sweep, and a sample of them may all sit on the worker that swept first)
        while time.monotonic() < deadline and any(still_open(s) for s in socks):
            null_ok(bystander)
            time.sleep(0.25)
        open_left = sum(still_open(s) for s in socks)
        assert open_left == 0, f"{open_left} idle connections still open"
    finally:
        for sock in socks:
            sock.close()
    print(f"\n[1000 connections] opened in {opened:.2f} s, {answered} answered; server held "
          f"{held // 1024} MiB more with them open; fresh NULL {latency * 1000:.1f} ms; "
          f"all closed after the {IDLE} s idle timeout")
    assert held < 200 << 10, held  # about 200 KiB per connection at most
    report("after idle connections", server, before)
    null_ok(bystander)


# --- a client that never reads its replies ------------------------------------------------------------

def test_client_never_reading_replies_is_bounded_then_closed(server: ServerProcess,
                                                            bystander: RpcClient) -> None:
    """2000 pipelined 1 MiB READs (offloaded to threads) and 2000 64 KiB READs (inline)
    ask for 2 GiB of replies: the server queues a bounded amount, keeps serving others,
    and drops each connection after the stall timeout."""
    root = bystander.mount(server.export_b)
    handle = create_ok(bystander, root, b"big")
    (server.export / "big").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    before = rss_kib(server)
    abusers = []
    for count in (1 << 20, 64 << 10):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.connect(("127.0.0.1", server.port))
        args = pack(nfs3.READ3args, nfs3.READ3args.cls(fh(handle), 0, count))
        calls = b"".join(frame(bytes(encode_call(0x8000_0000 + i, NFS, 3, READ, ROOT)) + args)
                         for i in range(2000))
        sender = threading.Thread(target=_send_quietly, args=(sock, calls), daemon=True)
        sender.start()
        abusers.append((sock, sender))
    start = time.monotonic()
    peak = 0
    latencies = []
    while time.monotonic() - start < STALL:  # the abusers hold their replies meanwhile
        t = time.monotonic()
        null_ok(bystander)
        status, res = bystander.nfs(READ, nfs3.READ3args.cls(fh(handle), 4096, 4096))
        assert status == nfs3.NFS3_OK and len(res.data) == 4096
        latencies.append(time.monotonic() - t)
        peak = max(peak, rss_kib(server) - before)
        time.sleep(0.05)
    closed = [wait_closed(sock, within=STALL + 5) is not None for sock, _ in abusers]
    for sock, sender in abusers:
        sock.close()
        sender.join(timeout=10)
    assert closed == [True, True], closed
    assert max(latencies) < 2.0, latencies
    print(f"\n[never reading] peak server RSS growth {peak // 1024} MiB while 4000 READs went "
          f"unread; bystander NULL+READ max {max(latencies) * 1000:.0f} ms")
    report("after unread replies", server, before)
    # Per connection: ~4 MiB of queued replies, 32 calls in flight (up to 1 MiB each) and
    # one write batch; far from the 2 GiB asked for.
    assert peak < 160 << 10, peak
    null_ok(bystander)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # closed by the server: what the test expects


# --- state a client can make the server keep ---------------------------------------------------------

def test_mount_list_does_not_grow_with_spellings_of_one_path(server: ServerProcess,
                                                             bystander: RpcClient) -> None:
    """MNT of ``/export``, ``/export/``, ``/export//`` ...: one mount, not one per spelling
    (before, each added an entry of up to 1 KiB to the list DUMP returns, without bound)."""
    from protocol.mount3 import MOUNT3
    root = bystander.mount(server.export_b)
    for i in range(300):
        assert bystander.mount(server.export_b + b"/" * i + b"/."[: i % 3]) == root
    dump = bystander.call(MOUNT3, 2, None)
    assert [(bytes(m.ml_hostname), bytes(m.ml_directory)) for m in dump] == [(b"127.0.0.1", server.export_b)]
    bystander.call(MOUNT3, 3, server.export_b + b"//")  # UMNT, spelled differently again
    assert bystander.call(MOUNT3, 2, None) == []


def test_connections_past_the_cap_are_refused_cleanly() -> None:
    """In process, with a cap of 3: the fourth and fifth connections are closed at once,
    the first three served; when one leaves, a new one is accepted."""
    import asyncio

    from nfsd.rpc.dispatch import Dispatcher
    from nfsd.discovery.portmap_service import PORTMAP2_TCP, PortmapService
    from nfsd.rpc.server import ConnectionLimits, RpcStreamProtocol

    dispatcher = Dispatcher()
    dispatcher.register(PORTMAP2_TCP, PortmapService())
    null = frame(bytes(encode_call(9, 100000, 2, 0, ROOT)))

    def served(sock: socket.socket) -> bool:
        try:
            sock.sendall(null)
            return len(sock.recv(64)) == 28
        except (ConnectionResetError, BrokenPipeError):
            return False

    async def scenario() -> list[bool]:
        connections: set[RpcStreamProtocol] = set()
        limits = ConnectionLimits(max_connections=3)
        srv = await asyncio.get_running_loop().create_server(
            lambda: RpcStreamProtocol(dispatcher, connections, 4096, limits=limits), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            socks = [await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5) for _ in range(5)]
            await asyncio.sleep(0.1)
            results = [await asyncio.to_thread(served, s) for s in socks]
            socks[0].close()
            await asyncio.sleep(0.1)
            with socket.create_connection(("127.0.0.1", port), 5) as again:
                await asyncio.sleep(0.1)
                results.append(await asyncio.to_thread(served, again))
            for s in socks:
                s.close()
            return results
        finally:
            srv.close()

    assert asyncio.run(scenario()) == [True, True, True, False, False, True]
