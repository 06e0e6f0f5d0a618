"""PYSFSD_TRACEMALLOC (nfsd/memtrace.py): off unless asked; on SIGUSR2 a snapshot and counts."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import tracemalloc

import pytest

from nfsd import memtrace


def test_unset_it_traces_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memtrace.ENV, raising=False)
    loop = asyncio.new_event_loop()
    try:
        assert memtrace.install(loop, "w0") is None
        assert not tracemalloc.is_tracing()
    finally:
        loop.close()


def test_sigusr2_writes_a_snapshot_that_compares(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(memtrace.ENV, str(tmp_path / "snaps"))
    loop = asyncio.new_event_loop()
    kept: list[bytes] = []
    try:
        trace = memtrace.install(loop, "w1")
        assert trace is not None and tracemalloc.is_tracing()

        async def two_snapshots() -> None:
            os.kill(os.getpid(), signal.SIGUSR2)
            await asyncio.sleep(0.05)
            kept.extend(b"x" * 1000 + bytes([i % 256]) for i in range(2000))  # ~2 MB grown between
            os.kill(os.getpid(), signal.SIGUSR2)
            await asyncio.sleep(0.05)
        loop.run_until_complete(two_snapshots())
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
        loop.close()
        first = tracemalloc.Snapshot.load(str(tmp_path / "snaps" / "w1-0.tracemalloc"))
        second = tracemalloc.Snapshot.load(str(tmp_path / "snaps" / "w1-1.tracemalloc"))
        tracemalloc.stop()
    top = second.compare_to(first, "lineno")[0]
    assert top.traceback[0].filename == __file__ and top.size_diff > 1_000_000
    figures = json.loads((tmp_path / "snaps" / "w1-1.json").read_text())
    assert figures["pid"] == os.getpid() and figures["types"] and figures["traced"] > 1_000_000
    assert "uordblks" in figures["mallinfo"] or figures["mallinfo"] == {}   # glibc or not


def test_with_no_frames_it_traces_nothing_and_writes_the_heap_figures(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path) -> None:
    """PYSFSD_TRACEMALLOC_FRAMES=0: calls keep their speed, a snapshot is the heap's figures
    (mallinfo2, malloc_info's free chunks, the large records' buffer pool)."""
    monkeypatch.setenv(memtrace.ENV, str(tmp_path / "snaps"))
    monkeypatch.setenv(memtrace.FRAMES_ENV, "0")
    loop = asyncio.new_event_loop()
    try:
        trace = memtrace.install(loop, "w0")
        assert trace is not None and not tracemalloc.is_tracing()
        stem = trace.take()
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
        loop.close()
    figures = json.loads(stem.with_suffix(".json").read_text())
    assert "traced" not in figures and "types" not in figures
    assert set(figures["buffers"]) == {"buffers", "bytes", "in_use", "in_use_bytes"}
    assert not stem.with_suffix(".tracemalloc").exists()
    if figures["mallinfo"]:  # glibc: its XML, one <heap> per arena
        assert "<heap nr=\"0\">" in stem.with_suffix(".malloc.xml").read_text()


@pytest.mark.parametrize("frames", ["eight", "-1", "2.5"])
def test_a_frames_value_that_is_no_count_is_refused_with_a_message_not_a_crash(
        monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture, frames: str) -> None:
    """A typo in a debugging variable must not take a worker down: the default depth is
    used and the log says why."""
    monkeypatch.setenv(memtrace.ENV, str(tmp_path / "snaps"))
    monkeypatch.setenv(memtrace.FRAMES_ENV, frames)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level("WARNING"):
            assert memtrace.install(loop, "w0") is not None
        assert tracemalloc.is_tracing() and tracemalloc.get_traceback_limit() == memtrace.FRAMES
        assert memtrace.FRAMES_ENV in caplog.text and repr(frames) in caplog.text
    finally:
        tracemalloc.stop()
        loop.remove_signal_handler(signal.SIGUSR2)
        loop.close()


def test_the_c_library_is_looked_up_once_and_shared_with_the_heap_trim() -> None:
    from nfsd import heaptrim
    assert memtrace.mallinfo() == {} or memtrace.mallinfo()["arena"] > 0
    assert heaptrim.c_library() is heaptrim.c_library()
