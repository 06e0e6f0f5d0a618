"""The quick part of the load scripts (scripts/load/), for CI; the long runs are the scripts
themselves (see README.rst, *Load and soak*).

* scripts/load/mixed.py, 16 clients x 8 calls in flight for 15 s against its own server:
  every reply checked, no error, no stalled client, every op of the mix served;
* the same generator against a server that squashes root: its checks must catch the
  refusals and wrong ACCESS answers (the checks are not blind);
* scripts/load/bigdir.py with 10k entries, listed by nfs-rs (READDIRPLUS) three times while
  16 slots create and remove other files in the directory: every entry exactly once;
* bigdir's checker itself, on listings with a missing, a repeated and a foreign name.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow

LOAD = Path(__file__).resolve().parents[2] / "scripts" / "load"


def run_script(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LOAD / name), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_mixed_load_has_no_error_and_no_stall(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    # 15 s say nothing about memory staying flat (caches are still filling): the long run does.
    run = run_script("mixed.py", "--clients", "16", "--depth", "8", "--seconds", "15", "--interval", "5",
                     "--stall", "10", "--max-growth", "-1", "--root", str(tmp_path), "--json", str(report_path))
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    report = json.loads(report_path.read_text())
    assert report["errors"] == 0 and report["reasons"] == {}, output
    assert report["stalled_clients"] == [] and report["unanswered"] == 0, output
    assert (report["connections"], report["depth"]) == (16, 8)
    assert report["seconds"] >= 15
    served = {op: figures["ops"] for op, figures in report["per_op"].items()}
    assert all(count > 0 for count in served.values()), served
    assert {"getattr", "readdirplus", "rename", "setattr", "write_verify", "read64k"} <= served.keys()
    assert len(report["intervals"]) >= 3 and all(i["ops_per_s"] > 0 for i in report["intervals"]), output
    assert report["memory_last"]["rss"] > 0, output


def test_mixed_load_catches_wrong_answers(tmp_path: Path) -> None:
    """Against a root-squashing export the generator (calling as root) is nobody: writes,
    creates and chmods are refused, ACCESS grants no MODIFY.  The run must fail, naming them."""
    (tmp_path / "export").mkdir()
    srv = ServerProcess(tmp_path / "export", tmp_path / "state", export_options="*(rw,root_squash,insecure)").start()
    assert srv.proc is not None
    try:
        run = run_script("mixed.py", "--port", str(srv.port), "--pid", str(srv.proc.pid), "--export",
                         str(srv.export), "--clients", "2", "--depth", "2", "--seconds", "3",
                         "--interval", "1", "--json", str(tmp_path / "report.json"))
    finally:
        srv.stop()
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 1, output
    report = json.loads((tmp_path / "report.json").read_text())
    reasons = " ".join(report["reasons"])
    assert report["errors"] > 0
    assert "access: ACCESS: granted" in reasons, reasons
    for op in ("write_verify", "create_remove", "setattr"):
        assert f"{op}: NFS3ERR_" in reasons, reasons
    assert "RESULT FAIL" in run.stdout


def test_bigdir_listing_under_churn(tmp_path: Path) -> None:
    pytest.importorskip("nfs_rs")
    report_path = tmp_path / "bigdir.json"
    run = run_script("bigdir.py", "--entries", "10000", "--lister", "nfs-rs", "--rounds", "3",
                     "--clients", "4", "--depth", "4", "--interval", "5", "--root", str(tmp_path),
                     "--json", str(report_path))
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    report = json.loads(report_path.read_text())
    assert len(report["listings"]) == 3, output
    for listing in report["listings"]:
        assert listing["originals"] == 10000, listing
        assert (listing["missing"], listing["repeated"], listing["foreign"]) == (0, 0, 0), listing
    churn = report["churn"]
    assert churn["total_ops"] > 0 and churn["errors"] == 0 and churn["stalled_clients"] == [], output


def test_bigdir_checker_finds_missing_repeated_and_foreign_names() -> None:
    spec = importlib.util.spec_from_file_location("load_bigdir", LOAD / "bigdir.py")
    assert spec is not None and spec.loader is not None
    saved = list(sys.path)
    try:
        bigdir = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bigdir  # its dataclasses look their module up there
        spec.loader.exec_module(bigdir)
    finally:
        sys.path[:] = saved
    originals = {bigdir.entry_name(i) for i in range(5)}
    good = bigdir.check_listing([".", "..", *sorted(originals), "churn-c0-s0-1"], originals)
    assert good.ok and (good.originals, good.churn_seen, good.listed) == (5, 1, 6)
    names = [bigdir.entry_name(i) for i in (0, 1, 2, 2, 3)] + ["stray"]
    bad = bigdir.check_listing(names, originals)
    assert not bad.ok
    assert bad.missing == [bigdir.entry_name(4)]
    assert bad.repeated == {bigdir.entry_name(2): 2}
    assert bad.foreign == ["stray"]
