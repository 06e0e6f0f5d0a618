#!/usr/bin/env python3
"""Test an NFSv3 server on this host with the real Linux kernel client.

This machine's own kernel has no NFS client, so the client runs in a tiny
qemu VM (TCG): Debian's cloud kernel plus an initramfs holding busybox, the
NFS client modules, a generated source tree and a guest workload script.  The
guest mounts the export from 10.0.2.2 (qemu user networking's name for the
host's 127.0.0.1), runs the workload and sends its results over a second
serial port.  The host then checks, in the exported directory itself, what
the guest said it wrote (HOSTCHECK lines).

Host actions: the guest may ask the host to act mid-run by sending
``HOSTACTION ID VERB ARGS...`` on the results port; the host does it and
answers ``ACK ID OK`` or ``ACK ID FAIL why`` on a third serial port (a unix
socket chardev the host connects to; the guest keeps /dev/ttyS2 open from
/init on, so nothing is lost).  Verbs: ``write RELPATH TEXT`` and
``rm RELPATH`` are done by the runner in host_dir, behind the server's back;
any other verb (e.g. ``restart``) goes to the caller's host_actions callback.

Usage:
    python scripts/vm/vm_mount_test.py --port P --export /tmp/export \
        [--mountport M] [--workload scripts/vm/workloads/core.sh] \
        [--dd-mb 100] [--timeout 600]

From pytest, load this file by path and call run_vm_test().
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import lzma
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

VM_DIR = Path(__file__).resolve().parent
GUEST_DIR = VM_DIR / "guest"
DEFAULT_WORKLOAD = VM_DIR / "workloads" / "core.sh"
DEFAULT_WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pysfsd-vm"
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
# The NFSv3 client and the virtio NIC; dependencies are added by modprobe.
GUEST_MODULES = ("virtio_pci", "virtio_net", "sunrpc", "grace", "lockd",
                 "nfs_acl", "netfs", "fscache", "nfs", "nfsv3")
RESULT_RE = re.compile(r"^RESULT (PASS|FAIL)\b")
HOSTACTION_RE = re.compile(r"^HOSTACTION (\S+) (\S+) ?(.*)$")
ACK_CONNECT_S = 10.0
POWEROFF_GRACE_S = 30.0
CONSOLE_TAIL_LINES = 60


@dataclass(frozen=True)
class Kernel:
    """A kernel image and the release name that locates its modules."""

    image: Path
    release: str

    @property
    def modules_dir(self) -> Path:
        return Path("/lib/modules") / self.release


def _version_key(path: Path) -> list[int | str]:
    """Sort key that puts 6.1.0-56 after 6.1.0-9."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def find_kernel(image: Path | None = None) -> Kernel:
    """The given vmlinuz, else the newest Debian cloud kernel in /boot."""
    if image is None:
        candidates = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"), key=_version_key)
        if not candidates:
            raise FileNotFoundError("no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)")
        image = candidates[-1]
    release = image.name.removeprefix("vmlinuz-")
    return Kernel(image=image, release=release)


def missing_prerequisites(kernel_image: Path | None = None) -> list[str]:
    """What this machine lacks to run the VM test (empty when ready)."""
    missing = [f"{tool} not on PATH" for tool in (QEMU, "modprobe") if shutil.which(tool) is None]
    if not BUSYBOX.is_file():
        missing.append(f"{BUSYBOX} missing (apt-get install busybox-static)")
    try:
        kernel = find_kernel(kernel_image)
    except FileNotFoundError as exc:
        missing.append(str(exc))
    else:
        if not os.access(kernel.image, os.R_OK):
            missing.append(f"{kernel.image} not readable")
        if not kernel.modules_dir.is_dir():
            missing.append(f"{kernel.modules_dir} missing")
    return missing


