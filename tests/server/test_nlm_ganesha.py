"""The same NLM call sequence against NFS-Ganesha and pysfsd gives the same results.

scripts/benchmarks/load_generator/nlm_locks.py runs both servers (with rpcbind and rpc.statd, which Ganesha's
NLM needs) in a private network and mount namespace, sends each the same calls from two
raw-RPC clients (conflicts, shared and exclusive ranges, TEST holders, UNLOCK splits,
ranges at and past 2**63, FBIG) and compares.  Skips without root, unshare or Ganesha.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmarks" / "load_generator" / "nlm_locks.py"


def test_same_results_as_ganesha() -> None:
    missing = [tool for tool in ("unshare", "ip", "ganesha.nfsd", "rpcbind", "rpc.statd") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root and {missing or 'nothing else'}")
    run = subprocess.run([sys.executable, str(SCRIPT), "--pairs", "200"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sequence: same results" in run.stdout
    assert "differs" not in run.stdout
    rates = [line for line in run.stdout.splitlines() if "LOCK+UNLOCK pairs" in line]
    assert [line.split()[0] for line in rates] == ["ganesha", "pysfsd"], run.stdout
