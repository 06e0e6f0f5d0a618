"""Finding the server through the portmapper.

* The embedded portmapper (``--portmap``), on a free test port so the test is deterministic:
  GETPORT over TCP and UDP, DUMP, NULL, SET/UNSET from loopback, CALLIT and UDP DUMP refused,
  rpcbind v3/v4 answered PROG_MISMATCH (clients fall back to v2), MOUNT EXPORT found
  through it as showmount does.
* The same on port 111 with nfs-common's ``rpcinfo -p`` and ``showmount -e`` (skipped when
  something already listens on 111).
* Registration with the system rpcbind (started here with ``rpcbind -f`` when none runs,
  and stopped afterwards only then; a cold start, without ``-w``, so that no mapping saved
  by an earlier rpcbind comes back): ``rpcinfo -p`` and ``showmount -e`` see the server,
  its mappings go away when it stops, a stale mapping is replaced and a live one kept.
"""
from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from nfsd.discovery.portmap_service import PortmapService, is_loopback
from nfsd.discovery.rpcbind_client import LOCAL_SOCKETS, Mapping, Portmapper, Registration
from nfsd.rpc.call import CallContext
from protocol import mount3, portmap
from protocol.rpc import AUTH_NONE, Credentials, accept_stat
from tests.conftest import ServerProcess
from tests.rpc_client import RpcClient, UdpRpcClient

PMAP, NFS, MOUNT = 100000, 100003, 100005
TCP, UDP = portmap.IPPROTO_TCP, portmap.IPPROTO_UDP
NONE = Credentials(AUTH_NONE)


