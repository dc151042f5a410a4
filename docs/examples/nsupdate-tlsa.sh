#!/bin/sh
# nsupdate-tlsa.sh - publish or delete one TLSA record with nsupdate.
#
# A program for certbot-dane's exec store (--dane-dns exec). certbot-dane
# runs it once per record with the TLSA_* variables and ZONE_DOMAIN in an
# otherwise empty environment. As nothing else is inherited, the server and
# the TSIG key come from a config file named by the first argument:
#
#   nsupdate-tlsa.sh /etc/letsencrypt/nsupdate-tlsa.conf
#
# The config file holds "name = value" lines; "#" starts a comment:
#
#   server  = 192.0.2.53    the primary server, an IP address (required)
#   port    = 53            its port
#   keyfile = /etc/letsencrypt/nsupdate-tlsa.key
#                           the TSIG key in named.conf syntax (required,
#                           mode 0600), for example:
#                           key "certbot." { algorithm hmac-sha256; secret "..."; };
#   ttl     = 3600          the record TTL when TLSA_TTL is not given
#   timeout = 10            seconds for each exchange with the server
#
# The key reaches nsupdate as a file (-k), never on a command line that
# other users could read, and no message ever shows it.
#
# Exit codes (the exec contract):
#   0    done: published, deleted, or already absent
#   1    publish: the record is there already, with the TTL asked for
#        (present with another TTL, it is given the TTL asked for: 0);
#        delete: the live record (TLSA_LIVE_HASH) is not served yet
#   2    error: bad config or variables, update refused
#   128  the server could not be reached (soft: retried on the next run)
# The last line on stderr says what went wrong.

set -u
IFS=$(printf ' \t\n_')
IFS=${IFS%_}

fail() {
    code=$1
    shift
    printf 'nsupdate-tlsa: %s\n' "$*" >&2
    exit "$code"
}

last_line() {
    printf '%s\n' "$1" | sed '/^[[:space:]]*$/d' | tail -n 1
}

# Configuration ---------------------------------------------------------------

conf=${1:-}
[ -n "$conf" ] || fail 2 "usage: nsupdate-tlsa.sh CONFIG-FILE"
[ -r "$conf" ] || fail 2 "cannot read config file $conf"

server=
port=53
keyfile=
ttl=3600
timeout=10
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    case $line in
        *=*) ;;
        *[![:space:]]*) fail 2 "$conf: expected name = value, got: $line" ;;
        *) continue ;;
    esac
    name=$(printf '%s\n' "${line%%=*}" | tr -d ' \t')
    value=$(printf '%s\n' "${line#*=}" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    case $name in
        server) server=$value ;;
        port) port=$value ;;
        keyfile) keyfile=$value ;;
        ttl) ttl=$value ;;
        timeout) timeout=$value ;;
        *) fail 2 "$conf: unknown setting '$name'" ;;
    esac
done <"$conf"

case $server in
    '' | *[!0-9A-Fa-f.:]*) fail 2 "$conf: server must be an IP address" ;;
esac
for pair in "port=$port" "ttl=$ttl" "timeout=$timeout"; do
    case ${pair#*=} in
        '' | *[!0-9]*) fail 2 "$conf: ${pair%%=*} must be a number" ;;
    esac
done
[ -n "$keyfile" ] || fail 2 "$conf: no keyfile given"
[ -r "$keyfile" ] || fail 2 "cannot read the key file $keyfile"

# The record --------------------------------------------------------------------

# Everything below ends up in nsupdate's input: refuse anything that could
# smuggle in a second command.
check() {
    case $2 in
        '' | *[!$3]*) fail 2 "$1 is missing or malformed; run me from certbot-dane's exec store" ;;
    esac
}
check TLSA_OPERATION "${TLSA_OPERATION:-}" a-z
check TLSA_USAGE "${TLSA_USAGE:-}" 0-9
check TLSA_SELECTOR "${TLSA_SELECTOR:-}" 0-9
check TLSA_MATCHING "${TLSA_MATCHING:-}" 0-9
check TLSA_PORT "${TLSA_PORT:-}" 0-9
check TLSA_PROTOCOL "${TLSA_PROTOCOL:-}" a-z0-9-
check TLSA_DOMAIN "${TLSA_DOMAIN:-}" A-Za-z0-9._-
check TLSA_HASH "${TLSA_HASH:-}" 0-9a-f
check ZONE_DOMAIN "${ZONE_DOMAIN:-}" A-Za-z0-9._-
[ -z "${TLSA_LIVE_HASH:-}" ] || check TLSA_LIVE_HASH "$TLSA_LIVE_HASH" 0-9a-f
[ -z "${TLSA_TTL:-}" ] || check TLSA_TTL "$TLSA_TTL" 0-9

