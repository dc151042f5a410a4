"""PowerDNS: from a store ``add`` returning to the record being served signed.

The lab runs with PowerDNS Authoritative 4.7 (``Lab(authority="pdns")``).
For each of REPEAT fresh owner names, ``PowerDnsStore.add`` publishes one
TLSA record through the HTTP API (zone list once per store, then a read of
the zone, the PATCH, and the read-back). The moment ``add`` returns, a loop
asks PowerDNS itself over UDP (DO bit set, no pause between queries) until
the answer holds exactly that record and an RRSIG covering it; the time from
the return to that answer is the figure. The add's own duration is shown
too, since it reads the whole zone twice.

Two zone sizes: the lab's zone as it is (a handful of records), and the same
zone with SEED other TLSA RRsets added first, to show the cost of the
whole-zone reads.

Usage: .venv/bin/python bench/pdns_visibility.py [--repeat 20] [--seed 1000]
       [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import time

import dns.message
import dns.query
import dns.rdatatype
import requests
from benchlib import Lab, load_average, median, scratch_dir, table

from certbot_dane.dns.powerdns import PowerDnsStore
from certbot_dane.tlsa import Record
from tests.lab.pdns import PowerDns

TTL = 60


def served_signed(lab: Lab, rec: Record) -> bool:
    """Does PowerDNS answer ``rec``'s owner with exactly ``rec``, signed?"""
    query = dns.message.make_query(rec.owner, dns.rdatatype.TLSA, want_dnssec=True)
    response = dns.query.udp(query, "127.0.0.1", port=lab.auth_port, timeout=2)
    tlsa = [r for r in response.answer if r.rdtype == dns.rdatatype.TLSA]
    signed = any(
        r.rdtype == dns.rdatatype.RRSIG and r.covers == dns.rdatatype.TLSA for r in response.answer
    )
    return signed and len(tlsa) == 1 and {Record.from_rdata(rec.owner, rd) for rd in tlsa[0]} == {
        rec
    }


def measure(lab: Lab, pdns: PowerDns, label: str, shown: str, repeat: int) -> list[object]:
    store = PowerDnsStore(pdns.api_url, pdns.api_key)
    adds, visible, polls, rtts = [], [], [], []
    for i in range(repeat):
        rec = Record(f"_25._tcp.{label}{i}.{lab.zone}", 3, 1, 1, secrets.token_hex(32))
        began = time.monotonic()
        store.add({rec}, TTL)
        returned = time.monotonic()
        count = 1
        while not served_signed(lab, rec):
            count += 1
        visible.append((time.monotonic() - returned) * 1000)
        adds.append((returned - began) * 1000)
        polls.append(count)
        again = time.monotonic()  # one more query: what a single round trip costs
        served_signed(lab, rec)
        rtts.append((time.monotonic() - again) * 1000)
        print(f"{label} {i}: add {adds[-1]:.1f} ms, served signed {visible[-1]:.2f} ms later "
              f"({count} queries)", file=sys.stderr)
    return [
        shown,
        repeat,
        f"{median(visible):.2f}",
        f"{min(visible):.2f} / {max(visible):.2f}",
        f"{sum(1 for c in polls if c == 1)} of {repeat}",
        f"{median(rtts):.2f}",
        f"{median(adds):.1f}",
    ]


def seed(pdns: PowerDns, lab: Lab, count: int) -> None:
    """``count`` other TLSA RRsets in the zone, in one PATCH."""
    rrsets = [
        {"name": f"_443._tcp.seed{i}.{lab.zone}", "type": "TLSA", "ttl": TTL,
         "changetype": "REPLACE",
         "records": [{"content": f"3 1 1 {secrets.token_hex(32)}", "disabled": False}]}
        for i in range(count)
    ]
    response = requests.patch(
        f"{pdns.api_url}/api/v1/servers/localhost/zones/{lab.zone}",
        json={"rrsets": rrsets}, headers={"X-API-Key": pdns.api_key}, timeout=120,
    )
    response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--keep", help="keep the run directory here")
    args = parser.parse_args()
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    run_dir, tmp = scratch_dir("pdns-visibility-", args.keep)
    load_before = load_average()
    rows = []
    with Lab(run_dir / "lab", authority="pdns") as lab:
        pdns = lab.authority
        assert isinstance(pdns, PowerDns)
        rows.append(measure(lab, pdns, "small", "the lab's (5 to 25 RRsets)", args.repeat))
        seed(pdns, lab, args.seed)
        shown = f"+ {args.seed} TLSA RRsets"
        rows.append(measure(lab, pdns, "seeded", shown, args.repeat))
    print(f"load average before {load_before}, after {load_average()}")
    print(table(
        ["zone", "adds", "median ms to served signed", "min / max ms",
         "signed at the first query", "median ms of one query", "median ms of the add"],
        rows,
    ))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
