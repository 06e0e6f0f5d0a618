"""Tags (issue 15) through the real Linux NFSv3 client, in the project's qemu VM.

The workload (scripts/vm/workloads/tags.sh) runs mkdir, ln -s, ln, rm, mv and rmdir in
``tag:`` directories, combined queries with transducer fields, moves through the mount and
behind the server's back (host action ``mv``), a host ``cp -a`` (host action ``cp-a``), and a
user who cannot write a file trying to tag it.  Afterwards the host checks where the tags
are: in the files' ``user.pysfsd.tags`` attributes.  Skips without qemu or the Debian cloud
kernel, unless PYSFSD_REQUIRE_VM=1.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.vm_support import WORKLOADS, tail, vm_or_skip

pytestmark = pytest.mark.vm

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64


def write_tags_tree(root: Path) -> None:
    (root / "photos").mkdir()
    (root / "docs").mkdir()
    (root / "photos" / "beach.jpg").write_bytes(JPEG + b"beach")
    (root / "photos" / "city.jpg").write_bytes(JPEG + b"city")
    (root / "docs" / "tax.txt").write_text("taxes\n")
    (root / "docs" / "mine.txt").write_text("mine\n")
    for p in root.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chown(root / "docs" / "mine.txt", 1001, 1001)


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise ValueError(f"{rel} is outside the export")
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="the server must run as root to act as its callers")
def test_linux_client_tags_workload(server, tmp_path: Path) -> None:
    vm = vm_or_skip()
    root = server.export
    write_tags_tree(root)
    server.restart()

    def mv(args: list[str]) -> str:
        os.rename(_inside(root, args[0]), _inside(root, args[1]))
        return "moved"

    def cp_a(args: list[str]) -> str:
        subprocess.run(["cp", "-a", str(_inside(root, args[0])), str(_inside(root, args[1]))], check=True)
        return "copied"

    result = vm.run_vm_test(
        server.port, str(root), host_dir=root, log_dir=tmp_path / "vm",
        workload=WORKLOADS / "tags.sh", timeout=600.0, host_actions={"mv": mv, "cp-a": cp_a})
    log = server.log_path.read_text(errors="replace")
    assert result.passed, f"{result.summary()}\n--- pysfsd stderr tail ---\n{tail(server.log_path)}"
    assert "Traceback" not in log
    # the tags are the files' own: in their user attribute, nowhere else on disk
    assert os.getxattr(root / "shore.jpg", "user.pysfsd.tags") == b"2025"
    assert os.getxattr(root / "docs" / "copy.jpg", "user.pysfsd.tags") == b"2025"
    with pytest.raises(OSError):  # untagged: the attribute is gone
        os.getxattr(root / "photos" / "city.jpg", "user.pysfsd.tags")
    assert sorted(os.listdir(root)) == ["docs", "photos", "shore.jpg"]