owner="_${TLSA_PORT}._${TLSA_PROTOCOL}.${TLSA_DOMAIN%.}."
zone="${ZONE_DOMAIN%.}."
params="$TLSA_USAGE $TLSA_SELECTOR $TLSA_MATCHING"

# DNS ---------------------------------------------------------------------------

# Ask the primary itself (not a cache) what it serves at the owner name.
lookup() {
    answer=$(dig +norecurse +tcp +time="$timeout" +tries=1 +nocmd +nostats +noquestion \
        +noauthority +noadditional -p "$port" "@$server" "$owner" TLSA 2>&1)
    rc=$?
    if [ "$rc" -eq 9 ]; then
        fail 128 "no answer from $server port $port: $(last_line "$answer")"
    elif [ "$rc" -ne 0 ]; then
        fail 2 "dig failed for $owner: $(last_line "$answer")"
    fi
    case $answer in
        *"status: NOERROR,"* | *"status: NXDOMAIN,"*) ;;
        *) fail 2 "$server port $port does not serve $owner: $(printf '%s\n' "$answer" |
            sed -n 's/.*status: \([A-Z]*\),.*/\1/p')" ;;
    esac
}

# served_ttl HASH: print the TTL and succeed when the last lookup saw this
# record (dig splits and upper-cases long hex data, so it is joined and
# lowered first).
served_ttl() {
    printf '%s\n' "$answer" | {
        while read -r _name rr_ttl _class type usage selector matching data; do
            [ "$type" = TLSA ] || continue
            data=$(printf '%s' "$data" | tr -d ' \t' | tr 'A-F' 'a-f')
            if [ "$usage $selector $matching $data" = "$params $1" ]; then
                printf '%s\n' "$rr_ttl"
                exit 0
            fi
        done
        exit 1
    }
}

# served HASH: true when the last lookup saw this record.
served() {
    served_ttl "$1" >/dev/null
}

update() {
    out=$(printf 'server %s %s\nzone %s\n%s\nsend\n' "$server" "$port" "$zone" "$1" |
        nsupdate -v -t "$timeout" -k "$keyfile" 2>&1)
    rc=$?
    [ "$rc" -eq 0 ] && return 0
    case $out in
        *"Communication with"* | *"could not reach"* | *"timed out"*)
            fail 128 "cannot reach $server port $port: $(last_line "$out")" ;;
    esac
    fail 2 "update of $owner at $server port $port failed: $(last_line "$out")"
}

# A primary that signs inline serves an update a moment after accepting it;
# wait (bounded) so that the caller sees what it asked for. Not settling in
# time is no error: certbot-dane checks visibility itself.
settle() {
    tries=$((timeout * 10))
    while [ "$tries" -gt 0 ]; do
        lookup
        if served "$TLSA_HASH"; then
            [ "$1" = present ] && return 0
        else
            [ "$1" = absent ] && return 0
        fi
        sleep 0.1
        tries=$((tries - 1))
    done
}

# The operation -------------------------------------------------------------------

case $TLSA_OPERATION in
    publish)
        lookup
        want_ttl=${TLSA_TTL:-$ttl}
        if have_ttl=$(served_ttl "$TLSA_HASH"); then
            [ "$have_ttl" = "$want_ttl" ] && exit 1
            # Present with another TTL: delete and add in one update, which
            # changes the TTL on every server (a plain add may keep the old).
            update "update delete $owner TLSA $params $TLSA_HASH
update add $owner $want_ttl TLSA $params $TLSA_HASH"
            exit 0
        fi
        update "update add $owner $want_ttl TLSA $params $TLSA_HASH"
        settle present
        ;;
    delete)
        lookup
        if [ -n "${TLSA_LIVE_HASH:-}" ] && ! served "$TLSA_LIVE_HASH"; then
            fail 1 "the live record $params $(printf '%.16s' "$TLSA_LIVE_HASH")... is" \
                "not served at $owner yet"
        fi
        served "$TLSA_HASH" || exit 0
        update "update delete $owner TLSA $params $TLSA_HASH"
        settle absent
        ;;
    *)
        fail 2 "unknown TLSA_OPERATION '$TLSA_OPERATION' (expected publish or delete)"
        ;;
esac
exit 0