def _ctx(host: str) -> CallContext:
    return CallContext(NONE, (host, 1000))


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (for the embedded portmapper)."""
    for _ in range(50):
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            try:
                u.bind(("127.0.0.1", t.getsockname()[1]))
            except OSError:
                continue
            return t.getsockname()[1]
    raise RuntimeError("no free port")


def start_with_portmap(server: ServerProcess) -> int:
    """Start ``server`` with its embedded portmapper on a free port; returns the port.
    ``free_port``'s port is free when asked, and another process may take it before the
    server binds it (the server then registers with whatever holds it instead, and the test
    would fail by chance): then the server starts again on another port."""
    args = server.args
    for _ in range(5):
        port = free_port()
        server.args = (*args, "--portmap", "--portmap-port", str(port))
        server.start()
        if discovery_status(server).startswith("serving portmap"):
            return port
        server.stop()
    raise AssertionError("no free port for the embedded portmapper in 5 tries")


def port_111_busy() -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", 111))
            except OSError:
                return True
    return False


def discovery_status(server: ServerProcess) -> str:
    m = re.search(r"^pysfsd: portmapper: (.*)$", server.log_path.read_text(errors="replace"), re.M)
    assert m, server.log_path.read_text(errors="replace")
    return m.group(1)


def start_server(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    export = tmp_path / name / "export"
    export.mkdir(parents=True)
    return ServerProcess(export, tmp_path / name / "state", args=args, env=env, register=True).start()


# --- the portmap v2 procedures ----------------------------------------------------------

def test_portmap_service_semantics() -> None:
    svc = PortmapService([Mapping(NFS, 3, "tcp", 2049), Mapping(NFS, 3, "udp", 2049)])
    local, remote = _ctx("127.0.0.1"), _ctx("192.0.2.7")
    assert svc.GETPORT(remote, portmap.mapping(NFS, 3, TCP, 0)) == 2049
    assert svc.GETPORT(remote, portmap.mapping(NFS, 4, TCP, 0)) == 0
    # SET refuses an existing (prog, vers, prot), bad protocols and ports, and non-local callers.
    assert not svc.SET(local, portmap.mapping(NFS, 3, TCP, 3000))
    assert not svc.SET(remote, portmap.mapping(200000, 1, TCP, 3000))
    assert not svc.SET(local, portmap.mapping(200000, 1, 99, 3000))
    assert not svc.SET(local, portmap.mapping(200000, 1, TCP, 0))
    assert svc.SET(local, portmap.mapping(200000, 1, TCP, 3000))
    assert svc.SET(_ctx("::1"), portmap.mapping(200000, 1, UDP, 3001))
    assert [(m.prog, m.prot, m.port) for m in svc.DUMP(remote, None)] == [
        (NFS, TCP, 2049), (NFS, UDP, 2049), (200000, TCP, 3000), (200000, UDP, 3001)]
    # UNSET removes every protocol of (prog, vers), only for local callers.
    assert not svc.UNSET(remote, portmap.mapping(200000, 1, 0, 0))
    assert svc.UNSET(_ctx("::ffff:127.0.0.1"), portmap.mapping(200000, 1, 0, 0))
    assert not svc.UNSET(local, portmap.mapping(200000, 1, 0, 0))
    assert svc.GETPORT(remote, portmap.mapping(200000, 1, UDP, 0)) == 0


def test_the_table_is_bounded() -> None:
    svc = PortmapService()
    local = _ctx("127.0.0.1")
    results = [svc.SET(local, portmap.mapping(300000 + i, 1, TCP, 1000)) for i in range(1000)]
    assert results.count(True) == 256 and not results[-1]


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.2.2") and not is_loopback("::ffff:10.0.0.1") and not is_loopback("local")


# --- the embedded portmapper on a test port ----------------------------------------------

def _getport(client: RpcClient | UdpRpcClient, prog: int, vers: int, prot: int) -> int:
    return client.call(portmap.PORTMAP2, 3, portmap.mapping(prog, vers, prot, 0))


def _accept_stat(body: Any) -> int:
    stat, accepted = body
    assert stat == 0, body
    return accepted.reply_data[0]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    (tmp_path / "emb" / "export").mkdir(parents=True)
    srv = ServerProcess(tmp_path / "emb" / "export", tmp_path / "emb" / "state", register=True)
    pm_port = start_with_portmap(srv)
    try:
        yield srv, pm_port
    finally:
        srv.stop()


def test_embedded_portmapper_answers_getport_and_dump(embedded) -> None:
    srv, pm_port = embedded
    assert discovery_status(srv) == f"serving portmap v2 on 127.0.0.1:{pm_port} (tcp, udp)"
    with RpcClient(pm_port) as tcp, UdpRpcClient(pm_port) as udp:
        for client in (tcp, udp):
            assert client.call(portmap.PORTMAP2, 0, None) is None
            for prog in (NFS, MOUNT):
                for prot in (TCP, UDP):
                    assert _getport(client, prog, 3, prot) == srv.port
            assert _getport(client, NFS, 4, TCP) == 0
            assert _getport(client, 100021, 4, TCP) == srv.port   # NLM v4 (locks)
            assert _getport(client, 100021, 1, TCP) == 0
            assert _getport(client, PMAP, 2, UDP) == pm_port
        dump = {(m.prog, m.vers, m.prot, m.port) for m in tcp.call(portmap.PORTMAP2, 4, None)}
        assert dump == {(PMAP, 2, TCP, pm_port), (PMAP, 2, UDP, pm_port),
                        (NFS, 3, TCP, srv.port), (NFS, 3, UDP, srv.port),
                        (MOUNT, 3, TCP, srv.port), (MOUNT, 3, UDP, srv.port),
                        (100021, 4, TCP, srv.port), (100021, 4, UDP, srv.port),
                        (100024, 1, TCP, srv.port), (100024, 1, UDP, srv.port)}


def test_embedded_portmapper_refuses_what_it_should(embedded) -> None:
    srv, pm_port = embedded
    args = bytes(12) + bytes(4)  # call_args: prog, vers, proc, empty opaque
    with RpcClient(pm_port) as tcp, UdpRpcClient(pm_port) as udp:
        # CALLIT (an amplifier): not served; DUMP over UDP (its reply outgrows the call): neither.
        assert _accept_stat(tcp.raw_call(PMAP, 2, 5, args)[1]) == accept_stat.PROC_UNAVAIL
        assert _accept_stat(udp.raw_call(PMAP, 2, 5, args)[1]) == accept_stat.PROC_UNAVAIL
        assert _accept_stat(udp.raw_call(PMAP, 2, 4)[1]) == accept_stat.PROC_UNAVAIL
        # rpcbind v3/v4: PROG_MISMATCH low=high=2, so libtirpc and the kernel fall back to v2.
        for vers in (3, 4):
            _, body, _ = tcp.raw_call(PMAP, vers, 3, bytes(20))
            assert _accept_stat(body) == accept_stat.PROG_MISMATCH
            assert body[1].reply_data[1] == (2, 2)
        # Nothing but the portmapper on its port.
        assert _accept_stat(tcp.raw_call(NFS, 3, 0)[1]) == accept_stat.PROG_UNAVAIL
        assert _accept_stat(udp.raw_call(MOUNT, 3, 0)[1]) == accept_stat.PROG_UNAVAIL


def test_embedded_portmapper_set_and_unset_from_loopback(embedded) -> None:
    srv, pm_port = embedded
    with RpcClient(pm_port) as tcp, UdpRpcClient(pm_port) as udp:
        assert udp.call(portmap.PORTMAP2, 1, portmap.mapping(200000, 1, UDP, 4321)) is True
        assert tcp.call(portmap.PORTMAP2, 1, portmap.mapping(200000, 1, UDP, 4322)) is False
        assert _getport(tcp, 200000, 1, UDP) == 4321
        assert tcp.call(portmap.PORTMAP2, 2, portmap.mapping(200000, 1, 0, 0)) is True
        assert _getport(udp, 200000, 1, UDP) == 0
        assert _getport(udp, NFS, 3, TCP) == srv.port  # ours untouched


def test_showmount_path_through_the_embedded_portmapper(embedded) -> None:
    """What showmount does: ask the portmapper for MOUNT v3 over UDP, then call EXPORT."""
    srv, pm_port = embedded
    with UdpRpcClient(pm_port) as pm:
        mount_port = _getport(pm, MOUNT, 3, UDP)
    with UdpRpcClient(mount_port) as mnt:
        exports = mnt.call(mount3.MOUNT3, 5, None)
    assert [e.ex_dir for e in exports] == [srv.export_b]


def test_registration_over_portmap_v2(embedded) -> None:
    """The client side against a classic portmapper (ours): SET and UNSET over TCP, a stale
    mapping replaced, a live one (the server's own) left alone, only our mappings removed."""
    srv, pm_port = embedded
    with socket.socket() as s:  # a port nobody listens on: the "dead server"
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    found = Portmapper.connect(sockets=(), port=pm_port)
    assert found is not None
    with found as pm:
        assert pm.version == 2
        assert pm.set(Mapping(200001, 1, "tcp", dead), "127.0.0.1")
    with RpcClient(pm_port) as tcp:
        reg = Registration("127.0.0.1", [Mapping(200001, 1, proto, 7000) for proto in ("tcp", "udp")]
                           + [Mapping(NFS, 3, "tcp", 7000)], sockets=(), port=pm_port)
        status = reg.register()
        assert status == (f"registered with 127.0.0.1:{pm_port}: 200001/1/tcp, 200001/1/udp; "
                          "left 100003/3 to the server holding it"), status
        assert _getport(tcp, 200001, 1, TCP) == 7000 and _getport(tcp, 200001, 1, UDP) == 7000
        assert _getport(tcp, NFS, 3, TCP) == srv.port
        reg.unregister()
        assert _getport(tcp, 200001, 1, TCP) == 0 and _getport(tcp, 200001, 1, UDP) == 0
        assert _getport(tcp, NFS, 3, TCP) == srv.port


def test_no_portmapper_no_registration(tmp_path: Path) -> None:
    reg = Registration("127.0.0.1", [Mapping(200001, 1, "tcp", 7000)],
                       sockets=(str(tmp_path / "no.sock"),), port=free_port())
    assert reg.register() == "not registered: no rpcbind or portmapper running on this host"
    reg.unregister()  # nothing to do, no error


def test_busy_portmap_port_falls_back_to_registration(tmp_path: Path) -> None:
    pm_port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", pm_port))
        squatter.listen()
        srv = start_server(tmp_path, "busy", "--portmap", "--portmap-port", str(pm_port))
        try:
            status = discovery_status(srv)
            assert not status.startswith("serving"), status
            with UdpRpcClient(srv.port) as udp:
                assert udp.call(mount3.MOUNT3, 0, None) is None
        finally:
            log = srv.stop()
    assert "Traceback" not in log


# --- nfs-common's rpcinfo and showmount ---------------------------------------------------

def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install nfs-common rpcbind)")


