#!/usr/bin/env bash
# The project's test command (README.rst and .ci/run call this).
# Installs what the tests need on a fresh Debian machine, then runs the whole suite,
# including the Linux-kernel-client test in a qemu VM.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and the VM: libnfs-utils (nfs-ls, nfs-cp, nfs-cat), nfs-common and rpcbind
# (rpcinfo, showmount), qemu with Debian's cloud kernel, busybox and cpio for its initramfs;
# libmagic1 for the index's content types (python-magic); NFS-Ganesha (FSAL VFS), the server
# tests/server/test_ganesha_differential.py compares pysfsd with; faketime for the date check below.
# The VM lock test copies nfs-common's rpc.statd and mount.nfs, rpcbind, util-linux's flock and
# sqlite3 into the guest, and builds a static fcntl_lock helper with gcc (libc6-dev has the
# static libc).  The Ganesha tests run it in a private network namespace (util-linux's
# unshare, iproute2's ip).  tests/cluster/ starts a CephFS micro cluster (ceph, ceph-mds,
# ceph-fuse: about 57 MB to fetch, 264 MB installed), PostgreSQL and keepalived in network
# namespaces.
DEB_PACKAGES=(python3 python3-venv libnfs-utils nfs-common rpcbind qemu-system-x86 linux-image-cloud-amd64
              busybox-static cpio kmod libmagic1 nfs-ganesha nfs-ganesha-vfs faketime
              util-linux sqlite3 gcc libc6-dev iproute2 ceph ceph-mds ceph-fuse postgresql
              keepalived)
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

# The virtualenv: Debian's Python unless PYTHON= says otherwise (scripts/lib/python.sh says why)
. scripts/lib/python.sh
if [ ! -x .venv/bin/python ]; then
    "$(pick_python)" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test,cluster]'

# Lint and type checks (configured in pyproject.toml), on the whole tree, before the tests.
status=0
.venv/bin/python -m ruff check . || status=$?
.venv/bin/python -m mypy || status=$?

export PYSFSD_REQUIRE_VM=1
.venv/bin/python -m pytest -q -rs "$@" || status=$?

# No test may depend on the date or the time zone: the whole suite (no arguments) also runs
# the tests about dates far from today, in time zones 14 hours apart and off the hour,
# under libfaketime (see docs/testing.rst).  The monotonic clock stays faked (with it real,
# libfaketime 0.9.10 breaks clock_nanosleep, hence time.sleep).
DATE_TESTS=(tests/unit/test_index.py tests/server/test_transducers_builtin.py tests/unit/test_cli_index.py
            tests/server/test_index_changes.py)
if (($# == 0)); then
    for when in "2031-07-15 03:00:00|Pacific/Kiritimati" "2024-02-29 23:30:00|America/St_Johns"; do
        echo "date check: ${DATE_TESTS[*]} at ${when%|*} in ${when#*|}"
        TZ="${when#*|}" faketime "${when%|*}" .venv/bin/python -m pytest -q -p no:cacheprovider \
            "${DATE_TESTS[@]}" || status=$?
    done
fi
exit $status
