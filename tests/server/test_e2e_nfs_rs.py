"""End to end with nfs-rs, a userspace NFSv3 client nobody here wrote.

Every NFSv3 procedure nfs-rs can issue is exercised and each result is checked against the
exported directory on the host, both ways: what is written through NFS is on disk with the
right bytes and attributes, and what is made on disk is seen through NFS.  The few
procedures nfs-rs cannot issue (MKNOD, READDIR, PATHCONF, CREATE GUARDED/EXCLUSIVE) are sent
with the raw test client and their effects are then checked through nfs-rs and on disk.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import re
import stat

import pytest

nfs_rs = pytest.importorskip("nfs_rs")
from nfs_rs import (Client, DirectoryCookie, FileType, NfsAlreadyExistsError,  # noqa: E402
                    NfsError, NfsIsADirectoryError, NfsNotADirectoryError, NfsNotFoundError,
                    NfsOSError)

from protocol import nfs3  # noqa: E402
from protocol.nfs3 import nfsstat3  # noqa: E402
from tests.rpc_client import fh  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


def connect(server, **params) -> Client:
    return Client.connect(server.url(**params), connect_timeout=10, operation_timeout=60)


@pytest.fixture
def nfs(server):
    client = connect(server)
    try:
        yield client
    finally:
        client.close()


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_info_matches(info, st: os.stat_result) -> None:
    """An nfs-rs FileInfo agrees with lstat() of the same object on the host."""
    assert info.fileid == st.st_ino
    assert info.mode & 0o7777 == stat.S_IMODE(st.st_mode)
    assert info.nlink == st.st_nlink
    assert (info.uid, info.gid) == (st.st_uid, st.st_gid)
    assert info.size == st.st_size
    assert info.used == st.st_blocks * 512
    assert info.mtime == st.st_mtime_ns
    assert info.ctime == st.st_ctime_ns
    kinds = {stat.S_IFREG: FileType.FILE, stat.S_IFDIR: FileType.DIRECTORY,
             stat.S_IFLNK: FileType.SYMLINK, stat.S_IFIFO: FileType.FIFO,
             stat.S_IFCHR: FileType.CHARACTER_DEVICE, stat.S_IFBLK: FileType.BLOCK_DEVICE,
             stat.S_IFSOCK: FileType.SOCKET}
    assert info.type == kinds[stat.S_IFMT(st.st_mode)]


# -- FSINFO, FSSTAT ----------------------------------------------------------------------------
def test_fsinfo_and_fsstat(server, nfs):
    info = nfs.fs_info()
    assert info.max_read >= 32768 and info.max_write >= 32768
    assert info.preferred_read <= info.max_read and info.preferred_write <= info.max_write
    assert info.max_file_size >= 1 << 40
    assert info.time_delta_ns == 1
    assert info.supports_links and info.supports_symlinks and info.can_set_time
    assert nfs.io_limits.max_read == info.max_read
    st = nfs.fs_stat()
    v = os.statvfs(server.export)
    assert st.total_bytes == v.f_blocks * v.f_frsize
    assert st.total_files == v.f_files
    assert st.available_bytes <= st.free_bytes <= st.total_bytes
    assert abs(st.free_bytes - v.f_bfree * v.f_frsize) < 1 << 30  # others use the disk too


# -- CREATE, WRITE, COMMIT, READ, MKDIR, GETATTR, LOOKUP --------------------------------------
def test_write_through_nfs_lands_on_disk(server, nfs):
    nfs.mkdir("docs", 0o750)
    st = (server.export / "docs").stat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    small = b"hello, world\n"
    big = rand(5 * MiB + 12345, 1)  # several concurrent 1 MiB UNSTABLE WRITEs, then COMMIT
    with nfs.open("docs/small.txt", "wb") as f:
        assert f.write(small) == len(small)
    with nfs.open("docs/big.bin", "wb") as f:
        assert f.write(big) == len(big)
    assert (server.export / "docs/small.txt").read_bytes() == small
    on_disk = (server.export / "docs/big.bin").read_bytes()
    assert len(on_disk) == len(big) and sha(on_disk) == sha(big)
    for name in ("docs", "docs/small.txt", "docs/big.bin"):
        assert_info_matches(nfs.stat(name), os.lstat(server.export / name))
    with nfs.open("docs/big.bin", "rb") as f:
        assert sha(f.read()) == sha(big)
        assert f.read_at(3 * MiB - 7, 100) == big[3 * MiB - 7:3 * MiB + 93]
        assert f.read_at(len(big) - 10, 100) == big[-10:]  # short read at EOF
        assert f.read_at(len(big) + 10, 100) == b""
    # Rewrite in place and append: the bytes on disk follow.
    with nfs.open("docs/small.txt", "r+b") as f:
        f.write_at(b"HELLO", 0)
    with nfs.open("docs/small.txt", "ab") as f:
        f.write(b"more\n")
    assert (server.export / "docs/small.txt").read_bytes() == b"HELLO, world\nmore\n"
    # "wb" on an existing file truncates it (CREATE UNCHECKED + SETATTR size=0).
    with nfs.open("docs/small.txt", "wb") as f:
        f.write(b"x")
    assert (server.export / "docs/small.txt").read_bytes() == b"x"


def test_files_made_on_host_are_seen_through_nfs(server, nfs):
    root = server.export
    data = rand(2 * MiB + 3, 2)
    (root / "host").mkdir(mode=0o711)
    os.chmod(root / "host", 0o711)
    (root / "host/data.bin").write_bytes(data)
    os.chmod(root / "host/data.bin", 0o604)
    (root / "host/empty").touch()
    os.link(root / "host/data.bin", root / "host/hard")
    os.symlink("data.bin", root / "host/soft")
    os.symlink("/etc/../nowhere/at all", root / "host/dangling")
    os.chown(root / "host/empty", 4321, 8765)
    os.utime(root / "host/empty", ns=(1_000_000_001, 2_000_000_002))

    assert sorted(nfs.listdir("host")) == sorted(os.listdir(root / "host"))
    for name in os.listdir(root / "host"):
        assert_info_matches(nfs.stat(f"host/{name}"), os.lstat(root / "host" / name))
    assert nfs.stat("host/data.bin").nlink == 2
    assert nfs.stat("host/hard").fileid == nfs.stat("host/data.bin").fileid
    e = nfs.stat("host/empty")
    assert (e.uid, e.gid, e.atime, e.mtime) == (4321, 8765, 1_000_000_001, 2_000_000_002)
    assert nfs.readlink("host/soft") == "data.bin"
    assert nfs.readlink("host/dangling") == "/etc/../nowhere/at all"
    with nfs.open("host/data.bin", "rb") as f:
        assert f.read() == data
    with nfs.open("host/hard", "rb") as f:
        assert f.read_at(MiB, 10) == data[MiB:MiB + 10]
    # READDIRPLUS attributes and handles agree with the host as well.
    entries = {e.name: e for e in nfs.scandir("host") if e.name not in (".", "..")}
    assert set(entries) == set(os.listdir(root / "host"))
    for name, entry in entries.items():
        assert_info_matches(entry.info, os.lstat(root / "host" / name))
        assert entry.fh
    # A change on the host is seen at once (no stale attribute cache in the server).
    with open(root / "host/data.bin", "ab") as f:
        f.write(b"tail")
    assert nfs.stat("host/data.bin").size == len(data) + 4
    with nfs.open("host/data.bin", "rb") as f:
        assert f.read_at(len(data), 10) == b"tail"


# -- SETATTR --------------------------------------------------------------------------------------
def test_setattr_chmod_truncate_utimes_chown(server, nfs):
    p = server.export / "f"
    p.write_bytes(b"0123456789")
    nfs.chmod("f", 0o640)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    nfs.chmod("f", 0o4755)
    assert stat.S_IMODE(p.stat().st_mode) == 0o4755
    assert nfs.stat("f").mode & 0o7777 == 0o4755
    nfs.truncate("f", 4)
    assert p.read_bytes() == b"0123"
    nfs.truncate("f", 8)
    assert p.read_bytes() == b"0123\0\0\0\0"
    with nfs.open("f", "r+b") as f:
        assert f.truncate(2) == 2
    assert p.read_bytes() == b"01"
    atime, mtime = 1_234_567_890_123_456_789, 1_300_000_000_000_000_001
    nfs.utime("f", ns=(atime, mtime))
    st = p.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    info = nfs.stat("f")
    assert (info.atime, info.mtime) == (atime, mtime)
    nfs.chown("f", 1234, 5678)
    st = p.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    nfs.chown("f", -1, 42)
    assert (p.stat().st_uid, p.stat().st_gid) == (1234, 42)
    # Directories and symbolic links take attributes too.
    (server.export / "dir").mkdir()
    nfs.chmod("dir", 0o1777)
    assert stat.S_IMODE((server.export / "dir").stat().st_mode) == 0o1777
    nfs.symlink("f", "link")
    nfs.chown("link", 77, 88)
    lst = os.lstat(server.export / "link")
    assert (lst.st_uid, lst.st_gid) == (77, 88)
    assert (p.stat().st_uid, p.stat().st_gid) == (1234, 42)  # not followed
    nfs.utime("link", ns=(5_000_000_000, 6_000_000_000))
    lst = os.lstat(server.export / "link")
    assert (lst.st_atime_ns, lst.st_mtime_ns) == (5_000_000_000, 6_000_000_000)
    assert p.stat().st_mtime_ns == mtime  # not followed


def test_new_objects_keep_the_requested_mode(server, nfs):
    """The server's own umask must not reach the modes clients ask for (knfsd: umask 0)."""
    nfs.mkdir("open", 0o777)
    assert stat.S_IMODE((server.export / "open").stat().st_mode) == 0o777
    nfs.mkdir("open/deep/er", 0o775, parents=True)
    assert stat.S_IMODE((server.export / "open/deep/er").stat().st_mode) == 0o775
    with nfs.open("open/file", "wb") as f:
        f.write(b"x")
    assert stat.S_IMODE((server.export / "open/file").stat().st_mode) == nfs.stat("open/file").mode & 0o7777


