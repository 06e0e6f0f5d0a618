"""A raw-RPC NLM client for tests, and the services a lock client runs for the server's
calls back: a portmapper, the client's NLM (GRANTED, *_RES) and its statd (SM_NOTIFY), all
on one loopback UDP socket in a thread."""
from __future__ import annotations

import queue
import socket
import struct
import threading
from typing import Any

from protocol import nlm4, nsm, portmap
from protocol.nlm4 import NLM4, nlm4_stats
from protocol.rpc import parse_call, success_reply
from tests.rpc_client import ROOT, RpcClient

END = 0  # l_len 0: to the end of the file


class NlmClient:
    """One lock client (a caller name) talking NLM4 over TCP to the server."""

    def __init__(self, port: int, name: str, host: str = "127.0.0.1", cred: Any = ROOT) -> None:
        self.rpc = RpcClient(port, host)
        self.name = name.encode()
        self.cred = cred

    def close(self) -> None:
        self.rpc.close()

    def alock(self, fh: bytes, svid: int, offset: int, length: int) -> Any:
        return nlm4.nlm4_lock(self.name, fh, b"%d@%s" % (svid, self.name), svid, offset, length)

    def lock(self, fh: bytes, svid: int, offset: int, length: int, exclusive: bool = True,
             block: bool = False, reclaim: bool = False, proc: int = 2) -> int:
        a = nlm4.nlm4_lockargs(b"c%d" % svid, block, exclusive, self.alock(fh, svid, offset, length), reclaim, 3)
        res = self.rpc.call(NLM4, proc, a, self.cred)
        assert res.cookie == a.cookie
        return int(res.stat)

    def test(self, fh: bytes, svid: int, offset: int, length: int, exclusive: bool = True) -> Any:
        res = self.rpc.call(NLM4, 1, nlm4.nlm4_testargs(b"t", exclusive, self.alock(fh, svid, offset, length)), self.cred)
        return res.test_stat

    def unlock(self, fh: bytes, svid: int, offset: int, length: int) -> int:
        return int(self.rpc.call(NLM4, 4, nlm4.nlm4_unlockargs(b"u", self.alock(fh, svid, offset, length)), self.cred).stat)

    def cancel(self, fh: bytes, svid: int, offset: int, length: int, exclusive: bool = True) -> int:
        a = nlm4.nlm4_cancargs(b"x", True, exclusive, self.alock(fh, svid, offset, length))
        return int(self.rpc.call(NLM4, 3, a, self.cred).stat)

    def share(self, fh: bytes, oh: bytes, mode: int, access: int, proc: int = 20) -> int:
        a = nlm4.nlm4_shareargs(b"s", nlm4.nlm4_share(self.name, fh, oh, mode, access), False)
        return int(self.rpc.call(NLM4, proc, a, self.cred).stat)


class CallbackServices:
    """What the server calls back: every GETPORT answers this socket's port; GRANTED is
    answered with ``grant_answer`` (None: never answered); every call is queued in ``calls``
    as (program name, procedure name, decoded args)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.calls: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self.grant_answer: int | None = nlm4_stats.NLM4_GRANTED
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        programs = {portmap.PMAP_PROGRAM: portmap.PORTMAP2, nlm4.NLM_PROGRAM: NLM4, nsm.SM_PROGRAM: nsm.SM}
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:
                return
            call = parse_call(data)
            prog = programs[call.prog]
            proc = prog.procedures[call.proc]
            args, _ = proc.args.unpack(data, call.args_offset)
            if prog is portmap.PORTMAP2 and proc.name == "GETPORT":
                result: Any = self.port
            elif proc.name == "GRANTED":
                if self.grant_answer is None:
                    self.calls.put((prog.name, proc.name, args))
                    continue
                result = nlm4.nlm4_res(args.cookie, self.grant_answer)
            else:
                result = None
            self.calls.put((prog.name, proc.name, args))
            buf = success_reply(call.xid)
            proc.res.pack(buf, result)
            self.sock.sendto(bytes(buf), addr)

    def next_call(self, name: str, timeout: float = 15.0) -> Any:
        """The args of the next call of procedure ``name`` (others are skipped)."""
        while True:
            _, proc, args = self.calls.get(timeout=timeout)
            if proc == name:
                return args


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)
