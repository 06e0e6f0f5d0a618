"""NLM v4 and NSM against a real server process, from raw-RPC clients on loopback.

Two clients (two caller names) exclude each other as POSIX says; a local process on the
server host and an NLM client exclude each other (the locks are OFD locks on the real file
too); a blocked lock is granted by a GRANTED callback once free, and revoked when the
client does not take it; the asynchronous _MSG variants answer with _RES calls; a restart
(clean or kill -9) sends SM_NOTIFY and opens a grace period in which only reclaims are
granted; SM_NOTIFY and FREE_ALL from a client drop its locks; bad input gets protocol
errors."""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import nfs3, nlm4, nsm, portmap
from protocol.nlm4 import NLM4
from protocol.nlm4 import nlm4_stats as S
from protocol.rpc import AUTH_SYS, Credentials, accept_stat, decode_reply, encode_call
from tests.conftest import ServerProcess
from tests.nlm_helpers import CallbackServices, NlmClient, u32
from tests.rpc_client import RpcClient, fh

GRACE = 4.0


@pytest.fixture
def callbacks() -> Iterator[CallbackServices]:
    cb = CallbackServices()
    yield cb
    cb.close()


@pytest.fixture
def srv(tmp_path: Path, callbacks: CallbackServices) -> Iterator[ServerProcess]:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "f").write_bytes(b"x" * 1000)
    s = ServerProcess(tmp_path / "export", tmp_path / "state",
                      args=("--grace-period", str(GRACE), "--client-portmap-port", str(callbacks.port)),
                      env={"PYSFSD_TRACE": "1"})
    s.start()
    yield s
    err = s.stop()
    assert "Traceback" not in err, err[-4000:]


def file_handle(srv: ServerProcess, name: bytes = b"f") -> bytes:
    with RpcClient(srv.port) as rpc:
        root = rpc.mount(srv.export_b)
        status, ok = rpc.nfs(3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(root), name)))
        assert status == 0
        return ok.object.data


def clients(srv: ServerProcess) -> tuple[NlmClient, NlmClient]:
    return NlmClient(srv.port, "alpha"), NlmClient(srv.port, "beta")


def test_two_clients_exclude_each_other_as_posix_says(srv: ServerProcess) -> None:
    h = file_handle(srv)
    a, b = clients(srv)
    assert a.lock(h, 1, 0, 100) == S.NLM4_GRANTED
    assert a.lock(h, 1, 0, 100) == S.NLM4_GRANTED               # a retransmission
    assert b.lock(h, 7, 50, 10) == S.NLM4_DENIED
    assert b.lock(h, 7, 50, 10, block=True, proc=22) == S.NLM4_DENIED   # NM_LOCK never blocks
    stat, holder = b.test(h, 7, 99, 5)
    assert stat == S.NLM4_DENIED and (holder.svid, holder.oh, holder.l_offset, holder.l_len) == (1, b"1@alpha", 0, 100)
    assert b.test(h, 7, 100, 0)[0] == S.NLM4_GRANTED           # just past it, to end of file
    assert b.lock(h, 7, 100, 0) == S.NLM4_GRANTED
    # shared locks coexist; an exclusive one does not join them
    assert a.lock(h, 2, 1 << 40, 10, exclusive=False) == S.NLM4_DENIED   # b holds 100..EOF
    assert b.unlock(h, 7, 1 << 40, 0) == S.NLM4_GRANTED                   # split b's lock
    assert a.lock(h, 2, 1 << 40, 10, exclusive=False) == S.NLM4_GRANTED
    assert b.lock(h, 8, 1 << 40, 10, exclusive=False) == S.NLM4_GRANTED
    assert b.lock(h, 8, (1 << 40) + 5, 1, exclusive=True) == S.NLM4_DENIED
    assert b.lock(h, 7, 200, 10) == S.NLM4_GRANTED             # still inside b's remaining part
    # a different svid of the same client is a different owner (another process)
    assert a.lock(h, 3, 10, 1) == S.NLM4_DENIED
    # 64-bit offsets, as NFS-Ganesha: files have signed offsets
    top = (1 << 63) - 10
    assert a.lock(h, 4, top, 0) == S.NLM4_GRANTED               # b's lock ends at 2**40 now
    assert b.lock(h, 7, top - 5, 6, exclusive=False) == S.NLM4_DENIED
    assert b.lock(h, 7, top - 5, 5, exclusive=False) == S.NLM4_GRANTED
    assert a.unlock(h, 4, top + 3, 0) == S.NLM4_GRANTED
    assert b.lock(h, 7, top + 3, 100) == S.NLM4_GRANTED          # past 2**63-1: to end of file
    assert b.test(h, 9, (1 << 63) - 1, 1)[0] == S.NLM4_DENIED
    assert a.lock(h, 4, 1 << 63, 0) == S.NLM4_FBIG
    assert a.lock(h, 4, 5, (1 << 64) - 4) == S.NLM4_DENIED        # past 2**64: to end of file too
    assert a.test(h, 4, (1 << 64) - 1, 1)[0] == S.NLM4_FBIG
    assert a.unlock(h, 4, 1 << 63, 1) == S.NLM4_FBIG
    assert a.unlock(h, 1, 0, 0) == S.NLM4_GRANTED
    assert b.lock(h, 7, 0, 100) == S.NLM4_GRANTED
    a.close()
    b.close()
    trace = srv.log_path.read_text()   # PYSFSD_TRACE shows NLM calls with their outcome
    assert "NLM4.LOCK" in trace and "-> NLM4_DENIED" in trace and "-> NLM4_GRANTED" in trace