def test_identity_from_url_owns_new_objects(server, nfs):
    shared = server.export / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "secret").write_bytes(b"s")
    os.chmod(shared / "secret", 0o600)
    with connect(server, uid=1234, gid=5678) as user:
        with user.open("shared/mine", "wb") as f:
            f.write(b"mine")
        user.mkdir("shared/mydir")
        user.symlink("mine", "shared/mylink")
        for name in ("mine", "mydir", "mylink"):
            st = os.lstat(shared / name)
            assert (st.st_uid, st.st_gid) == (1234, 5678), name
        assert user.access("shared/mine", os.R_OK | os.W_OK)
        assert not user.access("shared/mine", os.X_OK)
        assert not user.access("shared/secret", os.R_OK)
        assert user.access("shared", os.R_OK | os.W_OK | os.X_OK)
    # root may read anything but execute only what has an x bit.
    assert nfs.access("shared/secret", os.R_OK | os.W_OK)
    assert not nfs.access("shared/secret", os.X_OK)
    os.chmod(shared / "secret", 0o700)
    assert nfs.access("shared/secret", os.X_OK)


# -- SYMLINK, READLINK, LINK, RENAME, REMOVE, RMDIR ---------------------------------------------
def test_symlink_and_readlink(server, nfs):
    nfs.mkdir("d")
    targets = {"rel": "../d/x", "abs": "/etc/passwd", "odd": "a b/ç/\u00e9\u00e8/.."}
    for name, target in targets.items():
        nfs.symlink(target, f"d/{name}")
        assert os.readlink(server.export / "d" / name) == target
        assert nfs.readlink(f"d/{name}") == target
        info = nfs.stat(f"d/{name}")
        assert info.type == FileType.SYMLINK and info.size == len(target.encode())
        assert_info_matches(info, os.lstat(server.export / "d" / name))


