"""From a store ``add`` returning to the record being served signed: BIND 9,
Knot DNS and PowerDNS Authoritative, by the same method (RFC 2136 with TSIG).

Three labs run side by side, one per server. Each round, in turn on each
server (interleaved, so a busy moment of the shared machine hits both):

* store: ``Rfc2136Store.add`` of one fresh TLSA record (the store's own
  settling included, as the engine calls it); from the moment it returns,
  the authoritative server is asked over UDP with DO, query after query
  without pause, until its answer carries the record and an RRSIG over the
  TLSA RRset. The figure is the time from ``add`` returning to the arrival
  of that first signed answer, so it is never below one query's round trip
  (measured next: the same query again, once the name is signed);
* raw: the same with a bare RFC 2136 update (dnspython, TCP) in place of the
  store: from the server's answer to the first signed answer. This is the
  server's own behaviour, without the store's settling.

Usage: .venv/bin/python bench/signed_after_add.py [--rounds 20] [--keep DIR]
"""
from __future__ import annotations

import argparse
import secrets
import sys
import time

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
from benchlib import LOOPBACK, Lab, load_average, median, scratch_dir, table

from certbot_dane.dns.rfc2136 import Rfc2136Store
from certbot_dane.tlsa import Record

SERVERS = ("bind", "knot", "pdns")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per server (default 20)")
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    args = parser.parse_args()
    root, tmp = scratch_dir("signed-after-add-", args.keep)
    before = load_average()
    labs = {kind: Lab(root / kind, authority=kind) for kind in SERVERS}
    results: dict[str, dict[str, list[float]]] = {
        kind: {"add": [], "store": [], "store_first": [], "rtt": [], "raw": [], "raw_first": []}
        for kind in SERVERS
    }
    try:
        for lab in labs.values():
            lab.start()
        for round_ in range(args.rounds):
            for kind, lab in labs.items():
                measure(lab, results[kind])
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
    finally:
        for lab in labs.values():
            lab.stop()
        if tmp is not None:
            tmp.cleanup()
    print(report(results, args.rounds, before, load_average()))
    return 0


def measure(lab: Lab, into: dict[str, list[float]]) -> None:
    """One round on one server: a store add, then a raw update."""
    store = Rfc2136Store(
        LOOPBACK, lab.auth_port, lab.tsig_name, lab.tsig_secret, "HMAC-SHA256", timeout=10
    )
    store.zone_of(fresh_owner(lab))  # the zone lookup is not part of the figure
    owner = fresh_owner(lab)
    record = Record(owner, 3, 1, 1, secrets.token_hex(32))
    began = time.perf_counter()
    store.add([record], lab.record_ttl)
    returned = time.perf_counter()
    signed, asked = wait_signed(lab, owner)
    into["add"].append(returned - began)
    into["store"].append(signed - returned)
    into["store_first"].append(float(asked == 1))
    asked_again = time.perf_counter()
    wait_signed(lab, owner)  # already signed: one query's round trip
    into["rtt"].append(time.perf_counter() - asked_again)

    owner = fresh_owner(lab)
    update = lab.update()
    update.add(owner, lab.record_ttl, "TLSA", f"3 1 1 {secrets.token_hex(32)}")
    assert lab.send_update(update) == dns.rcode.NOERROR
    answered = time.perf_counter()
    signed, asked = wait_signed(lab, owner)
    into["raw"].append(signed - answered)
    into["raw_first"].append(float(asked == 1))


def fresh_owner(lab: Lab) -> str:
    return f"_25._tcp.b{secrets.token_hex(5)}.{lab.zone}"


def wait_signed(lab: Lab, owner: str, limit: float = 10.0) -> tuple[float, int]:
    """(when the first signed answer arrived, how many queries it took)."""
    name = dns.name.from_text(owner)
    query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=True)
    query.flags &= ~dns.flags.RD
    deadline = time.perf_counter() + limit
    asked = 0
    while True:
        response = dns.query.udp(query, LOOPBACK, port=lab.auth_port, timeout=2)
        arrived = time.perf_counter()
        asked += 1
        if signed(response, name):
            return arrived, asked
        if arrived > deadline:
            raise RuntimeError(f"{owner} not served signed by {lab.authority.kind} in {limit} s")


def signed(response: dns.message.Message, name: dns.name.Name) -> bool:
    """Does the answer carry the TLSA RRset at ``name`` and an RRSIG over it?"""
    found = {(r.rdtype, r.covers) for r in response.answer if r.name == name}
    tlsa = dns.rdatatype.TLSA
    return (tlsa, dns.rdatatype.NONE) in found and (dns.rdatatype.RRSIG, tlsa) in found


def report(
    results: dict[str, dict[str, list[float]]], rounds: int, before: str, after: str
) -> str:
    ms = 1000.0
    rows = []
    for kind in SERVERS:
        r = results[kind]
        rows.append(
            [
                kind,
                rounds,
                median(r["add"]) * ms,
                median(r["store"]) * ms,
                max(r["store"]) * ms,
                f"{int(sum(r['store_first']))}/{rounds}",
                median(r["rtt"]) * ms,
                median(r["raw"]) * ms,
                max(r["raw"]) * ms,
                f"{int(sum(r['raw_first']))}/{rounds}",
            ]
        )
    headers = [
        "server",
        "n",
        "add call (median ms)",
        "add returned → signed (median ms)",
        "(max ms)",
        "(signed at the first query)",
        "one query, signed name (median ms)",
        "update answered → signed (median ms)",
        "(max ms)",
        "(signed at the first query)",
    ]
    return f"load average {before} before, {after} after\n\n" + table(headers, rows)


if __name__ == "__main__":
    raise SystemExit(main())