def test_nfs_v4_gets_prog_mismatch_so_mount_nfs_falls_back_to_v3(srv: ServerProcess) -> None:
    """Debian's mount.nfs with no options tries NFSv4 first: PROG_MISMATCH (3..3) makes the
    kernel report EPROTONOSUPPORT, and mount.nfs goes on with v3."""
    with RpcClient(srv.port) as rpc:
        _, body, _ = rpc.raw_call(nfs3.NFS_PROGRAM, 4, 0)
    assert body[1].reply_data[0] == accept_stat.PROG_MISMATCH
    assert (body[1].reply_data[1].low, body[1].reply_data[1].high) == (3, 3)


def test_callers_who_may_not_read_or_write_the_file_cannot_lock_it(srv: ServerProcess) -> None:
    """As knfsd, which opens the file for the caller: a lock keeps local processes out too,
    so a user who may not even read a file must not lock it."""
    (srv.export / "private").write_bytes(b"secret")
    os.chmod(srv.export / "private", 0o600)
    (srv.export / "shared").write_bytes(b"public")
    os.chmod(srv.export / "shared", 0o644)
    user = Credentials(AUTH_SYS, 1000, 1000, (), b"pytest")
    c = NlmClient(srv.port, "user", cred=user)
    root = NlmClient(srv.port, "admin")
    private, shared = file_handle(srv, b"private"), file_handle(srv, b"shared")
    assert c.lock(private, 1, 0, 1) == S.NLM4_FAILED
    assert c.test(private, 1, 0, 1)[0] == S.NLM4_FAILED
    assert c.share(private, b"o", 0, 1) == S.NLM4_FAILED
    assert c.lock(shared, 1, 0, 1) == S.NLM4_GRANTED       # read permission is enough
    assert root.lock(private, 1, 0, 1) == S.NLM4_GRANTED   # root, not squashed here
    os.chmod(srv.export / "shared", 0o600)
    assert c.unlock(shared, 1, 0, 0) == S.NLM4_GRANTED     # giving up is always allowed
    assert root.lock(shared, 2, 0, 1) == S.NLM4_GRANTED
    c.close()
    root.close()


def test_local_process_and_nfs_client_exclude_each_other(srv: ServerProcess) -> None:
    h = file_handle(srv)
    a, _ = clients(srv)
    path = str(srv.export / "f")
    fd = os.open(path, os.O_RDWR)
    r, w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # another process: its POSIX lock, as any local program would take it
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
            os.write(w, b"locked")
            os.read(release_r, 1)  # held until the test says (not for 3 s: a slow run outlived it)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 6) == b"locked"
        assert a.lock(h, 1, 5, 1) == S.NLM4_DENIED
        stat, holder = a.test(h, 1, 0, 0, exclusive=False)
        assert stat == S.NLM4_DENIED and (holder.l_offset, holder.l_len, holder.exclusive) == (0, 10, True)
        assert a.lock(h, 1, 10, 10) == S.NLM4_GRANTED   # past the local lock
        # a blocked request waits for the local process, and is granted when it lets go
        assert a.lock(h, 1, 0, 10, block=True) == S.NLM4_BLOCKED
    finally:
        os.write(release_w, b"x")
        os.waitpid(pid, 0)
        for end in (r, w, release_r, release_w):
            os.close(end)
    deadline = time.monotonic() + 10
    while a.lock(h, 1, 0, 10) != S.NLM4_GRANTED:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # and the reverse: the NLM lock keeps a local process out
    with pytest.raises(OSError):
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 12)
    assert a.unlock(h, 1, 0, 0) == S.NLM4_GRANTED
    fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 12)
    os.close(fd)
    a.close()


