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

import pytest

from tests.conftest import start_indexing
from tests.nfs3_helpers import OK, S, listing_status, look, names, udp_listing_status
from tests.rpc_client import RpcClient

from .test_workers import connect_per_worker


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
            pids: list[int] = []
            if workers > 1:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    pids = [int(p) for p in f.read().split()]
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
