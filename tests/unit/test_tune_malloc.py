"""nfsd/cli/main.py ``tune_malloc``: the server's threads share one malloc arena, so a
quiet server's ``malloc_trim`` reaches what their buffers left (nfsd/heaptrim.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

_PROBE = """
import ctypes, threading
from nfsd.cli.main import tune_malloc
tune_malloc()
def work():
    kept = [bytearray(200_000) for _ in range(20)]
    del kept
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def test_threads_allocate_from_the_one_arena() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True)
    assert "Arena 0:" in out.stderr  # glibc's report, the witness
    assert "Arena 1:" not in out.stderr, out.stderr