def module_load_order(kernel: Kernel, extra: tuple[str, ...] = ()) -> list[Path]:
    """Module files for GUEST_MODULES (and ``extra``), dependencies first, built-ins left out."""
    order: list[Path] = []
    for name in (*GUEST_MODULES, *extra):
        out = subprocess.run(["modprobe", "-S", kernel.release, "--show-depends", name],
                             check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["insmod"] and Path(words[1]) not in order:
                order.append(Path(words[1]))
    return order


def read_module(path: Path) -> bytes:
    """A module's ELF bytes; compressed modules are unpacked here so that the
    guest's busybox insmod needs no decompressor."""
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return path.read_bytes()


def source_tree(blob: bytes) -> list[tuple[str, bytes | None]]:
    """The deterministic tree the guest copies in and compares (None marks a
    directory).  Mixes C and text files, awkward sizes around page and RPC
    boundaries, odd names, deep nesting, an empty directory and a binary."""
    rng = random.Random(20240521)
    words = ["alpha", "beta", "gamma", "delta", "inode", "cookie", "verifier", "stable",
             "commit", "lookup", "readdir", "handle", "export", "mount", "xdr", "rpc"]

    def c_file(name: str, functions: int) -> bytes:
        body = [f"/* {name}: generated for the pysfsd VM test */", "#include <stdio.h>", ""]
        for i in range(functions):
            a, b = rng.sample(words, 2)
            body += [f"static int {a}_{b}_{i}(int x)", "{",
                     f"    return x * {rng.randrange(1, 997)} + {rng.randrange(10**6)}; /* {b} */",
                     "}", ""]
        return "\n".join(body).encode()

    def text(lines: int) -> bytes:
        return "".join(" ".join(rng.choices(words, k=rng.randrange(1, 14))) + "\n"
                       for _ in range(lines)).encode()

    entries: list[tuple[str, bytes | None]] = [
        ("README.txt", text(40)),
        ("Makefile", b"all:\n\tcc -o demo lib/*.c\n"),
        ("lib", None), ("include", None), ("docs", None), ("docs/sub", None),
        ("sizes", None), ("odd names", None), ("empty", None), ("blob", None),
    ]
    entries += [(f"lib/unit_{i:02d}.c", c_file(f"unit_{i:02d}.c", rng.randrange(5, 200))) for i in range(20)]
    entries += [(f"include/unit_{i:02d}.h", text(rng.randrange(1, 60))) for i in range(10)]
    entries += [(f"docs/chapter_{i}.txt", text(rng.randrange(10, 400))) for i in range(10)]
    entries += [(f"docs/sub/note_{i}.txt", text(rng.randrange(1, 20))) for i in range(5)]
    for size in (0, 1, 511, 4095, 4096, 4097, 32768, 65537, 1048577):
        entries.append((f"sizes/size_{size}.bin", rng.randbytes(size)))
    deep = "deep"
    for part in "abcdef":
        entries.append((deep, None))
        deep += f"/{part}"
    entries += [(deep, None), (f"{deep}/leaf.txt", text(3))]
    entries += [("odd names/file with spaces.txt", text(2)),
                ("odd names/#hash+plus=equals,comma.txt", text(2)),
                ("odd names/.hidden", text(1)),
                ("odd names/" + "long" * 50 + ".txt", text(2)),
                ("blob/busybox.bin", blob)]
    return entries


class CpioNewc:
    """Minimal writer of the cpio 'newc' format the kernel unpacks as initramfs
    (no root needed for device nodes; every entry owned by root, mtime 0)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
        self._parts += [header, b"\0" * (-len(header) % 4), data, b"\0" * (-len(data) % 4)]

    def dir(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, 0o040000 | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, 0o020000 | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def _busybox_applets() -> list[str]:
    """Applet paths such as 'usr/bin/awk', from the static busybox itself."""
    out = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True).stdout
    return [line for line in out.split() if line and line != "bin/busybox"]


# Workloads with this line get Debian's NFS lock tools (nfs-common's rpc.statd, sm-notify
# and mount.nfs, rpcbind, util-linux's flock, sqlite3) with their shared libraries, and a
# static fcntl_lock helper compiled from guest/fcntl_lock.c.
DEBIAN_TOOLS_MARK = b"# vm: debian-tools"
DEBIAN_TOOLS = ("/usr/sbin/rpcbind", "/usr/sbin/rpcinfo", "/usr/sbin/rpc.statd", "/usr/sbin/sm-notify", "/sbin/mount.nfs",
                "/usr/bin/flock", "/usr/bin/sqlite3")
GUEST_ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n_rpc:x:100:65534::/run/rpcbind:/bin/false\n"
                  "statd:x:101:65534::/var/lib/nfs:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1 localhost\n10.0.2.15 vmguest\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}


def _needs_debian_tools(workload: Path) -> bool:
    return DEBIAN_TOOLS_MARK in workload.read_bytes()


# A workload line "# vm: helper NAME" ships guest/NAME.c, built static, as /usr/bin/NAME.
HELPER_MARK = re.compile(rb"^# vm: helper (\w+)$", re.MULTILINE)


def add_helpers(cpio: "CpioNewc", workload: Path, work_dir: Path) -> None:
    """The C helpers the workload asks for, compiled here: the guest has no compiler."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted({m.decode() for m in HELPER_MARK.findall(workload.read_bytes())}):
        binary = work_dir / f"{name}.{os.getpid()}.bin"
        subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(binary), str(GUEST_DIR / f"{name}.c")], check=True)
        cpio.file(f"usr/bin/{name}", binary.read_bytes(), 0o755)
        binary.unlink()