def test_setattr_on_symlinks_after_they_move(server, nfs):
    """SETATTR on a symlink cannot go through /proc/self/fd: the server must find its
    current name, whether it was renamed through NFS, on the host, or is a second hard link."""
    ex = server.export
    nfs.mkdir("d")
    nfs.mkdir("e")
    nfs.symlink("target", "d/l")
    nfs.chown("d/l", 1, 1)  # the server now holds the link open under d/l
    nfs.rename("d/l", "e/l2")
    nfs.chown("e/l2", 5, 6)
    nfs.utime("e/l2", ns=(1_000_000_000, 2_000_000_000))
    st = os.lstat(ex / "e/l2")
    assert (st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns) == (5, 6, 1_000_000_000, 2_000_000_000)

    nfs.symlink("t2", "s")
    nfs.chown("s", 1, 1)
    os.rename(ex / "s", ex / "e/s-moved-on-host")  # behind the server's back
    nfs.chown("e/s-moved-on-host", 7, 8)
    assert (os.lstat(ex / "e/s-moved-on-host").st_uid, os.lstat(ex / "e/s-moved-on-host").st_gid) == (7, 8)

    nfs.symlink("t3", "h1")
    nfs.chown("h1", 1, 1)
    nfs.link("h1", "h2")
    nfs.remove("h1")
    nfs.chown("h2", 9, 10)
    nfs.utime("h2", ns=(3_000_000_000, 4_000_000_000))
    st = os.lstat(ex / "h2")
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (9, 10, 4_000_000_000)
    assert nfs.readlink("h2") == "t3"


