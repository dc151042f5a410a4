#!/usr/bin/env bash
# Install the Debian packages needed to build and check certbot-dane's .deb,
# systemd units and man page: debhelper, dh-python, pybuild's pyproject
# plugin, dpkg-dev, systemd-analyze and man/groff.
#
# Idempotent: does nothing when every package is already installed. As root
# it installs the missing ones with apt-get; otherwise it prints the command
# to run and exits 1.
set -euo pipefail

PACKAGES=(
    build-essential
    debhelper
    dh-python
    dpkg-dev
    python3-all
    python3-setuptools
    python3-wheel
    pybuild-plugin-pyproject
    systemd
    man-db
    groff-base
)

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! is_installed "$pkg"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "packaging tools: all present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "packaging tools missing: ${missing[*]}" >&2
    echo "install them as root with:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y" \
        "--no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "packaging tools missing: ${missing[*]}; installing"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

still_missing=()
for pkg in "${missing[@]}"; do
    if ! is_installed "$pkg"; then
        still_missing+=("$pkg")
    fi
done
if [ "${#still_missing[@]}" -gt 0 ]; then
    echo "packaging tools still missing after install: ${still_missing[*]}" >&2
    exit 1
fi
echo "packaging tools: installed"
