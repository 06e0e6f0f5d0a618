#!/usr/bin/env bash
# The README's first command: install pysfsd into .venv and serve a default export.
#
#   bash scripts/quickstart.sh [PYSFSD OPTIONS]    install, then serve /tmp/export (port 2049)
#   bash scripts/quickstart.sh check [--port N] [--export DIR]
#                                                  from another terminal: does it answer?
#
# Works as root and as an ordinary user, with Debian's own Python (which refuses a bare
# `pip install .`: PEP 668, externally-managed-environment), so everything goes into a
# virtualenv in the checkout.  As root it installs the Debian packages it needs; as an
# ordinary user it names them and stops if they are missing.  EXPORT=DIR and PORT=N (or
# --export/--port among the options) change the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the server itself needs on Debian 12 / Ubuntu: Python 3.11+ with venv, libmagic
# (content types, through python-magic).  libnfs-utils gives nfs-ls/nfs-cp/nfs-cat, for the
# check.  (docs/running.rst, "Requirements", lists the same.)
DEB_PACKAGES=(python3 python3-venv libmagic1 libnfs-utils)
EXPORT=${EXPORT:-/tmp/export}
PORT=${PORT:-2049}
# shellcheck source=scripts/lib/python.sh
. scripts/lib/python.sh
say() { echo "quickstart: $*" >&2; }

run() {
    echo "\$ $*" >&2
    "$@"
}

expect() {  # expect TEXT COMMAND...: run it, show its output, which must hold TEXT
    local text=$1 out
    shift
    out=$("$@")
    echo "$out"
    grep -qF -- "$text" <<<"$out" || { say "FAILED: no '$text' in what $2 printed"; exit 1; }
}

url() {  # a libnfs URL for PATH inside the export
    echo "nfs://127.0.0.1${EXPORT}${1:+/$1}?version=3&nfsport=${PORT}&mountport=${PORT}"
}

check() {
    while (($#)); do
        case "$1" in
            --port) PORT=$2; shift 2 ;;
            --export) EXPORT=$2; shift 2 ;;
            *) say "unknown check option $1"; exit 2 ;;
        esac
    done
    local name
    name="hello-$(id -un)-$(date +%s).txt"  # nfs-cp never overwrites
    TMP=$(mktemp)
    trap 'rm -f "$TMP"' EXIT
    echo "hello from $(id -un)" >"$TMP"
    run nfs-ls "$(url)" >/dev/null
    run nfs-cp "$TMP" "$(url "$name")"
    expect "hello from $(id -un)" run nfs-cat "$(url "$name")"
    sleep 1  # the index takes in what was written within a second
    expect "$name" run nfs-ls "$(url "ext:/txt")"
    expect "$name" run .venv/bin/pysfsd query --export "$EXPORT" "ext:/txt"
    say "it answers: listed, wrote and read back $name, found it in the query directory ext:/txt"
}

if [ "${1:-}" = check ]; then
    shift
    check "$@"
    exit 0
fi

# 1. Debian packages
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        say "installing Debian packages: ${missing[*]}"
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "missing Debian packages: ${missing[*]}; as root: apt-get install ${missing[*]}"
        exit 1
    fi
fi

# 2. the virtualenv (the same one scripts/run-tests.sh uses), with Debian's Python unless
# PYTHON= names another (scripts/lib/python.sh says why)
PYTHON=$(pick_python)
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "$PYTHON is older than 3.11; give PYTHON=/path/to/python3.11 or newer"
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
say "installing pysfsd into .venv"
.venv/bin/python -m pip install -q -e . >/dev/null

# 3. the export: a new one is made like /tmp (1777, sticky), so that root on a client, who
# acts as nobody, and every other user may create files in it
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --export) EXPORT=${args[i + 1]} ;;
        --port) PORT=${args[i + 1]} ;;
    esac
done
if [ ! -e "$EXPORT" ]; then
    mkdir -p "$EXPORT"
    chmod 1777 "$EXPORT"
    say "created $EXPORT (mode 1777, like /tmp)"
fi
extra=()
[[ " ${args[*]-} " == *" --export "* ]] || extra+=(--export "$EXPORT")

# 4. the port: 2049 unless another server holds it (then a free one)
if [[ " ${args[*]-} " != *" --port "* ]]; then
    if ! .venv/bin/python - "$PORT" <<'EOF'
import socket, sys
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("0.0.0.0", int(sys.argv[1])))
        except OSError:
            sys.exit(1)
EOF
    then
        taken=$PORT
        PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])')
        say "port $taken is taken (another NFS server?): using $PORT"
    fi
    extra+=(--port "$PORT")
fi

say "serving $EXPORT on port $PORT; Ctrl-C stops it.  From another terminal, once it says 'index ready':"
say "  bash scripts/quickstart.sh check --port $PORT --export $EXPORT"
say "  mount -t nfs -o vers=3,nolock,port=$PORT,mountport=$PORT 127.0.0.1:$EXPORT /mnt   (as root)"
exec .venv/bin/pysfsd "${extra[@]}" "${args[@]}"
