#!/usr/bin/env bash
# The project's test command (README.rst and .ci/run call this).
# Installs what the tests need on a fresh Debian machine, then runs the whole suite,
# including the Linux-kernel-client test in a qemu VM.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and the VM: libnfs-utils (nfs-ls, nfs-cp, nfs-cat), nfs-common and rpcbind
# (rpcinfo, showmount), qemu with Debian's cloud kernel, busybox and cpio for its initramfs;
# libmagic1 for the index's content types (python-magic).  The VM lock test copies nfs-common's
# rpc.statd and mount.nfs, rpcbind, util-linux's flock and sqlite3 into the guest, and builds
# a static fcntl_lock helper with gcc (libc6-dev has the static libc).
DEB_PACKAGES=(libnfs-utils nfs-common rpcbind qemu-system-x86 linux-image-cloud-amd64
              busybox-static cpio kmod libmagic1 util-linux sqlite3 gcc libc6-dev)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'

export PYSFSD_REQUIRE_VM=1
exec .venv/bin/python -m pytest -q -rs "$@"
