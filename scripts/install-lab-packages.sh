#!/usr/bin/env bash
# Install the Debian packages the loopback test lab needs (BIND 9, Knot,
# PowerDNS with its SQLite backend, Unbound, Pebble, Postfix, dig/nsupdate,
# DNSSEC tools, ldns-dane, openssl).
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