def _rpcinfo_p() -> str:
    return subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True, text=True, timeout=30).stdout


def _mappings(rpcinfo_output: str) -> set[tuple[int, int, str, int]]:
    found = set()
    for line in rpcinfo_output.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0].isdigit():
            found.add((int(words[0]), int(words[1]), words[2], int(words[3])))
    return found


def _ours(port: int) -> set[tuple[int, int, str, int]]:
    return {(prog, vers, proto, port) for prog, vers in ((NFS, 3), (MOUNT, 3), (100021, 4), (100024, 1))
            for proto in ("tcp", "udp")}


def _showmount(srv: ServerProcess) -> str:
    out = subprocess.run(["showmount", "-e", "127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_rpcinfo_and_showmount_with_the_embedded_portmapper_on_111(tmp_path: Path) -> None:
    _need("rpcinfo", "showmount")
    if port_111_busy():
        pytest.skip("port 111 is in use (a system rpcbind runs: see the registration tests)")
    srv = start_server(tmp_path, "p111", "--portmap")
    try:
        status = discovery_status(srv)
        if not status.startswith("serving"):
            pytest.skip(f"port 111 was taken meanwhile: {status}")
        assert _ours(srv.port) | {(PMAP, 2, "tcp", 111), (PMAP, 2, "udp", 111)} == _mappings(_rpcinfo_p())
        assert re.search(rf"^{re.escape(str(srv.export))}\s+\*$", _showmount(srv), re.M)
    finally:
        log = srv.stop()
    assert not port_111_busy()
    assert "Traceback" not in log


# --- registration with the system rpcbind -------------------------------------------------

def _rpcbind_answers() -> bool:
    pm = Portmapper.connect(port=111, timeout=1.0)
    if pm is None:
        return False
    with pm:
        return pm.version == 3  # reached over rpcbind's AF_UNIX socket


@contextmanager
def rpcbind_running() -> Iterator[None]:
    """A running rpcbind: the system's, or one started here (and stopped only then).
    Skips the test when neither is possible."""
    if _rpcbind_answers():
        yield
        return
    if shutil.which("rpcbind") is None:
        pytest.skip("rpcbind not installed")
    if port_111_busy():
        pytest.skip("port 111 is held by something that is not rpcbind")
    proc = subprocess.Popen(["rpcbind", "-f"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 10
        while not _rpcbind_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"rpcbind did not start: {proc.stderr.read().decode() if proc.poll() is not None else ''}")
            time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def system_rpcbind() -> Iterator[None]:
    with rpcbind_running():
        yield


def registered_or_skip(srv: ServerProcess) -> None:
    status = discovery_status(srv)
    if "to the server holding it" in status:
        pytest.skip(f"another running NFS server holds the rpcbind mappings: {status}")
    assert status == (f"registered with {LOCAL_SOCKETS[0]}: 100003/3/tcp, 100003/3/udp, "
                      "100005/3/tcp, 100005/3/udp, 100021/4/tcp, 100021/4/udp, 100024/1/tcp, 100024/1/udp"), status


def test_registered_with_rpcbind_rpcinfo_and_showmount(system_rpcbind, tmp_path: Path) -> None:
    _need("rpcinfo", "showmount")
    srv = start_server(tmp_path, "reg")
    try:
        registered_or_skip(srv)
        assert _ours(srv.port) <= _mappings(_rpcinfo_p())
        assert re.search(rf"^{re.escape(str(srv.export))}\s+\*$", _showmount(srv), re.M)
        for flag in ("-u", "-t"):  # NULL over UDP and TCP, at the port rpcbind gives
            out = subprocess.run(["rpcinfo", flag, "127.0.0.1", "nfs", "3"], capture_output=True, text=True,
                                 timeout=30)
            assert "ready and waiting" in out.stdout, out
        port = srv.port
    finally:
        log = srv.stop()
    assert "Traceback" not in log
    assert not _ours(port) & _mappings(_rpcinfo_p())  # unregistered on SIGTERM


def test_registration_replaces_stale_and_keeps_live_mappings(system_rpcbind, tmp_path: Path) -> None:
    dead = start_server(tmp_path, "dead")
    try:
        registered_or_skip(dead)
    except BaseException:  # (skipped: a server left running would hold the mappings for good)
        dead.stop()
        raise
    dead.stop(signal.SIGKILL)  # dies registered
    assert _ours(dead.port) <= _mappings(_rpcinfo_p())
    live = start_server(tmp_path, "live")
    try:
        registered_or_skip(live)  # the dead server's mappings were replaced
        current = _mappings(_rpcinfo_p())
        assert _ours(live.port) <= current and not _ours(dead.port) & current
        other = start_server(tmp_path, "other")
        try:
            status = discovery_status(other)
            assert status.endswith("nothing; left 100003/3, 100005/3, 100021/4, 100024/1 to the server holding it"), status
        finally:
            other.stop()
        assert _ours(live.port) <= _mappings(_rpcinfo_p())  # the other one removed nothing
    finally:
        live.stop()
    assert not _ours(live.port) & _mappings(_rpcinfo_p())


def test_no_register_leaves_rpcbind_alone(system_rpcbind, tmp_path: Path) -> None:
    """--no-register (the test suite's default): a private instance tells rpcbind nothing,
    so it can never take over the mappings of the host's real server."""
    _need("rpcinfo")
    export = tmp_path / "private" / "export"
    export.mkdir(parents=True)
    srv = ServerProcess(export, tmp_path / "private" / "state").start()
    try:
        assert discovery_status(srv).startswith("not registered (--no-register)")
        assert not _ours(srv.port) & _mappings(_rpcinfo_p())
    finally:
        log = srv.stop()
    assert "Traceback" not in log
