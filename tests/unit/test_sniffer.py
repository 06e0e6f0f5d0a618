"""nfsd/index/transducers/interface.py ``Sniffer``: libmagic handles are as many as the
threads sniffing at once, not one per thread that ever sniffed (each maps libmagic's 8 MiB
database: docs/design.rst, "Several worker processes")."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from nfsd.index.transducers.interface import Sniffer

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")


def _databases_mapped() -> int:
    return Path("/proc/self/maps").read_text().count("magic.mgc")


def test_threads_sniffing_one_after_another_share_one_handle() -> None:
    """As the server's pool threads do: they live on after sniffing."""
    sniffer = Sniffer(narrow=False)  # the full database's handles (narrowed ones: test_magicdb.py)
    texts = [b"hello\n", b"%PDF-1.4\n", b"#!/bin/sh\necho hi\n", b"plain", b"more plain"]
    turns = [threading.Event() for _ in texts]
    done = [threading.Event() for _ in texts]
    finish = threading.Event()
    seen: dict[int, str] = {}

    def sniff(i: int) -> None:
        turns[i].wait()
        seen[i] = sniffer.mime(texts[i])
        done[i].set()
        finish.wait()

    threads = [threading.Thread(target=sniff, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    try:
        turns[0].set()
        done[0].wait()
        first = _databases_mapped()  # libmagic and its first handle
        for i in range(1, len(texts)):
            turns[i].set()
            done[i].wait()
        mapped = _databases_mapped()
    finally:
        for e in turns:
            e.set()
        finish.set()
        for t in threads:
            t.join()
    assert seen[0] == "text/plain" and seen[1] == "application/pdf"
    assert mapped == first


def test_release_unmaps_idle_handles_and_the_next_sniff_loads_one_again() -> None:
    """A quiet server closes its handles (nfsd/app.py ``_release_idle``): the database's
    8 MiB mapping goes, and a file sniffed afterwards is still typed."""
    sniffer = Sniffer(narrow=False)  # the full database's handles (narrowed ones: test_magicdb.py)
    assert sniffer.mime(b"hello\n") == "text/plain"
    before = _databases_mapped()
    assert before >= 1
    assert sniffer.release() == 1
    assert _databases_mapped() == before - 1
    assert sniffer.release() == 0
    assert sniffer.mime(b"%PDF-1.4\n") == "application/pdf"
    assert _databases_mapped() == before