def _shared_libraries(binary: str) -> list[str]:
    """The ELF interpreter and libraries ``binary`` loads, from ldd."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        path = words[2] if "=>" in words and len(words) > 2 else words[0] if words else ""
        if path.startswith("/"):
            found.append(path)
    return found


def _add_file_with_parents(cpio: "CpioNewc", dirs: set[str], rel: str, data: bytes, perm: int) -> None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in dirs:
            dirs.add(d)
            cpio.dir(d)
    cpio.file(rel, data, perm)


def add_debian_tools(cpio: "CpioNewc", work_dir: Path) -> None:
    """Debian's lock tools at their own paths (overriding busybox applets of the same
    name), their libraries (resolved through symlinks, stored under the names the loader
    asks for), /etc files they read, and the fcntl_lock helper."""
    work_dir.mkdir(parents=True, exist_ok=True)
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib"}
    done: set[str] = set()
    for binary in DEBIAN_TOOLS:
        for path in [binary, *_shared_libraries(binary)]:
            if path in done:
                continue
            done.add(path)
            real = Path(path).resolve()
            _add_file_with_parents(cpio, dirs, path.lstrip("/"), real.read_bytes(), 0o755)
    helper = work_dir / "fcntl_lock"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(helper), str(GUEST_DIR / "fcntl_lock.c")], check=True)
    _add_file_with_parents(cpio, dirs, "usr/bin/fcntl_lock", helper.read_bytes(), 0o755)
    for rel in ("etc/netconfig", "etc/protocols", "etc/services"):
        if Path("/" + rel).exists():
            _add_file_with_parents(cpio, dirs, rel, Path("/" + rel).read_bytes(), 0o644)
    for rel, text in GUEST_ETC.items():
        _add_file_with_parents(cpio, dirs, rel, text.encode(), 0o644)
    cpio.symlink("etc/mtab", "/proc/self/mounts")
    for d in ("run", "var", "var/lib", "var/lib/nfs", "var/lib/nfs/sm", "var/lib/nfs/sm.bak"):
        if d not in dirs:
            dirs.add(d)
            cpio.dir(d)


def _cache_key(kernel: Kernel, modules: Iterable[Path], workload: Path) -> str:
    digest = hashlib.sha256()
    if _needs_debian_tools(workload):
        for tool in DEBIAN_TOOLS:
            st = Path(tool).stat()
            digest.update(f"{tool}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    for item in (kernel.release, kernel.image):
        digest.update(str(item).encode() + b"\0")
    for path in modules:
        st = path.stat()
        digest.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    for path in (BUSYBOX, Path(__file__).resolve(), *sorted(GUEST_DIR.iterdir()), workload):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def build_initramfs(kernel: Kernel, workload: Path, work_dir: Path) -> Path:
    """The initramfs for this kernel and workload, built once and cached in
    work_dir under a key over everything that goes into it."""
    # The lock workload also mounts with no options: mount.nfs tries NFSv4 first, for real.
    modules = module_load_order(kernel, ("nfsv4",) if _needs_debian_tools(workload) else ())
    target = work_dir / f"initramfs-{kernel.release}-{_cache_key(kernel, modules, workload)}.cpio.gz"
    if target.exists():
        return target
    cpio = CpioNewc()
    for name in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "mnt",
                 "lib", "lib/modules", "vm", "srcdata"):
        cpio.dir(name)
    cpio.dir("tmp", 0o1777)
    cpio.chardev("dev/console", 5, 1)  # the kernel opens it before devtmpfs exists
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in _busybox_applets():
        cpio.symlink(applet, "/bin/busybox")
    names = []
    for path in modules:
        name = path.name.split(".ko")[0] + ".ko"
        cpio.file(f"lib/modules/{name}", read_module(path))
        names.append(name)
    cpio.file("lib/modules/load.order", "".join(f"{n}\n" for n in names).encode())
    cpio.file("init", (GUEST_DIR / "init").read_bytes(), 0o755)
    cpio.file("vm/lib.sh", (GUEST_DIR / "lib.sh").read_bytes())
    cpio.file("vm/workload.sh", workload.read_bytes(), 0o755)
    if _needs_debian_tools(workload):
        add_debian_tools(cpio, work_dir)
    add_helpers(cpio, workload, work_dir)
    for rel, data in source_tree(BUSYBOX.read_bytes()):
        if data is None:
            cpio.dir(f"srcdata/{rel}")
        else:
            cpio.file(f"srcdata/{rel}", data)
    work_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    partial.replace(target)
    return target


def _inside(root: Path, rel: str) -> Path:
    """root/rel, refusing guest-supplied paths that would leave root."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise ValueError(f"path {rel!r} leaves the export")
    return root / rel


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tree_md5(root: Path) -> str:
    """Same digest as tree_md5 in guest/lib.sh: md5 over sorted
    'md5  ./path' lines of every regular file (symlinks not followed)."""
    files = sorted(b"./" + os.fsencode(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and not p.is_symlink())
    listing = b"".join(_md5(root / os.fsdecode(f[2:])).encode() + b"  " + f + b"\n" for f in files)
    return hashlib.md5(listing).hexdigest()


def check_host(hostchecks: Sequence[str], host_dir: Path) -> list[str]:
    """Verify HOSTCHECK lines against the exported directory on the host;
    returns one message per failed check."""
    failures = []
    for line in hostchecks:
        kind, rel, *args = line.split()[1:]
        try:
            path = _inside(host_dir, rel)
            want = args[0] if args else ""
            if kind == "absent":
                got = "present" if os.path.lexists(path) else ""
            elif kind == "md5":
                got = _md5(path)
            elif kind == "size":
                got = str(path.stat().st_size)
            elif kind == "symlink":
                got = os.readlink(path)
            elif kind == "nlink":
                got = str(path.stat().st_nlink)
            elif kind == "samefile":
                other = _inside(host_dir, want).stat()
                got = want if (other.st_dev, other.st_ino) == (path.stat().st_dev, path.stat().st_ino) else "other inode"
            elif kind == "mode":
                got = f"{path.stat().st_mode & 0o7777:o}"
            elif kind == "mtime":
                got = str(int(path.stat().st_mtime))
            elif kind == "count":
                got = str(len(os.listdir(path)))
            elif kind == "treemd5":
                got = _tree_md5(path)
            else:
                got = f"unknown check kind {kind!r}"
        except (OSError, ValueError) as exc:
            got = f"{type(exc).__name__}: {exc}"
        if got != want:
            failures.append(f"{line}: host has {got!r}")
    return failures


HostAction = Callable[[list[str]], "str | None"]


def _host_path(root: Path, rel: str) -> Path:
    """root/rel for a host action: like _inside, and the parent directory must
    exist and really lie inside root (no escape through a symlink)."""
    path = _inside(root, rel)
    if not Path(rel).parts:
        raise ValueError(f"path {rel!r} names no file")
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(path.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise ValueError(f"path {rel!r} leaves the export through a symlink")
    return path


def _action_write(host_dir: Path, args: list[str], text: str) -> str:
    """write RELPATH TEXT: create or overwrite RELPATH (in place, same inode)
    with TEXT and a newline; never follows a symlink at RELPATH."""
    path = _host_path(host_dir, args[0])
    data = (text + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return f"{len(data)} bytes"


def _action_rm(host_dir: Path, args: list[str]) -> str:
    """rm RELPATH: unlink a file or symlink (not a directory)."""
    os.unlink(_host_path(host_dir, args[0]))
    return "removed"


def do_host_action(line: str, host_dir: Path, callbacks: dict[str, HostAction]) -> tuple[str, str]:
    """Carry out one HOSTACTION line; returns (id, 'OK msg' or 'FAIL why')."""
    match = HOSTACTION_RE.match(line)
    if match is None:
        return "?", "FAIL malformed HOSTACTION line"
    ident, verb, rest = match.groups()
    args = rest.split()
    try:
        if verb == "write":
            if not args:
                raise ValueError("usage: write RELPATH TEXT")
            text = rest.split(" ", 1)[1] if " " in rest else ""
            msg = _action_write(host_dir, args, text)
        elif verb == "rm":
            if len(args) != 1:
                raise ValueError("usage: rm RELPATH")
            msg = _action_rm(host_dir, args)
        elif verb == "check":
            failures = check_host([f"HOSTCHECK {rest}"], host_dir)
            if failures:
                raise ValueError(failures[0])
            msg = "checked"
        elif verb in callbacks:
            msg = callbacks[verb](args) or ""
        else:
            raise ValueError(f"unknown host action {verb!r}")
    except Exception as exc:  # reported to the guest, which fails its step
        return ident, f"FAIL {type(exc).__name__}: {exc}".replace("\n", " ")
    return ident, f"OK {msg}".rstrip()


class AckChannel:
    """The host's end of the guest's third serial port: a unix socket that
    qemu listens on; connected on first use, written one line per answer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None

    def send(self, line: str) -> None:
        if self._sock is None:
            deadline = time.monotonic() + ACK_CONNECT_S
            while True:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self.path))
                    break
                except OSError:
                    sock.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            self._sock = sock
        self._sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class RunResult:
    """Outcome of one VM run; lines are (host seconds since qemu start, line)."""

    passed: bool
    reason: str
    elapsed: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    host_failures: list[str] = field(default_factory=list)
    console_log: Path | None = None

    def console_tail(self, count: int = CONSOLE_TAIL_LINES) -> str:
        if self.console_log is None or not self.console_log.exists():
            return "(no console log)"
        text = self.console_log.read_bytes().decode(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-count:])

    def summary(self) -> str:
        """Human-readable report; includes the console tail when failed."""
        out = [f"[{t:7.1f}s] {line}" for t, line in self.lines]
        out += [f"HOST CHECK FAILED {msg}" for msg in self.host_failures]
        out.append(f"{'PASS' if self.passed else 'FAIL'}: {self.reason} ({self.elapsed:.1f}s total)")
        if not self.passed:
            out += [f"--- console log tail ({self.console_log}) ---", self.console_tail()]
        return "\n".join(out)


def _guest_params(params: dict[str, str]) -> str:
    for key, value in params.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", key) or not value or re.search(r"[\s\"]", value):
            raise ValueError(f"guest parameter {key}={value!r}: need a word key and a value without spaces")
    return " ".join(f"vmtest.{key}={value}" for key, value in params.items())


def qemu_command(kernel: Kernel, initramfs: Path, log_dir: Path, params: dict[str, str],
                 ack_socket: Path | None = None,
                 udp_forwards: Iterable[int | tuple[int, int]] = ()) -> list[str]:
    """qemu under TCG (this host's /dev/kvm hangs a stock kernel), console on
    the first serial port, results on the second, host-action answers on the
    third (a unix socket qemu listens on), user networking only.  ``udp_forwards``:
    UDP ports of 127.0.0.1 forwarded to the guest, to the same port or as (host, guest)
    pairs (so a server can call the guest back, as lock servers do)."""
    forwards = [(f, f) if isinstance(f, int) else f for f in udp_forwards]
    ack = (["-chardev", f"socket,id=hostack,path={ack_socket},server=on,wait=off",
            "-serial", "chardev:hostack"] if ack_socket is not None else [])
    return [
        QEMU, "-machine", "pc,accel=tcg", "-cpu", "qemu64", "-smp", "1", "-m", "512",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel.image), "-initrd", str(initramfs),
        # no_timer_check: under TCG on a busy host the kernel's early check of the timer
        # interrupt can miss its window and panic ("IO-APIC + timer doesn't work")
        "-append", f"console=ttyS0 panic=-1 no_timer_check {_guest_params(params)}",
        "-serial", f"file:{log_dir / 'console.log'}",
        "-serial", f"file:{log_dir / 'results.log'}",
        *ack,
        "-netdev", "user,id=n0,ipv6=off" + "".join(f",hostfwd=udp:127.0.0.1:{h}-:{g}" for h, g in forwards),
        "-device", "virtio-net-pci,netdev=n0",
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_vm_test(
    port: int,
    export: str,
    *,
    mount_port: int | None = None,
    host_dir: Path | None = None,
    workload: Path = DEFAULT_WORKLOAD,
    dd_mb: int = 100,
    timeout: float = 600.0,
    work_dir: Path = DEFAULT_WORK_DIR,
    log_dir: Path | None = None,
    guest_env: dict[str, str] | None = None,
    kernel_image: Path | None = None,
    echo: Callable[[str], None] = print,
    host_actions: dict[str, HostAction] | None = None,
    udp_forwards: Iterable[int | tuple[int, int]] = (),
) -> RunResult:
    """Boot the VM against the NFS server on 127.0.0.1:port (MOUNT on
    mount_port, default the same), run the workload and check the host side
    in host_dir (default: export, which is then also a host path).
    echo gets each result line as it arrives.  host_actions maps extra
    HOSTACTION verbs (e.g. "restart") to callbacks taking the verb's
    arguments; a callback may return a short message, and an exception
    becomes a FAIL answer.  The time spent in host actions does not count
    against timeout.  udp_forwards: see qemu_command."""
    kernel = find_kernel(kernel_image)
    workload = Path(workload).resolve()
    initramfs = build_initramfs(kernel, workload, work_dir)
    if log_dir is None:
        (work_dir / "runs").mkdir(parents=True, exist_ok=True)
        log_dir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=work_dir / "runs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    results_log = log_dir / "results.log"
    results_log.write_bytes(b"")
    params = {"NFS_PORT": str(port), "MOUNT_PORT": str(mount_port or port), "EXPORT": export,
              "DD_MB": str(dd_mb), "WORKLOAD": workload.name, **(guest_env or {})}
    # unix socket paths are limited to ~107 bytes, so not inside log_dir
    sock_dir = Path(tempfile.mkdtemp(prefix="pysfsd-vm-"))
    ack = AckChannel(sock_dir / "ack.sock")
    cmd = qemu_command(kernel, initramfs, log_dir, params, ack.path, udp_forwards)
    echo(f"vm: {kernel.image.name}, initramfs {initramfs}, logs in {log_dir}")
    action_dir = Path(host_dir or export)

    lines: list[tuple[float, str]] = []
    verdict: str | None = None
    reason = ""
    start = time.monotonic()
    paused = 0.0  # seconds spent in host actions
    with (log_dir / "qemu.log").open("wb") as qemu_log, results_log.open("rb") as results:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT)
        pending = b""
        try:
            while True:
                exited = proc.poll() is not None
                pending += results.read()
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace").strip("\r\0 ")
                    if line:
                        lines.append((time.monotonic() - start, line))
                        echo(f"[{lines[-1][0]:7.1f}s] {line}")
                        match = RESULT_RE.match(line)
                        verdict = match.group(1) if match else verdict
                        reason = line if match else reason
                        if line.startswith("HOSTACTION "):
                            t0 = time.monotonic()
                            ident, answer = do_host_action(line, action_dir, host_actions or {})
                            paused += time.monotonic() - t0
                            lines.append((time.monotonic() - start, f"host: ACK {ident} {answer}"))
                            echo(f"[{lines[-1][0]:7.1f}s] {lines[-1][1]}")
                            try:
                                ack.send(f"ACK {ident} {answer}")
                            except OSError as exc:
                                echo(f"vm: cannot answer the guest: {exc}")
                if verdict is not None:
                    try:
                        proc.wait(timeout=POWEROFF_GRACE_S)
                    except subprocess.TimeoutExpired:
                        echo("vm: guest did not power off; killing qemu")
                    break
                if exited:
                    reason = f"qemu exited with status {proc.returncode} before a RESULT line"
                    break
                if time.monotonic() - start - paused > timeout:
                    reason = f"timeout after {timeout:.0f}s without a RESULT line"
                    break
                time.sleep(0.2)
        finally:
            _stop(proc)
            ack.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
    elapsed = time.monotonic() - start

    hostchecks = [line for _, line in lines if line.startswith("HOSTCHECK ")]
    host_failures = check_host(hostchecks, Path(host_dir or export)) if verdict == "PASS" else []
    passed = verdict == "PASS" and not host_failures
    if verdict == "PASS":
        reason = f"RESULT PASS, {len(hostchecks) - len(host_failures)}/{len(hostchecks)} host checks OK"
    return RunResult(passed, reason, elapsed, lines, host_failures, log_dir / "console.log")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="NFS port on 127.0.0.1")
    parser.add_argument("--mountport", type=int, help="MOUNT port (default: --port)")
    parser.add_argument("--export", required=True, help="export path the guest mounts")
    parser.add_argument("--host-dir", type=Path, help="exported directory on the host (default: --export)")
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD, help="guest script (busybox sh)")
    parser.add_argument("--dd-mb", type=int, default=100, help="size of the dd file in MiB")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for RESULT")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="initramfs cache and run logs")
    parser.add_argument("--log-dir", type=Path, help="where console.log and results.log go")
    parser.add_argument("--kernel", type=Path, help="vmlinuz (default: newest /boot/vmlinuz-*-cloud-amd64)")
    parser.add_argument("--guest-env", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="extra parameter, seen by the workload as $VM_KEY (repeatable)")
    args = parser.parse_args(argv)

    missing = missing_prerequisites(args.kernel)
    if missing:
        print("vm: cannot run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    result = run_vm_test(
        args.port, args.export, mount_port=args.mountport, host_dir=args.host_dir,
        workload=args.workload, dd_mb=args.dd_mb, timeout=args.timeout, work_dir=args.work_dir,
        log_dir=args.log_dir, guest_env=dict(args.guest_env), kernel_image=args.kernel,
        echo=lambda text: print(text, flush=True),
    )
    for msg in result.host_failures:
        print(f"HOST CHECK FAILED {msg}")
    print(f"{'PASS' if result.passed else 'FAIL'}: {result.reason} ({result.elapsed:.1f}s total)")
    if not result.passed:
        print(f"--- console log tail ({result.console_log}) ---\n{result.console_tail()}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
