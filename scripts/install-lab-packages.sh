#!/usr/bin/env bash
# Install the Debian packages the loopback test lab needs (BIND 9, Knot,
# PowerDNS with its SQLite backend, Unbound, Pebble, Postfix, dig/nsupdate,
# DNSSEC tools, ldns-dane, openssl), and Exim 4 unpacked privately (see below).
#
# Idempotent: does nothing when every tool is already there. The lab runs its
# own daemons on free loopback ports with its own config files, so the system
# daemons that a package install may start are stopped again afterwards; the
# system config files are never touched.
set -euo pipefail

PACKAGES=(bind9 bind9-utils bind9-dnsutils unbound pebble ldnsutils openssl
    knot knot-dnsutils pdns-server pdns-backend-sqlite3 sqlite3 postfix)

# tool -> package that ships it
declare -A TOOLS=(
    [named]=bind9
    [unbound]=unbound
    [unbound-control]=unbound
    [pebble]=pebble
    [dig]=bind9-dnsutils
    [nsupdate]=bind9-dnsutils
    [dnssec-keygen]=bind9-utils
    [dnssec-dsfromkey]=bind9-utils
    [ldns-dane]=ldnsutils
    [openssl]=openssl
    [knotd]=knot
    [knotc]=knot
    [keymgr]=knot
    [kdig]=knot-dnsutils
    [pdns_server]=pdns-server
    [pdnsutil]=pdns-server
    [sqlite3]=sqlite3
    [postfix]=postfix
)

# The SQLite backend is a library, not a tool: checked by its schema file.
have_pdns_sqlite() {
    [ -f /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql ]
}

# named and unbound live in /usr/sbin, which a non-root PATH often lacks.
have_tool() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing_packages() {
    local tool
    declare -A seen=()
    for tool in "${!TOOLS[@]}"; do
        if ! have_tool "$tool"; then
            seen[${TOOLS[$tool]}]=1
        fi
    done
    have_pdns_sqlite || seen[pdns-backend-sqlite3]=1
    if [ "${#seen[@]}" -gt 0 ]; then
        printf '%s\n' "${!seen[@]}" | sort
    fi
}

# PIDs of the system daemons (by exact process name), to tell apart the ones
# an install starts from any that were already running (such as a lab's own).
daemon_pids() {
    pgrep -x "$1" 2>/dev/null | sort || true
}

stop_service() {
    local svc="$1"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
    fi
    if command -v invoke-rc.d >/dev/null 2>&1; then
        invoke-rc.d "$svc" stop >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
}

# --- Exim ------------------------------------------------------------------
# Exim 4 cannot be installed next to Postfix (both are a mail-transport-agent),
# so Debian's packages are unpacked into a lab directory instead and the lab
# runs private instances from there (tests/lab/exim.py). Only the libraries
# Exim links against are installed with apt, and the Debian-exim user and
# group are created as the package's maintainer scripts create them. Nothing
# is unpacked outside EXIM_ROOT; no system configuration, spool or log is made.
EXIM_ROOT=${CERTBOT_DANE_EXIM_ROOT:-/opt/certbot-dane-lab/exim4}
EXIM_PACKAGES=(exim4-daemon-light exim4-base exim4-config)
EXIM_USER=Debian-exim
# Written last: its presence means the unpack is complete.
EXIM_MARKER="$EXIM_ROOT/.packages"

exim_complete() {
    [ -f "$EXIM_MARKER" ] && [ -x "$EXIM_ROOT/usr/sbin/exim4" ]
}

exim_user_exists() {
    getent passwd "$EXIM_USER" >/dev/null && getent group "$EXIM_USER" >/dev/null
}

# The unpacked binary runs: it finds its libraries and its user (an empty
# configuration is a valid one).
exim_runs() {
    "$EXIM_ROOT/usr/sbin/exim4" -C /dev/null -bV >/dev/null 2>&1
}

# The library packages a .deb depends on (first of each alternative), one a line.
deb_libraries() {
    dpkg-deb -f "$1" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*//' -e 's/[[:space:]]//g' |
        grep '^lib' || true
}

package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

