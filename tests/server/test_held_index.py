"""A query directory listed while the start-up index is being built is answered once the
index is ready, by the first call: held, not told JUKEBOX (which the Linux client retries
only after 5 s).  The content pass is held back by a transducer that sleeps (6 s: the UDP
probe must come before it ends, and the hold is made longer than any loaded machine's pass,
``PYSFSD_HOLD_SECONDS``, so the answer never depends on the machine's speed); UDP, where no
call is held, shows the index was not ready when the held calls were sent.  With two
workers, the follower (told by the writer that the index is ready) holds its call too."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import start_indexing
from tests.nfs3_helpers import (OK, S, getattr_, listing_status, look, mkdir, mkdir_ok, names, remove, rename,
                                rmdir, symlink, udp_listing_status, wait_listable)
from tests.rpc_client import RpcClient

from .test_tags import link, xattr_tags

from .test_workers import connect_per_worker


def _worker_pids(pid: int, workers: int) -> list[int]:
    """The worker processes of the server ``pid`` (none if it serves alone)."""
    if workers == 1:
        return []
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _connections(port: int, pids: list[int]) -> list[RpcClient]:
    """One connection per worker of ``pids`` (one connection if the server is one process)."""
    if not pids:
        return [RpcClient(port)]
    return list(connect_per_worker(port, pids).values())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_query_directory_listed_during_the_scan_is_answered_by_the_first_call(tmp_path: Path,
                                                                                workers: int) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.c").write_text("int a;\n")
    (export / "n.txt").write_text("slow words\n")
    with start_indexing(export, tmp_path, "--workers", str(workers), "--transducer", "*.txt=sleep 6",
                         env={"PYSFSD_HOLD_SECONDS": "120"}) as (proc, port):
        clients: list[RpcClient] = []
        try:
            pids = _worker_pids(proc.pid, workers)
            clients = _connections(port, pids)
            root = clients[0].mount(os.fsencode(str(export)))
            text = look(clients[0], root, b"text:")
            assert udp_listing_status(port, text) == S.NFS3ERR_JUKEBOX  # the text pass is not done
            answers: dict[int, int] = {}

            def first_listing(i: int, rpc: RpcClient) -> None:
                answers[i] = listing_status(rpc, text)
            threads = [threading.Thread(target=first_listing, args=(i, c)) for i, c in enumerate(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert answers == {i: OK for i in range(len(clients))}, answers  # no JUKEBOX: held, then answered
            for rpc in clients:  # from the whole index
                assert names(rpc, look(rpc, text, b"slow")) == {b"n.txt"}
        finally:
            for c in clients:
                c.close()


def _tagging_calls(tags: bytes, vac: bytes, trip: bytes, b: bytes) -> list[Callable[[RpcClient], int]]:
    """One of each tagging procedure (MKDIR, SYMLINK, LINK, REMOVE, RMDIR, RENAME in ``tag:``
    directories)."""
    return [lambda rpc: mkdir(rpc, tags, b"later")[0],
            lambda rpc: symlink(rpc, trip, b"d.jpg", b"../../d.jpg")[0],
            lambda rpc: link(rpc, b, vac, b"b.jpg"),
            lambda rpc: remove(rpc, vac, b"a.jpg")[0],
            lambda rpc: rmdir(rpc, tags, b"unused")[0],
            lambda rpc: rename(rpc, vac, b"c.jpg", trip, b"c.jpg")[0]]


@pytest.mark.parametrize("workers", [1, 2])
def test_tagging_during_the_scan_is_held_not_told_jukebox(tmp_path: Path, workers: int) -> None:
    """Tags changed while the start-up scan runs (the second start: a changed text file is
    read again, slowly) are answered OK once the index is ready, not NFS3ERR_JUKEBOX (they
    were, before tagging was held: TagDirs' NfsPending was caught as an NfsError); another
    call is answered meanwhile.  The handles of the value directories are the first start's."""
    export = tmp_path / "export"
    export.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (export / name).write_bytes(b"\xff\xd8\xff\xe0 " + name.encode())
    (export / "n.txt").write_text("slow words\n")
    slow = ("--workers", str(workers), "--transducer", "*.txt=sleep 6")
    env = {"PYSFSD_HOLD_SECONDS": "120"}
    with start_indexing(export, tmp_path, *slow, env=env) as (_, port):
        with RpcClient(port) as rpc:
            root = rpc.mount(os.fsencode(str(export)))
            wait_listable(rpc, look(rpc, root, b"text:"))
            tags = look(rpc, root, b"tag:")
            vac, trip = mkdir_ok(rpc, tags, b"vacation"), mkdir_ok(rpc, tags, b"trip")
            mkdir_ok(rpc, tags, b"unused")
            a, b, c = (look(rpc, root, n) for n in (b"a.jpg", b"b.jpg", b"c.jpg"))
            assert link(rpc, a, vac, b"a.jpg") == OK and link(rpc, c, vac, b"c.jpg") == OK
    (export / "n.txt").write_text("slower words\n")  # read again by the next start-up scan
    with start_indexing(export, tmp_path, *slow, env=env) as (proc, port):
        clients: list[RpcClient] = []
        try:
            pids = _worker_pids(proc.pid, workers)
            calls = _tagging_calls(tags, vac, trip, b)
            while len(clients) < len(calls):  # (with two workers: three calls on each)
                clients += _connections(port, pids)
            assert udp_listing_status(port, vac) == S.NFS3ERR_JUKEBOX  # (UDP holds nothing) not ready
            answers: dict[int, int] = {}

            def run(i: int) -> None:
                answers[i] = calls[i](clients[i])
            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
            for t in threads:
                t.start()
            with RpcClient(port) as other:  # served while the tagging calls wait
                assert getattr_(other, other.mount(os.fsencode(str(export))))[0] == OK
            for t in threads:
                t.join()
            assert answers == {i: OK for i in range(len(calls))}, answers  # held, then answered
            rpc = clients[0]
            assert names(rpc, tags) == {b"vacation", b"trip", b"later"}
            assert names(rpc, vac) == {b"b.jpg"} and names(rpc, trip) == {b"c.jpg", b"d.jpg"}
            assert ([xattr_tags(export / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
                    == [[], [b"vacation"], [b"trip"], [b"trip"]])
        finally:
            for client in clients:
                client.close()
