"""The VM's fsx (scripts/vm/guest/fsx.c), built and run here on a local file, and the VM
runner's ``check`` host action (hostcheck_now in guest/lib.sh).

fsx must pass on a file system that keeps what it is given, be deterministic (same seed:
same file), and fail, naming the operation and printing its log, when the file does not
hold what was written: /dev/zero takes every write and keeps nothing."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.vm_support import VM_DIR, load_vm_module


@pytest.fixture(scope="module")
def fsx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    binary = tmp_path_factory.mktemp("fsx") / "fsx"
    built = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(binary),
                            str(VM_DIR / "guest" / "fsx.c")], capture_output=True, text=True)
    if built.returncode != 0 and "cannot find -lc" in built.stderr:
        pytest.skip("no static libc")
    assert built.returncode == 0, built.stderr
    return binary


def _run(fsx: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(fsx), "-q", *args], capture_output=True, text=True, timeout=120)


def test_fsx_passes_and_is_deterministic(fsx: Path, tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        run = _run(fsx, "-S", "42", "-N", "3000", "-l", "65536", "-o", "8192",
                   "-W", str(tmp_path / f"{name}.shadow"), str(tmp_path / name))
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("fsx: PASS seed 42 ops 3000 ")
        for op in ("read", "write", "truncate", "mapread", "mapwrite", "fsync", "invalidate", "reopen"):
            assert int(run.stdout.split(f" {op}=")[1].split()[0]) > 0, (op, run.stdout)
        data = (tmp_path / name).read_bytes()
        assert data == (tmp_path / f"{name}.shadow").read_bytes()
        digests.append(hashlib.md5(data).hexdigest())
    assert digests[0] == digests[1]
    other = _run(fsx, "-S", "43", "-N", "3000", "-l", "65536", "-o", "8192", str(tmp_path / "c"))
    assert other.returncode == 0, other.stderr
    assert hashlib.md5((tmp_path / "c").read_bytes()).hexdigest() != digests[0]


def test_fsx_fails_on_a_file_that_loses_writes(fsx: Path) -> None:
    run = _run(fsx, "-S", "1", "-N", "100", "/dev/zero")
    assert run.returncode == 1
    assert "fsx: FAIL at op 1 (seed 1): size after write: 0, expected" in run.stderr
    assert "fsx: last operations" in run.stderr
    assert "PASS" not in run.stdout


def test_check_host_action_checks_the_export_now(tmp_path: Path) -> None:
    vm = load_vm_module()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x\n")
    assert vm.do_host_action("HOSTACTION 1.5 check count d 1", tmp_path, {}) == ("1.5", "OK checked")
    ident, answer = vm.do_host_action("HOSTACTION 2.5 check count d 2", tmp_path, {})
    assert ident == "2.5" and answer.startswith("FAIL ") and "host has '1'" in answer
    assert vm.do_host_action("HOSTACTION 3.5 check absent ../x", tmp_path, {})[1].startswith("FAIL ")