def test_link_rename_remove_rmdir(server, nfs):
    root = server.export
    nfs.mkdir("a")
    nfs.mkdir("b")
    with nfs.open("a/f", "wb") as f:
        f.write(b"payload")
    nfs.link("a/f", "b/g")
    assert os.stat(root / "a/f").st_ino == os.stat(root / "b/g").st_ino
    assert os.stat(root / "a/f").st_nlink == 2
    assert nfs.stat("a/f").nlink == 2 and nfs.stat("b/g").nlink == 2
    nfs.rename("a/f", "b/f2")
    assert not (root / "a/f").exists() and (root / "b/f2").read_bytes() == b"payload"
    nfs.rename("b", "a/b")  # a directory into another
    assert sorted(os.listdir(root / "a/b")) == ["f2", "g"]
    # Rename over an existing file replaces it.
    (root / "a/victim").write_bytes(b"old")
    nfs.rename("a/b/g", "a/victim")
    assert (root / "a/victim").read_bytes() == b"payload"
    assert os.stat(root / "a/b/f2").st_nlink == 2
    nfs.remove("a/victim")
    assert not (root / "a/victim").exists()
    assert os.stat(root / "a/b/f2").st_nlink == 1 and nfs.stat("a/b/f2").nlink == 1
    nfs.remove("a/b/f2")
    nfs.rmdir("a/b")
    nfs.rmdir("a")
    assert os.listdir(root) == []
    assert nfs.listdir(".") in ([], [".", ".."], ["..", "."])
    nfs.remove("gone", missing_ok=True)


# -- READDIRPLUS ------------------------------------------------------------------------------------
def test_readdirplus_pages_cover_every_entry_once(server):
    d = server.export / "many"
    d.mkdir()
    names = {f"entry-{i:04d}-{'x' * (i % 40)}" for i in range(700)}
    for n in names:
        (d / n).write_bytes(n.encode())
    with Client.connect(server.url(), readdir_buffer=(1024, 4096), connect_timeout=10,
                        operation_timeout=60) as small:
        seen: list[str] = []
        pages = 0
        position = DirectoryCookie()
        cookies: set[int] = set()
        while True:
            page = small.scandir_page("many", position)
            pages += 1
            for e in page.entries:
                if e.name in (".", ".."):
                    continue
                seen.append(e.name)
                st = os.lstat(d / e.name)
                assert e.info.fileid == st.st_ino and e.info.size == st.st_size
            if page.eof:
                break
            assert page.next.cookie not in cookies, "cookie repeated"
            cookies.add(page.next.cookie)
            position = page.next
        assert pages > 5
        assert len(seen) == len(set(seen)) and set(seen) == names
        assert set(small.listdir("many")) - {".", ".."} == names


