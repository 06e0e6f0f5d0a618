"""End to end with libnfs-utils (nfs-ls, nfs-cat, nfs-cp): a C NFSv3 client nobody here wrote."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

TOOLS = ("nfs-ls", "nfs-cat", "nfs-cp")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="libnfs-utils (nfs-ls, nfs-cat, nfs-cp) not installed")
MiB = 1 << 20


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, timeout=timeout)


def sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def seeded_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def test_nfs_ls_lists_names_and_sizes(server):
    ex = server.export
    files = {"alpha.txt": b"a" * 10, "beta.bin": random.Random("beta.bin").randbytes(12345), "with space": b"", "g\u00e9": b"xy"}
    for name, data in files.items():
        (ex / name).write_bytes(data)
    (ex / "subdir").mkdir()
    (ex / "subdir/inner").write_bytes(b"inner!")
    os.symlink("alpha.txt", ex / "link")
    r = run("nfs-ls", server.url())
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    lines = out.splitlines()
    for name, data in files.items():
        row = [ln for ln in lines if ln.endswith(" " + name)]
        assert row, (name, out)
        assert str(len(data)) in row[0].split(), row
    assert any(ln.startswith("d") and ln.endswith(" subdir") for ln in lines), out
    assert any(ln.startswith("l") and " link" in ln for ln in lines), out
    # A subdirectory URL, and the recursive listing.
    r = run("nfs-ls", server.url("subdir"))
    assert r.returncode == 0 and r.stdout.decode().rstrip().endswith(" inner"), r
    r = run("nfs-ls", "-R", server.url())
    assert r.returncode == 0 and "inner" in r.stdout.decode(), r


def test_nfs_ls_large_directory_pages_through_cookies(server):
    """nfs-ls asks for 8 KiB READDIRPLUS replies: 1500 entries need many pages."""
    d = server.export / "big"
    d.mkdir()
    names = {f"file-{i:05d}-{'n' * (i % 50)}" for i in range(1500)}
    for n in names:
        (d / n).write_bytes(b"z" * (len(n) % 7))
    r = run("nfs-ls", server.url("big"))
    assert r.returncode == 0, r.stderr
    listed = [ln.split()[-1] for ln in r.stdout.decode().splitlines() if ln.strip()]
    listed = [n for n in listed if n not in (".", "..")]
    assert len(listed) == len(set(listed)) == len(names)
    assert set(listed) == names


def test_nfs_cat(server):
    text = "".join(f"line {i}: {'x' * (i % 70)}\n" for i in range(50_000)).encode()  # ~2 MiB
    (server.export / "text.txt").write_bytes(text)
    r = run("nfs-cat", server.url("text.txt"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == text
    (server.export / "tiny").write_bytes(b"hi\n")
    assert run("nfs-cat", server.url("tiny")).stdout == b"hi\n"
    r = run("nfs-cat", server.url("missing"))
    assert r.returncode != 0 and r.stdout == b""


@pytest.mark.slow
def test_nfs_cp_100mb_both_ways(server, tmp_path, record_property):
    size = 100 * MiB
    src = tmp_path / "src.bin"
    back = tmp_path / "back.bin"
    seeded_file(src, size, seed=20240601)
    digest = sha_file(src)

    t0 = time.perf_counter()
    r = run("nfs-cp", str(src), server.url("big.bin"))
    up = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    on_server = server.export / "big.bin"
    assert on_server.stat().st_size == size
    assert sha_file(on_server) == digest

    t0 = time.perf_counter()
    r = run("nfs-cp", server.url("big.bin"), str(back))
    down = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert back.stat().st_size == size
    assert sha_file(back) == digest

    up_mbs, down_mbs = size / MiB / up, size / MiB / down
    print(f"\nnfs-cp 100 MiB: host->server {up_mbs:.1f} MiB/s ({up:.2f} s), "
          f"server->host {down_mbs:.1f} MiB/s ({down:.2f} s)")
    record_property("nfs_cp_upload_MiB_per_s", round(up_mbs, 1))
    record_property("nfs_cp_download_MiB_per_s", round(down_mbs, 1))


def test_nfs_cp_refuses_to_overwrite(server, tmp_path):
    """nfs-cp creates GUARDED: an existing name must get NFS3ERR_EXIST and stay intact."""
    existing = server.export / "existing.bin"
    original = random.Random("existing.bin").randbytes(300_000)
    existing.write_bytes(original)
    os.chmod(existing, 0o640)
    before = existing.stat()
    src = tmp_path / "new.bin"
    src.write_bytes(b"must not land" * 1000)

    r = run("nfs-cp", str(src), server.url("existing.bin"))
    assert r.returncode != 0, r
    assert b"EXIST" in r.stderr, r.stderr
    after = existing.stat()
    assert existing.read_bytes() == original
    assert (after.st_ino, after.st_size, after.st_mode, after.st_mtime_ns) == \
        (before.st_ino, before.st_size, before.st_mode, before.st_mtime_ns)

    # A fresh name works, and then is refused in turn.
    r = run("nfs-cp", str(src), server.url("fresh.bin"))
    assert r.returncode == 0, r.stderr
    assert (server.export / "fresh.bin").read_bytes() == src.read_bytes()
    other = tmp_path / "other.bin"
    other.write_bytes(b"other")
    r = run("nfs-cp", str(other), server.url("fresh.bin"))
    assert r.returncode != 0 and b"EXIST" in r.stderr, r.stderr
    assert (server.export / "fresh.bin").read_bytes() == src.read_bytes()
