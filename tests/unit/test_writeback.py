"""The page cache gauge deciding when an UNSTABLE WRITE may run on the event loop
(nfsd/fs/writeback.py)."""
from __future__ import annotations

from pathlib import Path

import os

from nfsd.fs.writeback import MemoryGroup, PageCacheRoom, aligned, copies_only, memory_group


def _vmstat(path: Path, dirty: int, writeback: int = 0, threshold: int = 1000, background: int = 500) -> str:
    path.write_text(f"nr_free_pages 12345\nnr_dirty {dirty}\nnr_writeback {writeback}\n"
                    f"nr_dirty_threshold {threshold}\nnr_dirty_background_threshold {background}\n"
                    "nr_dirtied 99\n")
    return str(path)


def test_roomy_only_well_below_where_the_kernel_throttles(tmp_path: Path) -> None:
    vmstat = tmp_path / "vmstat"
    # throttling begins at (1000 + 500) / 2 = 750 pages; inline below half of that
    gauge = PageCacheRoom(_vmstat(vmstat, dirty=300, writeback=70), interval=0, cgroup=None)
    assert gauge.roomy()
    _vmstat(vmstat, dirty=300, writeback=75)
    assert not gauge.roomy()  # writeback pages count: they are not free yet
    _vmstat(vmstat, dirty=900)
    assert not gauge.roomy()


def test_verdict_reused_until_the_interval_passes(tmp_path: Path) -> None:
    vmstat = tmp_path / "vmstat"
    gauge = PageCacheRoom(_vmstat(vmstat, dirty=0), interval=3600, cgroup=None)
    assert gauge.roomy()
    _vmstat(vmstat, dirty=900)
    assert gauge.roomy()  # not re-read yet: one read per interval, not per WRITE
    gauge._until = 0.0
    assert not gauge.roomy()


def test_unknown_means_the_thread_pool(tmp_path: Path) -> None:
    assert not PageCacheRoom(str(tmp_path / "missing"), interval=0, cgroup=None).roomy()
    partial = tmp_path / "vmstat"
    partial.write_text("nr_dirty 0\nnr_writeback 0\n")
    assert not PageCacheRoom(str(partial), interval=0, cgroup=None).roomy()


def test_a_memory_limited_cgroup_is_held_to_its_own_share(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{100 << 20}\n")
    stat = tmp_path / "memory.stat"
    group = MemoryGroup(str(tmp_path / "memory.max"), str(stat), (b"file_dirty", b"file_writeback"))
    gauge = PageCacheRoom(_vmstat(tmp_path / "vmstat", dirty=0), interval=0, cgroup=group)
    stat.write_text(f"anon 1\nfile_dirty {1 << 20}\nfile_writeback 0\n")
    assert gauge.roomy()
    # the background ratio (10 % by default) of 100 MiB, halved: about 5 MiB
    stat.write_text(f"anon 1\nfile_dirty {4 << 20}\nfile_writeback {2 << 20}\n")
    assert not gauge.roomy()


def test_the_memory_cgroup_found_for_v2_and_v1(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    v2 = tmp_path / "srv" / "app"
    v2.mkdir(parents=True)
    (v2 / "memory.max").write_text("max\n")
    proc.write_text("0::/srv/app\n")
    assert memory_group(str(proc), str(tmp_path)) is None  # no limit: the global thresholds rule
    (v2 / "memory.max").write_text(f"{1 << 30}\n")
    group = memory_group(str(proc), str(tmp_path))
    assert group is not None and group.stat_path == str(v2 / "memory.stat")
    assert group.dirty_keys == (b"file_dirty", b"file_writeback")
    # a hybrid host: the memory controller on v1
    v1 = tmp_path / "memory" / "jobs" / "x"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    proc.write_text("4:memory:/jobs/x\n1:cpu:/\n0::/\n")
    assert memory_group(str(proc), str(tmp_path)) is None
    (v1 / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
    group = memory_group(str(proc), str(tmp_path))
    assert group is not None and group.dirty_keys == (b"dirty", b"writeback")
    # whatever the files say, the server starts (no limit known: the global thresholds)
    proc.write_text("garbage\n4:memory:/jobs/x\n")
    (v1 / "memory.limit_in_bytes").write_text("lots\n")
    assert memory_group(str(proc), str(tmp_path)) is None


def test_aligned_means_whole_pages() -> None:
    assert aligned(0, 1 << 20) and aligned(8192, 4096)
    assert not aligned(100, 4096) and not aligned(4096, 1000)


def test_only_local_file_systems_without_stable_pages_copy_only(tmp_path: Path) -> None:
    st = os.stat(tmp_path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    mountinfo = tmp_path / "mountinfo"
    sysfs = tmp_path / "block"

    def mounted(fstype: str) -> None:
        mountinfo.write_text(f"22 1 {dev} / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
                             f"23 22 {dev} / {tmp_path} rw shared:2 - {fstype} src rw\n")  # on top
    mounted("ext4")
    assert copies_only(str(tmp_path), str(mountinfo), str(sysfs))  # no block device entry: tmpfs-like
    for fstype in ("fuse.sshfs", "nfs4", "cifs"):
        mounted(fstype)
        assert not copies_only(str(tmp_path), str(mountinfo), str(sysfs)), fstype
    mounted("xfs")
    queue = sysfs / dev / "queue"
    queue.mkdir(parents=True)
    (queue / "stable_writes").write_text("1\n")  # an overwrite would wait for writeback
    assert not copies_only(str(tmp_path), str(mountinfo), str(sysfs))
    (queue / "stable_writes").write_text("0\n")
    assert copies_only(str(tmp_path), str(mountinfo), str(sysfs))
    assert not copies_only(str(tmp_path / "missing"), str(mountinfo), str(sysfs))