def test_readdirplus_paging_while_the_directory_changes(server):
    """Entries present for the whole listing appear exactly once, whatever is added or
    removed between pages (cookies are stable)."""
    d = server.export / "busy"
    d.mkdir()
    stable = {f"stable-{i:03d}" for i in range(300)}
    doomed = [f"doomed-{i:03d}" for i in range(300)]
    for n in stable | set(doomed):
        (d / n).touch()
    with Client.connect(server.url(), readdir_buffer=(1024, 4096), connect_timeout=10,
                        operation_timeout=60) as small:
        seen: list[str] = []
        position = DirectoryCookie()
        page_no = 0
        while True:
            page = small.scandir_page("busy", position)
            seen.extend(e.name for e in page.entries if e.name not in (".", ".."))
            if page.eof:
                break
            position = page.next
            page_no += 1
            # Between pages: remove some, add some, on the host and through NFS.
            for n in doomed[page_no * 10:page_no * 10 + 10]:
                (d / n).unlink(missing_ok=True)
            (d / f"added-host-{page_no}").touch()
            with small.open(f"busy/added-nfs-{page_no}", "wb"):
                pass
        assert page_no > 5
    counts = {n: seen.count(n) for n in set(seen)}
    assert all(c == 1 for c in counts.values()), {n: c for n, c in counts.items() if c > 1}
    assert stable <= set(seen), sorted(stable - set(seen))[:5]


# -- READ / WRITE past 4 GiB ----------------------------------------------------------------------------
def test_sparse_write_and_read_beyond_4gib(server, nfs):
    p = server.export / "sparse"
    far = 5 * GiB + 12345
    tail = rand(200_000, 3)
    across = rand(8192, 4)
    with nfs.open("sparse", "w+b") as f:
        assert f.write_at(tail, far) == len(tail)
        assert f.write_at(across, (1 << 32) - 4096) == len(across)  # straddles 2**32
        assert f.read_at(far, len(tail)) == tail
        assert f.read_at((1 << 32) - 4096, len(across)) == across
        assert f.read_at(3 * GiB, 4096) == bytes(4096)  # a hole reads as zeros
        assert f.read_at(far + len(tail) - 5, 100) == tail[-5:]
    st = p.stat()
    assert st.st_size == far + len(tail)
    assert st.st_blocks * 512 < 16 * MiB, "file should stay sparse"
    info = nfs.stat("sparse")
    assert info.size == far + len(tail) and info.used == st.st_blocks * 512
    with open(p, "rb") as f:
        f.seek(far)
        assert f.read() == tail
        f.seek((1 << 32) - 4096)
        assert f.read(len(across)) == across
    # And the other way: a far write on the host, read through NFS.
    with open(p, "r+b") as f:
        f.seek(7 * GiB)
        f.write(b"host wrote this")
    with nfs.open("sparse", "rb") as f:
        assert f.read_at(7 * GiB, 100) == b"host wrote this"
    nfs.truncate("sparse", 6 * GiB)
    assert p.stat().st_size == 6 * GiB


