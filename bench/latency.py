"""Rollover latency: from the end of a renewal to the switch, against the
lower bound.

For each record TTL T (a lab whose zone TTL and negative TTL are T), and for
``--dane-hold-margin 0`` and the default margin: issue a certificate with
``certbot run -i dane --dane-record-ttl T``, serve it from the dane directory
(a TLS service that re-reads it per connection), probe it every 300 ms with
openssl's DANE check against the validated TLSA RRset, force a renewal with a
new key, then run ``certbot-dane check`` every CHECK_INTERVAL seconds until
the links serve the new version. A poller asks BIND and Unbound about the
TLSA owner every 0.1 s throughout.

All times are seconds after ``certbot renew`` returned (the end of the
renewal); negative when it happened inside it:

* visible: the poller first saw the new record signed on the authoritative
  server (the lab has one: BIND);
* validated: Unbound first returned it with AD;
* lower bound = max(visible + T, validated): no correct switch can come
  earlier, since a cache may have fetched the old RRset just before the new
  record appeared and keeps it T seconds, and the resolver must validate the
  new record;
* switch: the "switched" event of the plugin's timeline.

Usage: .venv/bin/python bench/latency.py [--ttls 30,60,120] [--interval 5]
       [--quick]   (TTLs 5 and 10: a smoke run)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.rdatatype
from benchlib import Deployment, Lab, certbot_dane_cmd, load_average, scratch_dir, table

from certbot_dane import state
from certbot_dane.settings import DEFAULT_HOLD_MARGIN
from tests.lab.probe import Prober, dane_check
from tests.lab.service import DaneService

CHECK_INTERVAL = 5.0
POLL_INTERVAL = 0.1
TAIL = 3.0  # seconds probed after the switch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttls", default="30,60,120", help="record TTLs (default 30,60,120)")
    parser.add_argument("--quick", action="store_true", help="TTLs 5 and 10 (a smoke run)")
    parser.add_argument(
        "--interval", type=float, default=CHECK_INTERVAL,
        help=f"seconds between two certbot-dane check runs (default {CHECK_INTERVAL:.0f})",
    )
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    args = parser.parse_args()
    ttls = [5, 10] if args.quick else [int(t) for t in args.ttls.split(",")]
    root, tmp = scratch_dir("certbot-dane-bench-latency-", args.keep)
    loads = [load_average()]
    rows = []
    try:
        for ttl in ttls:
            with Lab(root / f"lab-{ttl}", ttl=ttl) as lab:
                for margin in (0, None):
                    outcome = measure(lab, root, ttl, margin, args.interval)
                    rows.append(outcome.row(args.interval))
    finally:
        loads.append(load_average())
        if tmp is not None:
            tmp.cleanup()
    print(
        f"rollover latency, seconds after the end of the renewal; check every "
        f"{args.interval:g} s; load average {loads[0]} before, {loads[1]} after"
    )
    print(
        table(
            [
                "TTL",
                "margin",
                "visible",
                "validated",
                "lower bound",
                "switch",
                "ratio",
                "target",
                "met",
                "probes",
                "probe failures",
            ],
            rows,
        )
    )
    return 0 if all(row[-1] == 0 for row in rows) else 1


@dataclass
class Outcome:
    ttl: int
    margin: int
    default_margin: bool
    visible: float
    validated: float
    switch: float
    probes: int
    failures: int

    @property
    def bound(self) -> float:
        return max(self.visible + self.ttl, self.validated)

    def row(self, interval: float) -> list[object]:
        target = 1.2 * self.bound + interval
        margin = f"{self.margin} (default)" if self.default_margin else str(self.margin)
        met = ("yes" if self.switch <= target else "NO") if self.margin == 0 else "-"
        return [
            self.ttl,
            margin,
            _seconds(self.visible),
            _seconds(self.validated),
            _seconds(self.bound),
            _seconds(self.switch),
            f"{self.switch / self.bound:.2f}",
            f"<= {target:.1f}" if self.margin == 0 else "-",
            met,
            self.probes,
            self.failures,
        ]


def _seconds(value: float) -> str:
    return f"{round(value, 1) + 0.0:.1f}"  # + 0.0: no "-0.0"


class Poller:
    """Samples the TLSA RRset at BIND (signed?) and through Unbound (AD?)."""

    def __init__(self, lab: Lab, owner: str) -> None:
        self.lab = lab
        self.owner = owner
        self.samples: list[tuple[float, frozenset[str], bool, frozenset[str], bool]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.is_set():
            began = time.time()
            try:
                bind = self.lab.auth_query(self.owner, "TLSA")
                resolver = self.lab.resolver_query(self.owner, "TLSA")
            except Exception:  # noqa: BLE001 - a lost sample, not a lost run
                self._stopping.wait(POLL_INTERVAL)
                continue
            b, signed = _tlsa(bind)
            r, _ = _tlsa(resolver)
            self.samples.append((began, b, signed, r, bool(resolver.flags & dns.flags.AD)))
            self._stopping.wait(max(0.0, POLL_INTERVAL - (time.time() - began)))

    def first(self, new: str, where: str) -> float:
        for when, bind, signed, resolver, ad in self.samples:
            if where == "bind" and new in bind and signed:
                return when
            if where == "resolver" and new in resolver and ad:
                return when
        raise RuntimeError(f"the poller never saw {new} at {where}")


def _tlsa(response: object) -> tuple[frozenset[str], bool]:
    records: set[str] = set()
    signed = False
    for rrset in response.answer:  # type: ignore[attr-defined]
        if rrset.rdtype == dns.rdatatype.TLSA:
            records |= {rd.to_text() for rd in rrset}
        elif rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == dns.rdatatype.TLSA:
            signed = True
    return frozenset(records), signed


def measure(lab: Lab, root: Path, ttl: int, margin: int | None, interval: float) -> Outcome:
    label = f"t{ttl}-m{'default' if margin is None else margin}"
    host = f"{label}.dane.test"
    dep = Deployment(lab, root / label, host, margin=margin or 0)
    args = dep.dane_args()
    if margin is None:
        cut = args.index("--dane-hold-margin")
        del args[cut : cut + 2]
    print(f"T={ttl} margin={margin}: issuing {host} ...", file=sys.stderr, flush=True)
    dep.certbot("run", *dep.dns_args(), *args, "-d", host)
    with DaneService(dep.dane_dir()) as service:
        deadline = time.monotonic() + 2 * ttl + 60
        while not dane_check(host, service.port, lab.resolver, dep.owner).ok:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}: the first record never validated")
            time.sleep(0.3)
        old = dep.authoritative_records()
        with Prober(host, service.port, lab.resolver, dep.owner, interval_ms=300) as prober:
            with Poller(lab, dep.owner) as poller:
                dep.renew()
                ended = time.time()
                print(f"  renewed; checking every {interval:g} s", file=sys.stderr, flush=True)
                _check_until_switched(dep, interval, limit=3 * ttl + 300)
                time.sleep(TAIL)
            prober.stop()
        new = next(iter(dep.authoritative_records() - old))
    data = state.load(dep.config, host)
    assert data is not None
    switched = max(e.time for e in data.timeline if e.what == "switched")
    outcome = Outcome(
        ttl=ttl,
        margin=DEFAULT_HOLD_MARGIN if margin is None else margin,
        default_margin=margin is None,
        visible=poller.first(new, "bind") - ended,
        validated=poller.first(new, "resolver") - ended,
        switch=switched - ended,
        probes=len(prober.samples),
        failures=len(prober.failures),
    )
    print(f"  {outcome}", file=sys.stderr, flush=True)
    for sample in prober.failures[:5]:
        print(f"  probe failure: {sample.reason}", file=sys.stderr)
    return outcome


def _check_until_switched(dep: Deployment, interval: float, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        began = time.monotonic()
        done = subprocess.run(
            certbot_dane_cmd(dep.config, "-q", "check"),
            capture_output=True, text=True, timeout=120, check=False,
        )
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
        data = state.load(dep.config, dep.host)
        assert data is not None
        s = data.rollover
        if s.pending is None and s.served is not None and s.served.number == 2:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    raise RuntimeError(f"{dep.host}: no switch within {limit:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