def test_blocked_lock_is_granted_by_callback(srv: ServerProcess, callbacks: CallbackServices) -> None:
    h = file_handle(srv)
    a, b = clients(srv)
    assert a.lock(h, 1, 0, 0) == S.NLM4_GRANTED
    assert b.lock(h, 2, 0, 10, block=True) == S.NLM4_BLOCKED
    assert b.lock(h, 2, 0, 10, block=True) == S.NLM4_BLOCKED   # the client's poll
    assert a.unlock(h, 1, 0, 0) == S.NLM4_GRANTED
    granted = callbacks.next_call("GRANTED")
    assert (granted.alock.caller_name, granted.alock.svid, granted.alock.l_offset, granted.alock.l_len,
            granted.exclusive, granted.cookie) == (b"beta", 2, 0, 10, True, b"c2")
    time.sleep(0.5)
    assert a.lock(h, 1, 5, 1) == S.NLM4_DENIED                  # b has it now
    # a client that does not answer the callback does not keep the lock
    callbacks.grant_answer = None
    assert a.lock(h, 1, 5, 1, block=True) == S.NLM4_BLOCKED
    assert b.unlock(h, 2, 0, 10) == S.NLM4_GRANTED
    callbacks.next_call("GRANTED")
    deadline = time.monotonic() + 20
    while b.lock(h, 2, 5, 1) != S.NLM4_GRANTED:   # revoked after the tries time out
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # a cancelled request is never granted
    assert a.lock(h, 3, 5, 1, block=True) == S.NLM4_BLOCKED
    assert a.cancel(h, 3, 5, 1) == S.NLM4_GRANTED
    assert b.unlock(h, 2, 0, 0) == S.NLM4_GRANTED
    assert b.lock(h, 4, 5, 1) == S.NLM4_GRANTED
    a.close()
    b.close()


def test_msg_variants_answer_with_res_calls(srv: ServerProcess, callbacks: CallbackServices) -> None:
    h = file_handle(srv)
    a, b = clients(srv)
    assert a.lock(h, 1, 0, 10) == S.NLM4_GRANTED
    args = nlm4.nlm4_lockargs(b"m1", False, True, b.alock(h, 2, 0, 1), False, 3)
    assert b.rpc.call(NLM4, 7, args) is None                   # LOCK_MSG
    res = callbacks.next_call("LOCK_RES")
    assert (res.cookie, res.stat) == (b"m1", S.NLM4_DENIED)
    b.rpc.call(NLM4, 6, nlm4.nlm4_testargs(b"m2", True, b.alock(h, 2, 0, 1)))   # TEST_MSG
    res = callbacks.next_call("TEST_RES")
    assert res.cookie == b"m2" and res.test_stat[0] == S.NLM4_DENIED and res.test_stat[1].svid == 1
    a.rpc.call(NLM4, 9, nlm4.nlm4_unlockargs(b"m3", a.alock(h, 1, 0, 10)))      # UNLOCK_MSG
    assert callbacks.next_call("UNLOCK_RES").stat == S.NLM4_GRANTED
    assert b.lock(h, 2, 0, 1) == S.NLM4_GRANTED
    a.close()
    b.close()


def test_share_reservations(srv: ServerProcess) -> None:
    h = file_handle(srv)
    a, b = clients(srv)
    assert a.share(h, b"o1", mode=nlm4.fsh4_mode.fsm_DW, access=nlm4.fsh4_access.fsa_R) == S.NLM4_GRANTED
    assert b.share(h, b"o2", mode=nlm4.fsh4_mode.fsm_DN, access=nlm4.fsh4_access.fsa_RW) == S.NLM4_DENIED
    assert b.share(h, b"o2", mode=nlm4.fsh4_mode.fsm_DN, access=nlm4.fsh4_access.fsa_R) == S.NLM4_GRANTED
    assert a.share(h, b"o1", 0, 0, proc=21) == S.NLM4_GRANTED   # UNSHARE
    assert b.share(h, b"o3", mode=nlm4.fsh4_mode.fsm_DN, access=nlm4.fsh4_access.fsa_W) == S.NLM4_GRANTED
    a.close()
    b.close()


def test_notify_and_free_all_drop_a_rebooted_clients_locks(srv: ServerProcess) -> None:
    h = file_handle(srv)
    a, b = clients(srv)
    assert a.lock(h, 1, 0, 10) == S.NLM4_GRANTED
    assert b.lock(h, 2, 0, 10) == S.NLM4_DENIED
    b.rpc.call(nsm.SM, 6, nsm.stat_chge(b"gamma", 5))              # someone else's reboot
    assert b.lock(h, 2, 0, 10) == S.NLM4_DENIED
    a.rpc.call(nsm.SM, 6, nsm.stat_chge(b"alpha", 5))              # alpha's statd: it rebooted
    assert b.lock(h, 2, 0, 10) == S.NLM4_GRANTED
    assert a.lock(h, 1, 20, 10) == S.NLM4_GRANTED
    assert b.lock(h, 2, 25, 1) == S.NLM4_DENIED
    a.rpc.call(NLM4, 23, nlm4.nlm4_notify(b"alpha", 0))             # FREE_ALL
    assert b.lock(h, 2, 25, 1) == S.NLM4_GRANTED
    a.close()
    b.close()