# -- errors -------------------------------------------------------------------------------------------
def test_errors_map_to_nfs_rs_exceptions(server, nfs):
    root = server.export
    (root / "dir").mkdir()
    (root / "dir/child").write_bytes(b"c")
    (root / "file").write_bytes(b"keep")

    def raises(exc_type, code_name, fn, *args, **kw):
        with pytest.raises(exc_type) as info:
            fn(*args, **kw)
        assert info.value.code_name == code_name, (fn, args, info.value)
        return info.value

    # NOENT
    raises(NfsNotFoundError, "NFS3ERR_NOENT", nfs.stat, "missing")
    raises(NfsNotFoundError, "NFS3ERR_NOENT", nfs.open, "missing", "rb")
    raises(NfsNotFoundError, "NFS3ERR_NOENT", nfs.remove, "missing")
    raises(NfsNotFoundError, "NFS3ERR_NOENT", nfs.rmdir, "missing")
    raises(NfsNotFoundError, "NFS3ERR_NOENT", nfs.rename, "missing", "other")
    assert not nfs.exists("missing") and nfs.exists("file")
    # EXIST
    raises(NfsAlreadyExistsError, "NFS3ERR_EXIST", nfs.mkdir, "dir")
    raises(NfsAlreadyExistsError, "NFS3ERR_EXIST", nfs.mkdir, "file")
    raises(NfsAlreadyExistsError, "NFS3ERR_EXIST", nfs.symlink, "x", "file")
    raises(NfsAlreadyExistsError, "NFS3ERR_EXIST", nfs.link, "dir/child", "file")
    # NOTEMPTY
    e = raises(NfsOSError, "NFS3ERR_NOTEMPTY", nfs.rmdir, "dir")
    assert e.errno == errno.ENOTEMPTY
    # NOTDIR
    raises(NfsNotADirectoryError, "NFS3ERR_NOTDIR", nfs.stat, "file/x")
    raises(NfsNotADirectoryError, "NFS3ERR_NOTDIR", nfs.listdir, "file")
    raises(NfsNotADirectoryError, "NFS3ERR_NOTDIR", nfs.rmdir, "file")
    raises(NfsNotADirectoryError, "NFS3ERR_NOTDIR", nfs.rename, "dir", "file")
    # ISDIR
    raises(NfsIsADirectoryError, "NFS3ERR_ISDIR", nfs.remove, "dir")
    raises(NfsIsADirectoryError, "NFS3ERR_ISDIR", nfs.rename, "file", "dir")
    raises(NfsIsADirectoryError, "NFS3ERR_ISDIR", nfs.truncate, "dir", 0)
    raises(NfsIsADirectoryError, "NFS3ERR_ISDIR", nfs.open, "dir", "wb")
    with nfs.open("dir", "rb") as f:  # nfs-rs lets it open; the READ must fail
        raises(NfsIsADirectoryError, "NFS3ERR_ISDIR", f.read, 10)
    # INVAL: READLINK of something that is not a symbolic link
    raises(NfsError, "NFS3ERR_INVAL", nfs.readlink, "file")
    # Nothing was harmed on the way.
    assert (root / "file").read_bytes() == b"keep"
    assert os.listdir(root / "dir") == ["child"]


# -- concurrency -------------------------------------------------------------------------------------
def test_async_client_concurrent_files(server):
    blobs = {f"c{i}": rand(300_000 + i * 1000, 10 + i) for i in range(12)}

    async def main() -> None:
        async with await nfs_rs.AsyncClient.connect(server.url(), connect_timeout=10,
                                                     operation_timeout=60) as client:
            async def put(name: str, data: bytes) -> None:
                async with await client.open(name, "wb") as f:
                    await f.write(data)

            async def get(name: str) -> bytes:
                async with await client.open(name, "rb") as f:
                    return await f.read()

            await asyncio.gather(*(put(n, d) for n, d in blobs.items()))
            back = await asyncio.gather(*(get(n) for n in blobs))
            assert [sha(b) for b in back] == [sha(d) for d in blobs.values()]

    asyncio.run(main())
    for name, data in blobs.items():
        assert (server.export / name).read_bytes() == data


# -- what nfs-rs cannot issue: MKNOD, READDIR, PATHCONF, CREATE GUARDED/EXCLUSIVE ----------------------
def _sattr(mode=None):
    return nfs3.sattr3.cls(mode, None, None, None, (0, None), (0, None))


def _lookup(rpc, dirfh: bytes, name: bytes) -> bytes:
    status, ok = rpc.nfs(3, nfs3.LOOKUP3args.cls(nfs3.diropargs3.cls(fh(dirfh), name)))
    assert status == nfs3.NFS3_OK, nfsstat3.values(status).name
    return ok.object.data


