"""chmod through an O_PATH descriptor (nfsd/fs/fchmod.py): the mode set, the caller's
permission still checked by the kernel, and the /proc fallback giving the same answers."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from nfsd.fs import fchmod, identity
from nfsd.fs.fchmod import chmod_fd


@pytest.fixture(params=["fchmodat2", "proc"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "proc":
        monkeypatch.setattr(fchmod, "_syscall", None)
    return str(request.param)


def test_sets_the_mode_of_an_o_path_descriptor(tmp_path: Path, way: str) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    fd = os.open(f, os.O_PATH)
    try:
        chmod_fd(fd, 0o4751)
        assert os.stat(f).st_mode & 0o7777 == 0o4751
        chmod_fd(fd, 0o600)
        assert os.stat(f).st_mode & 0o7777 == 0o600
    finally:
        os.close(fd)


def test_a_bad_descriptor_is_an_os_error(way: str) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        chmod_fd(r, 0o600)


def _as(ident: identity.Identity, fn: Callable[[], Any]) -> Any:
    """``fn()`` run on a thread acting as ``ident``; its result or the exception raised."""
    out: list[Any] = []

    def run() -> None:
        identity.become(ident)
        try:
            out.append(fn())
        except Exception as exc:  # handed back to the test
            out.append(exc)
        finally:
            identity.restore(ident)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


@pytest.mark.skipif(not identity.ACTING, reason="acting as the caller needs root")
def test_only_the_owner_may_change_the_mode(tmp_path: Path, way: str) -> None:
    tmp_path.chmod(0o755)
    f = tmp_path / "f"
    f.write_bytes(b"")
    os.chown(f, 1000, 1000)
    f.chmod(0o644)
    fd = os.open(f, os.O_PATH)
    try:
        refused = _as(identity.Identity(1001, 1001), lambda: chmod_fd(fd, 0o666))
        assert isinstance(refused, PermissionError)
        assert os.stat(f).st_mode & 0o7777 == 0o644
        assert _as(identity.Identity(1000, 1000), lambda: chmod_fd(fd, 0o640)) is None
        assert os.stat(f).st_mode & 0o7777 == 0o640
    finally:
        os.close(fd)
