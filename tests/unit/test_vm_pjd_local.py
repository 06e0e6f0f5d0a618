"""The VM's pjdfstest-style cases (scripts/vm/workloads/pjd.sh, guest/fstest.c) run here on a
local file system, without the VM: every expectation must be what Linux answers locally (the
cases claim no more), and the driver and the harness must report a wrong answer.

pjd.sh sources the guest's /vm/lib.sh; here a few stubs stand in for it (steps, reports,
host checks done directly on the directory).  Root only (the cases switch users with
seteuid and chown files); needs gcc with a static libc and busybox's sh, as the VM does."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.vm_support import VM_DIR, WORKLOADS

STUB_LIB = r"""
FAILS=0
report() { case "$*" in "INFO pjd "*) ;; *) echo "$*" ;; esac; }
step() {
    _n=$1; shift
    "$@" > "$MNT.step" 2>&1; _rc=$?
    cat "$MNT.step"
    if [ "$_rc" -eq 0 ]; then echo "STEP $_n OK"; else FAILS=$((FAILS + 1)); echo "STEP $_n FAIL"; fi
}
finish() { echo "FAILS=$FAILS"; }
nfs_mount() { :; }
umount() { :; }
hostcheck() { :; }
hostcheck_now() {
    _p=$MNT/$2
    case $1 in
        mode) _g=$(stat -c %a "$_p") ;; mtime) _g=$(stat -c %Y "$_p") ;; nlink) _g=$(stat -c %h "$_p") ;;
        size) _g=$(stat -c %s "$_p") ;; symlink) _g=$(readlink "$_p") ;;
        absent) if [ -e "$_p" ] || [ -L "$_p" ]; then _g=present; else _g=; fi ;;
    esac
    [ "$_g" = "$3" ] || { echo "host action 'check $*' failed: got '$_g'"; return 1; }
}
"""


@pytest.fixture(scope="module")
def fstest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the cases switch users: root only")
    if shutil.which("gcc") is None or shutil.which("busybox") is None:
        pytest.skip("no gcc or busybox")
    bin_dir = tmp_path_factory.mktemp("fstest")
    built = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(bin_dir / "fstest"),
                            str(VM_DIR / "guest" / "fstest.c")], capture_output=True, text=True)
    if built.returncode != 0 and "cannot find -lc" in built.stderr:
        pytest.skip("no static libc")
    assert built.returncode == 0, built.stderr
    return bin_dir / "fstest"


def run_cases(fstest: Path, tmp_path: Path, script: str) -> str:
    """pjd.sh (as given) under busybox sh with the stubs, on a directory under tmp_path."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mnt.chmod(0o755)
    tmp_path.chmod(0o755)   # the unprivileged users must reach it
    (tmp_path / "lib.sh").write_text(f"MNT={mnt}\n" + STUB_LIB)
    (tmp_path / "pjd.sh").write_text(script.replace(". /vm/lib.sh", f". {tmp_path / 'lib.sh'}"))
    env = {**os.environ, "PATH": f"{fstest.parent}:{os.environ['PATH']}"}
    done = subprocess.run(["busybox", "sh", str(tmp_path / "pjd.sh")], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)
    return done.stdout + done.stderr


def test_every_case_expects_what_linux_answers_locally(fstest: Path, tmp_path: Path) -> None:
    out = run_cases(fstest, tmp_path, (WORKLOADS / "pjd.sh").read_text())
    assert "FAILS=0" in out, out
    assert out.count("STEP pjd_") == 19 and "STEP host_view OK" in out, out


def test_a_wrong_expectation_fails_its_group_and_names_the_case(fstest: Path, tmp_path: Path) -> None:
    script = (WORKLOADS / "pjd.sh").read_text()
    wrong = script.replace("    expect 0600 stat f mode\n", "    expect 0601 stat f mode\n", 1)
    assert wrong != script
    out = run_cases(fstest, tmp_path, wrong)
    assert "MISMATCH chmod.3: expect 0601 stat f mode -> got 0600" in out, out
    assert "STEP pjd_chmod FAIL" in out and "FAILS=1" in out, out


def test_fstest_prints_errno_names_values_and_switches_users(fstest: Path, tmp_path: Path) -> None:
    def run(*args: str) -> str:
        return subprocess.run([str(fstest), *args], cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout.strip()
    tmp_path.chmod(0o755)
    assert run("create", "f", "0640", ":", "fstat", "0", "mode,type,size,nlink") == "0640,regular,0,1"
    assert run("stat", "nx", "mode") == "ENOENT"
    assert run("-u", "65534", "-g", "65534", "unlink", "f") == "EACCES"
    assert run("-u", "65534", "-g", "65534", "open", "f", "O_RDONLY") == "EACCES"
    assert run("symlink", "f", "s", ":", "readlink", "s", ":", "lstat", "s", "type") == "f,symlink"
    assert run("mkdir", "d", "0", ":", "stat", "d", "mode") == "0"
    assert run("open", "f", "O_RDONLY", ":", "ftruncate", "0", "1") == "EINVAL"