unpack_exim() {
    local tmp deb lib
    local -a libs=() missing_libs=()
    case "$EXIM_ROOT" in
        /*/*) ;;
        *) echo "exim: EXIM_ROOT must be an absolute path below a directory: $EXIM_ROOT" >&2
           exit 1 ;;
    esac
    if [ -e "$EXIM_ROOT" ] && [ ! -x "$EXIM_ROOT/usr/sbin/exim4" ]; then
        echo "exim: $EXIM_ROOT exists but holds no unpacked Exim; remove it or set" \
            "CERTBOT_DANE_EXIM_ROOT to another directory" >&2
        exit 1
    fi
    tmp=$(mktemp -d)
    # apt-get download runs as _apt where it can: let it write there.
    chmod 0755 "$tmp"
    if getent passwd _apt >/dev/null; then chown _apt "$tmp"; fi
    (cd "$tmp" && apt-get download "${EXIM_PACKAGES[@]}") ||
        { apt-get update && (cd "$tmp" && apt-get download "${EXIM_PACKAGES[@]}"); }
    mkdir -p "$(dirname "$EXIM_ROOT")"
    rm -rf "$EXIM_ROOT.new"
    mkdir -m 0755 "$EXIM_ROOT.new"
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$EXIM_ROOT.new"
        mapfile -t -O "${#libs[@]}" libs < <(deb_libraries "$deb")
        dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$EXIM_ROOT.new/.packages.tmp"
    done
    for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
        package_installed "$lib" || missing_libs+=("$lib")
    done
    if [ "${#missing_libs[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${missing_libs[@]}"
    fi
    mv "$EXIM_ROOT.new/.packages.tmp" "$EXIM_ROOT.new/.packages"
    rm -rf "$EXIM_ROOT"
    mv "$EXIM_ROOT.new" "$EXIM_ROOT"
    rm -rf "$tmp"
}

install_exim() {
    if exim_complete && exim_user_exists && exim_runs; then
        echo "exim: present in $EXIM_ROOT"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "exim missing or incomplete in $EXIM_ROOT (or no $EXIM_USER user):" \
            "run scripts/install-lab-packages.sh as root" >&2
        exit 1
    fi
    exim_complete || unpack_exim
    if ! exim_user_exists; then
        # As exim4-base's postinst does.
        adduser --system --group --quiet --home /var/spool/exim4 \
            --no-create-home --disabled-login --force-badname "$EXIM_USER"
    fi
    if ! exim_runs; then
        echo "exim: $EXIM_ROOT/usr/sbin/exim4 does not run:" >&2
        "$EXIM_ROOT/usr/sbin/exim4" -C /dev/null -bV >&2 || true
        exit 1
    fi
    echo "exim: unpacked $(paste -sd',' "$EXIM_MARKER") into $EXIM_ROOT"
}

install_exim

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "lab packages: all present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "lab packages missing: ${missing[*]}" >&2
    echo "install them as root with:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y" \
        "--no-install-recommends ${PACKAGES[*]}" >&2
    exit 1
fi

echo "lab packages missing: ${missing[*]}; installing"
named_before=$(daemon_pids named)
unbound_before=$(daemon_pids unbound)
knotd_before=$(daemon_pids knotd)
pdns_before=$(daemon_pids pdns_server)
postfix_before=$(daemon_pids master)

# Postfix without a system configuration: the lab runs private instances.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"

# A machine with a working init starts named/unbound on port 53 right after
# the install; stop only what the install started.
if [ "$(daemon_pids named)" != "$named_before" ]; then
    stop_service named
    stop_service bind9
fi
if [ "$(daemon_pids unbound)" != "$unbound_before" ]; then
    stop_service unbound
fi
if [ "$(daemon_pids knotd)" != "$knotd_before" ]; then
    stop_service knot
fi
if [ "$(daemon_pids pdns_server)" != "$pdns_before" ]; then
    stop_service pdns
fi
if [ "$(daemon_pids master)" != "$postfix_before" ]; then
    stop_service postfix
fi

mapfile -t still_missing < <(missing_packages)
if [ "${#still_missing[@]}" -gt 0 ]; then
    echo "lab packages still missing after install: ${still_missing[*]}" >&2
    exit 1
fi
echo "lab packages: installed"