def test_mknod_seen_by_nfs_rs_and_host(server, rpc, nfs):
    root = rpc.mount(server.export_b)
    where = lambda name: nfs3.diropargs3.cls(fh(root), name)  # noqa: E731
    status, ok = rpc.nfs(11, nfs3.MKNOD3args.cls(where(b"fifo"), (nfs3.ftype3.NF3FIFO, _sattr(0o620))))
    assert status == nfs3.NFS3_OK
    st = os.lstat(server.export / "fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620
    assert ok.obj_attributes.fileid == st.st_ino
    status, ok = rpc.nfs(11, nfs3.MKNOD3args.cls(where(b"sock"), (nfs3.ftype3.NF3SOCK, _sattr(0o600))))
    assert status == nfs3.NFS3_OK
    assert stat.S_ISSOCK(os.lstat(server.export / "sock").st_mode)
    if os.geteuid() == 0:
        dev = nfs3.devicedata3.cls(_sattr(0o640), nfs3.specdata3.cls(1, 3))  # like /dev/null
        status, ok = rpc.nfs(11, nfs3.MKNOD3args.cls(where(b"null"), (nfs3.ftype3.NF3CHR, dev)))
        assert status == nfs3.NFS3_OK
        st = os.lstat(server.export / "null")
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
        assert (ok.obj_attributes.rdev.specdata1, ok.obj_attributes.rdev.specdata2) == (1, 3)
        assert nfs.stat("null").type == FileType.CHARACTER_DEVICE
    status, _ = rpc.nfs(11, nfs3.MKNOD3args.cls(where(b"fifo"), (nfs3.ftype3.NF3FIFO, _sattr(0o600))))
    assert status == nfsstat3.NFS3ERR_EXIST
    status, _ = rpc.nfs(11, nfs3.MKNOD3args.cls(where(b"reg"), (nfs3.ftype3.NF3REG, None)))
    assert status == nfsstat3.NFS3ERR_BADTYPE
    assert nfs.stat("fifo").type == FileType.FIFO
    assert nfs.stat("sock").type == FileType.SOCKET
    assert_info_matches(nfs.stat("fifo"), os.lstat(server.export / "fifo"))


def test_readdir_and_pathconf(server, rpc, nfs):
    for i in range(50):
        (server.export / f"n{i}").write_bytes(b"")
    (server.export / "sub").mkdir()
    root = rpc.mount(server.export_b)
    names, cookie, verf = [], 0, b"\0" * 8
    for _ in range(100):
        status, ok = rpc.nfs(16, nfs3.READDIR3args.cls(fh(root), cookie, verf, 512))
        assert status == nfs3.NFS3_OK
        for e in ok.reply.entries:
            names.append(e.name)
            if e.name not in (b".", b".."):
                assert e.fileid == os.lstat(server.export / os.fsdecode(e.name)).st_ino
            cookie = e.cookie
        verf = ok.cookieverf
        if ok.reply.eof:
            break
    assert sorted(names) == sorted([b".", b".."] + [os.fsencode(n) for n in os.listdir(server.export)])
    assert {os.fsencode(n) for n in nfs.listdir(".")} - {b".", b".."} == set(names) - {b".", b".."}
    status, ok = rpc.nfs(20, nfs3.PATHCONF3args.cls(fh(root)))
    assert status == nfs3.NFS3_OK
    assert ok.name_max == os.pathconf(server.export, "PC_NAME_MAX")
    assert ok.linkmax >= 1 and ok.no_trunc and ok.case_preserving and not ok.case_insensitive
    assert ok.obj_attributes.fileid == server.export.stat().st_ino


def test_guarded_and_exclusive_create(server, rpc, nfs):
    (server.export / "existing").write_bytes(b"precious")
    ino = (server.export / "existing").stat().st_ino
    root = rpc.mount(server.export_b)
    where = lambda name: nfs3.diropargs3.cls(fh(root), name)  # noqa: E731
    guarded = (nfs3.createmode3.GUARDED, _sattr(0o600))
    status, _ = rpc.nfs(8, nfs3.CREATE3args.cls(where(b"existing"), guarded))
    assert status == nfsstat3.NFS3ERR_EXIST
    status, ok = rpc.nfs(8, nfs3.CREATE3args.cls(where(b"fresh"), guarded))
    assert status == nfs3.NFS3_OK and stat.S_IMODE((server.export / "fresh").stat().st_mode) == 0o600
    verf1, verf2 = b"verifier", b"another!"
    status, _ = rpc.nfs(8, nfs3.CREATE3args.cls(where(b"existing"), (nfs3.createmode3.EXCLUSIVE, verf1)))
    assert status == nfsstat3.NFS3ERR_EXIST
    status, first = rpc.nfs(8, nfs3.CREATE3args.cls(where(b"excl"), (nfs3.createmode3.EXCLUSIVE, verf1)))
    assert status == nfs3.NFS3_OK and (server.export / "excl").stat().st_size == 0
    # A retransmission (same verifier) succeeds with the same object; another client's fails.
    status, again = rpc.nfs(8, nfs3.CREATE3args.cls(where(b"excl"), (nfs3.createmode3.EXCLUSIVE, verf1)))
    assert status == nfs3.NFS3_OK and again.obj.data == first.obj.data
    status, _ = rpc.nfs(8, nfs3.CREATE3args.cls(where(b"excl"), (nfs3.createmode3.EXCLUSIVE, verf2)))
    assert status == nfsstat3.NFS3ERR_EXIST
    # The client then sets the attributes with SETATTR, as RFC 1813 says.
    status, _ = rpc.nfs(2, nfs3.SETATTR3args.cls(first.obj, _sattr(0o640), None))
    assert status == nfs3.NFS3_OK
    assert stat.S_IMODE((server.export / "excl").stat().st_mode) == 0o640
    with nfs.open("excl", "r+b") as f:
        f.write(b"written by nfs-rs")
    assert (server.export / "excl").read_bytes() == b"written by nfs-rs"
    assert (server.export / "existing").read_bytes() == b"precious"
    assert (server.export / "existing").stat().st_ino == ino
    assert _lookup(rpc, root, b"excl") == first.obj.data


# -- all of the above, seen from the server's trace ---------------------------------------------------
_TRACE_LINE = re.compile(r"NFS3\.(\w+) .* -> (\w+) [\d.]+ms")
NFS_RS_PROCEDURES = {"GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ", "WRITE",
                     "CREATE", "MKDIR", "SYMLINK", "REMOVE", "RMDIR", "RENAME", "LINK",
                     "READDIRPLUS", "FSSTAT", "FSINFO", "COMMIT"}


def test_every_procedure_nfs_rs_issues_is_served(server):
    server.stop()
    server.env = {"PYSFSD_TRACE": "1"}
    server.start()
    try:
        with connect(server) as c:
            c.fs_info()
            c.fs_stat()
            c.mkdir("t", 0o755)
            with c.open("t/f", "wb") as f:
                f.write(rand(3 * MiB, 5))
            with c.open("t/f", "rb") as f:
                assert len(f.read()) == 3 * MiB
            c.stat("t/f")
            c.access("t/f", os.R_OK)
            c.chmod("t/f", 0o600)
            c.truncate("t/f", 10)
            c.utime("t/f", ns=(1, 2))
            c.symlink("f", "t/l")
            c.readlink("t/l")
            c.link("t/f", "t/h")
            c.rename("t/h", "t/h2")
            c.listdir("t")
            c.remove("t/h2")
            c.remove("t/l")
            c.remove("t/f")
            c.rmdir("t")
    finally:
        lines = server.stop().splitlines()
    calls = [m.groups() for m in map(_TRACE_LINE.search, lines) if m]
    seen = {proc for proc, _ in calls}
    missing = NFS_RS_PROCEDURES - seen
    assert not missing, f"nfs-rs issued no {sorted(missing)}; saw {sorted(seen)}"
    print(f"\nnfs-rs issued: {sorted(seen)}; not issued: "
          f"{sorted(set(p.name for p in nfs3.NFS3.procedures.values()) - seen - {'NULL'})}")
    failures = [(p, s) for p, s in calls if s != "NFS3_OK" and not (p == "LOOKUP" and s == "NFS3ERR_NOENT")]
    assert not failures, failures
    assert not any("SYSTEM_ERR" in ln or "Traceback" in ln for ln in lines), "\n".join(lines)
    # WRITEs were UNSTABLE and a COMMIT made them durable.
    assert any(re.search(r"NFS3\.WRITE .*stable=0 .*-> NFS3_OK", ln) for ln in lines)
    assert any("NFS3.COMMIT" in ln for ln in lines)
