"""The index follows every change, through the server and behind its back (inotify), and
answers only what is true now: words of files written on the host, renames that change
which transducers apply, hard links under every name, FIFOs out of content queries, and
records of deleted files pruned by the server itself."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import REPO, ServerProcess
from tests.nfs3_helpers import OK, S, list_dir, lookup
from tests.rpc_client import RpcClient


def names(rpc: RpcClient, d: bytes) -> set[bytes]:
    return {e.name for e in list_dir(rpc, d)} - {b".", b".."}


def look(rpc: RpcClient, d: bytes, *path: bytes) -> bytes:
    for name in path:
        status, res = lookup(rpc, d, name)
        assert status == OK, (name, status)
        d = res.object.data
    return d


def listed(rpc: RpcClient, d: bytes, *path: bytes) -> set[bytes]:
    """The entries of d/path..., or the empty set when it does not exist."""
    for name in path:
        status, res = lookup(rpc, d, name)
        if status == S.NFS3ERR_NOENT:
            return set()
        assert status == OK, (name, status)
        d = res.object.data
    return names(rpc, d)


def eventually(check: Callable[[], object], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got is True:
            return
        assert time.monotonic() < deadline, got
        time.sleep(0.1)


@pytest.fixture
def rpc(server: ServerProcess):
    with RpcClient(server.port) as client:
        yield client


@pytest.fixture
def root(server: ServerProcess, rpc: RpcClient) -> bytes:
    return rpc.mount(server.export_b)


# --- written behind the server's back ------------------------------------------------------

def test_text_follows_files_written_on_the_host(server, rpc, root):
    """Issue 11: on an empty export, after ``.`` and ``text:`` were listed once, files
    written on the host must show their words (and types) in ``text:`` and ``type:``."""
    e = server.export
    assert names(rpc, root) == set()
    assert listed(rpc, root, b"text:") == set()
    (e / "host.txt").write_text("written on host\n")
    (e / "main.c").write_text("int main(void) { return 0; }\n")
    (e / "src").mkdir()
    (e / "src" / "inner.txt").write_text("deeper words\n")

    def words() -> object:
        got = listed(rpc, root, b"text:")
        want = {b"written", b"on", b"host", b"int", b"main", b"void", b"return", b"deeper", b"words"}
        return want <= got or got
    eventually(words)
    eventually(lambda: listed(rpc, root, b"text:", b"host") == {b"host.txt"} or listed(rpc, root, b"text:", b"host"))
    eventually(lambda: {b"text%2Fplain", b"text%2Fx-c"} <= listed(rpc, root, b"type:") or listed(rpc, root, b"type:"))