def test_bad_input_gets_protocol_errors(srv: ServerProcess) -> None:
    h = file_handle(srv)
    a, _ = clients(srv)
    assert a.lock(b"\x01" * 16, 1, 0, 1) == S.NLM4_STALE_FH
    assert a.lock(b"", 1, 0, 1) == S.NLM4_STALE_FH
    assert a.lock(h[:-1] + bytes([h[-1] ^ 1]), 1, 0, 1) == S.NLM4_STALE_FH
    assert a.test(b"zz", 1, 0, 1)[0] == S.NLM4_STALE_FH
    _, body, _ = a.rpc.raw_call(nlm4.NLM_PROGRAM, 4, 2, u32(0, 1))   # truncated LOCK
    assert body[1].reply_data[0] == accept_stat.GARBAGE_ARGS
    _, body, _ = a.rpc.raw_call(nlm4.NLM_PROGRAM, 4, 16, b"")        # no such procedure
    assert body[1].reply_data[0] == accept_stat.PROC_UNAVAIL
    _, body, _ = a.rpc.raw_call(nlm4.NLM_PROGRAM, 1, 0, b"")         # NLM v1: only v4 here
    assert body[1].reply_data[0] == accept_stat.PROG_MISMATCH
    a.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "kill-9"])
def test_restart_notifies_and_grace_admits_only_reclaims(srv: ServerProcess, callbacks: CallbackServices,
                                                          sig: int) -> None:
    h = file_handle(srv)
    a, b = clients(srv)
    assert a.lock(h, 1, 0, 10) == S.NLM4_GRANTED
    a.close()
    b.close()
    srv.restart(sig)
    started = time.monotonic()
    notify = callbacks.next_call("NOTIFY")
    assert notify.mon_name == b"127.0.0.1" and notify.state % 2 == 1
    a, b = clients(srv)
    assert b.lock(h, 2, 50, 10) == S.NLM4_DENIED_GRACE_PERIOD     # even a free range
    assert b.test(h, 2, 0, 10)[0] == S.NLM4_DENIED_GRACE_PERIOD
    assert a.lock(h, 1, 0, 10, reclaim=True) == S.NLM4_GRANTED
    assert time.monotonic() - started < GRACE
    while time.monotonic() - started < GRACE + 1.5:
        time.sleep(0.25)
    assert b.lock(h, 2, 0, 10) == S.NLM4_DENIED                   # a got it back
    assert b.lock(h, 2, 50, 10) == S.NLM4_GRANTED
    a.close()
    b.close()


@pytest.mark.parametrize("locks", [True, False], ids=["locks", "no-locks"])
def test_registered_like_nfs_and_mount(tmp_path: Path, locks: bool) -> None:
    """NLM v4 and NSM v1, TCP and UDP, in the (embedded) portmapper's table, answering
    rpcinfo's NULL calls; ``--no-locks`` serves and registers neither."""
    (tmp_path / "export").mkdir()
    from tests.server.test_discovery import start_with_portmap
    s = ServerProcess(tmp_path / "export", tmp_path / "state", args=() if locks else ("--no-locks",))
    pmap = start_with_portmap(s)  # free for UDP too (TCP alone was checked), taken for sure
    try:
        with RpcClient(pmap) as pm:
            table = {(m.prog, m.vers, m.prot, m.port) for m in pm.call(portmap.PORTMAP2, 4, None)}
        expected = {(prog, vers, prot, s.port) for prog, vers in ((100021, 4), (100024, 1))
                    for prot in (portmap.IPPROTO_TCP, portmap.IPPROTO_UDP)}
        assert (expected <= table) == locks and not (expected & table if not locks else set())
        for prog, vers in ((100021, 4), (100024, 1)):     # NULL over TCP and UDP
            with RpcClient(s.port) as c:
                _, body, _ = c.raw_call(prog, vers, 0)
            assert (body[1].reply_data[0] == accept_stat.SUCCESS) == locks
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(10)
                u.sendto(bytes(encode_call(77, prog, vers, 0)), ("127.0.0.1", s.port))
                _, body, _ = decode_reply(u.recv(1000))
            assert (body[1].reply_data[0] == accept_stat.SUCCESS) == locks
    finally:
        s.stop()
