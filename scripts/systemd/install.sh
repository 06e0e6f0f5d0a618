#!/usr/bin/env bash
# Install pysfsd as a systemd service, as root, from this checkout:
#   sudo bash scripts/systemd/install.sh
# Copies the checkout to /opt/pysfsd, installs it into /opt/pysfsd/.venv, puts the unit in
# /etc/systemd/system and an example configuration in /etc/pysfsd/pysfsd.toml (an existing
# one is kept).  Then: edit the exports in /etc/pysfsd/pysfsd.toml and
#   systemctl enable --now pysfsd;  journalctl -u pysfsd
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX=/opt/pysfsd
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run it as root" >&2; exit 1; }

DEB_PACKAGES=(python3 python3-venv libmagic1)  # what the server needs (docs/running.rst)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$PREFIX"
if [ "$(realpath .)" != "$(realpath "$PREFIX")" ]; then
    git ls-files -z | xargs -0 cp --parents -t "$PREFIX"  # the tracked files only, no .venv
fi
[ -x "$PREFIX/.venv/bin/python" ] || /usr/bin/python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/python" -m pip install -q "$PREFIX" >/dev/null
install -D -m 0644 scripts/systemd/pysfsd.service /etc/systemd/system/pysfsd.service
if [ ! -e /etc/pysfsd/pysfsd.toml ]; then
    install -D -m 0644 scripts/systemd/pysfsd.toml /etc/pysfsd/pysfsd.toml
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "installed $("$PREFIX/.venv/bin/pysfsd" --version) in $PREFIX; now edit /etc/pysfsd/pysfsd.toml, then:"
echo "  systemctl enable --now pysfsd && journalctl -u pysfsd"
