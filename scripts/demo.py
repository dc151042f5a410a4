"""One renewal on the loopback lab, told as a timeline.

Starts BIND 9, Unbound and Pebble on free loopback ports, issues a
certificate with ``certbot run -i dane``, serves it from the dane directory,
probes it with openssl's DANE check every 300 ms, forces a renewal with a new
key, runs ``certbot-dane check`` every second until the switch and the
removal of the old record, and prints what happened when.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.deployment import Deployment  # noqa: E402
from tests.lab.lab import Lab  # noqa: E402
from tests.lab.probe import Prober, dane_check  # noqa: E402
from tests.lab.service import DaneService  # noqa: E402

HOST = "mail.dane.test"
CHECK_INTERVAL = 1.0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="certbot-dane-demo-") as tmp:
        root = Path(tmp)
        print("starting the lab (BIND 9, Unbound, Pebble) on loopback ...", flush=True)
        with Lab(root / "lab") as lab:
            return run(lab, root)


def run(lab: Lab, root: Path) -> int:
    dep = Deployment(lab, root / "site", HOST, margin=2)
    t0 = time.time()
    print(f"certbot run -i dane --dane-tlsa 311:25 -d {HOST}", flush=True)
    dep.issue()
    with DaneService(dep.dane_dir()) as service:
        while not dane_check(HOST, service.port, lab.resolver, dep.owner).ok:
            time.sleep(0.3)
        with Prober(HOST, service.port, lab.resolver, dep.owner, interval_ms=300) as prober:
            renew_started = time.time()
            print("certbot renew --force-renewal (new key)", flush=True)
            dep.renew()
            renewed = time.time()
            while True:
                done = dep.check()
                row = dep.status()
                if row["served"] == 2 and row["pending"] is None and row["state"] == "settled":
                    break
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                time.sleep(CHECK_INTERVAL)
            time.sleep(1.0)
        data = dep.lineage_file
    print()
    print(f"timeline of {HOST} (seconds since certbot run started)")
    for event in data.timeline:
        print(f"  {event.time - t0:7.2f}  {event.what:<10} {event.detail}")
    hold = lab.record_ttl + dep.margin
    print()
    print(f"renewal took {renewed - renew_started:.2f} s inside certbot")
    print(f"hold computed: {hold} s (old RRset TTL {lab.record_ttl} s + margin {dep.margin} s)")
    visible = max(e.time for e in data.timeline if e.what == "visible")
    switched = max(e.time for e in data.timeline if e.what == "switched")
    print(f"switch {switched - visible:.2f} s after the new record was seen on every server")
    print(f"records at the owner now: {sorted(dep.authoritative_records())}")
    passed, failed = len(prober.successes), len(prober.failures)
    print(f"DANE probe: {passed} passed, {failed} failed")
    for sample in prober.failures[:5]:
        print(f"  failure: {sample.reason}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
