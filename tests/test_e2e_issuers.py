"""Zero-wait rollovers with an issuer bundle, end to end on the lab.

Pebble signs every certificate with one intermediate key per start (its
alternate roots only cross-sign that same key, so they give no second
``2 1 1`` record); a restart makes a new one, as a CA moving to another of
its intermediates does. The lineage runs with ``--dane-tlsa 311:25,211:25
--dane-issuers bundle.pem``: the ``2 1 1`` record of every bundled
intermediate is published and proven live ahead of time, so a renewal with a
new key that chains to one of them switches within ``certbot renew``; one
that chains to an intermediate outside the bundle waits for the hold. A
DANE probe checks the service every 300 ms throughout.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certbot_dane import tlsa
from tests.deployment import Deployment
from tests.lab.fixtures import running_lab
from tests.lab.lab import Lab
from tests.lab.pki import cert_pem, make_leaf
from tests.test_e2e import CHECK_INTERVAL, assert_no_probe_failures, issued_served_probed

pytestmark = pytest.mark.lab

SPECS = "311:25,211:25"


@pytest.fixture(scope="module")
def issuers_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of its own: these tests restart Pebble, which forgets every ACME account."""
    yield from running_lab(tmp_path_factory.mktemp("issuers_lab"))


def record_211(pem: str) -> str:
    """The ``2 1 1`` record (as dig prints it) of a CA certificate."""
    cert = tlsa.load_pem_chain(pem.encode())[0]
    return f"2 1 1 {tlsa.association(cert, 1, 1)}"


class Bundled(Deployment):
    """A lineage with ``311:25,211:25`` and an issuer bundle it rewrites as it goes."""

    def __init__(self, lab: Lab, root: Path, host: str) -> None:
        super().__init__(lab, root, host, tlsa=SPECS)
        self.bundle = root / "issuers.pem"

    def dane_args(self, tlsa: str | None = None) -> list[str]:
        return [*super().dane_args(tlsa), "--dane-issuers", str(self.bundle)]

    def bundle_of(self, *intermediates: str) -> None:
        self.bundle.write_text("".join(intermediates), encoding="ascii")

    def settle(self, limit: int = 60) -> dict:
        """Check until the lineage has nothing left to do; its status row."""
        for _ in range(limit):
            done = self.check()
            assert done.returncode == 0, done.stderr
            row = self.status()
            if row["pending"] is None and "settled" in row["state"]:
                return row
            time.sleep(CHECK_INTERVAL)
        raise AssertionError(f"never settled: {self.status()}")

    def renew_timed(self) -> tuple[float, float]:
        began = time.time()
        self.renew()
        return began, time.time()

    def switched_at(self, version: int) -> float:
        times = [
            e.time for e in self.lineage_file.timeline
            if e.what == "switched" and e.detail == f"version {version}"
        ]
        assert times, f"version {version} was never switched to"
        return times[-1]


@pytest.fixture
def bundled(issuers_lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Bundled]:
    host = f"{request.node.name.replace('_', '-')[:40]}.dane.test".lower()
    dep = Bundled(issuers_lab, tmp_path, host)
    dep.bundle_of(issuers_lab.pebble_intermediate())
    with issued_served_probed(dep) as served:
        yield served


def test_bundled_intermediate_switches_within_the_renewal(bundled: Bundled) -> None:
    """Intermediate B is bundled (and live) before the renewal that uses it: the
    links move during ``certbot renew``, no check needed, no probe failure. Then
    B leaves the bundle while the served certificate still chains to it (its
    record stays), and a renewal under C, outside the bundle, waits for the
    hold; after that switch B's record goes and the bundled A's stays."""
    dep, lab = bundled, bundled.lab
    a = lab.pebble_intermediate()
    assert record_211(a) in dep.authoritative_records()

    b = lab.restart_pebble()
    dep.forget_acme_account()
    assert record_211(b) != record_211(a), "a new Pebble start signs with a new key"
    dep.bundle_of(a, b)
    row = dep.settle()
    issuer = {item["record"].split(" IN TLSA ")[1]: item for item in row["issuer_records"]}
    assert set(issuer) == {record_211(a), record_211(b)}
    assert all(item["live"] and item["visible"] for item in issuer.values()), issuer
    table = dep.cli("status").stdout
    assert f"issuer record: {dep.owner} IN TLSA {record_211(b)} (visible)" in table, table
    printed = dep.cli("print", "--cert-name", dep.host).stdout
    assert f"{dep.owner} 3600 IN TLSA {record_211(b)}" in printed, printed

    checks = len(dep.checks)
    began, ended = dep.renew_timed()
    assert dep.served() == 2, "the new certificate chains to a live issuer record"
    assert began <= dep.switched_at(2) <= ended, "switched inside certbot renew"
    assert len(dep.checks) == checks, "no certbot-dane check ran"
    assert dep.switched_at(2) < min(t for t in dep.events("visible") if t >= began), (
        "the switch did not wait for the new 3 1 1 record to be seen"
    )
    records = dep.authoritative_records()
    assert {record_211(a), record_211(b)} <= records and len(records) == 3, records

    dep.bundle_of(a)
    row = dep.settle()
    assert [i["record"].split(" IN TLSA ")[1] for i in row["issuer_records"]] == [record_211(a)]
    assert record_211(b) in dep.authoritative_records(), "the served version still needs B"

    c = lab.restart_pebble()
    dep.forget_acme_account()
    dep.renew()
    assert dep.served() == 2, "C is not bundled: its records must be proven first"
    assert record_211(c) in dep.authoritative_records()
    dep.check_until_switched(3, interval=CHECK_INTERVAL)
    records = dep.authoritative_records()
    assert record_211(b) not in records, "nothing needs B any more"
    assert {record_211(a), record_211(c)} <= records and len(records) == 3, records
    assert_no_probe_failures(dep)


def test_bundle_change_publishes_before_it_is_needed(bundled: Bundled) -> None:
    """A new intermediate in the bundle is published and proven by the checks
    alone, with no renewal: the served version and the links do not move.
    Taken out of the bundle again, nothing needs it: its record goes at the
    next check."""
    dep, lab = bundled, bundled.lab
    a = lab.pebble_intermediate()
    b = lab.restart_pebble()
    dep.forget_acme_account()
    dep.bundle_of(a, b)
    done = dep.check()
    assert done.returncode == 0, done.stderr
    assert record_211(b) in dep.authoritative_records(), "published at the first check"
    assert dep.served() == 1
    dep.settle()
    data = dep.lineage_file.rollover
    assert len(data.issuers) == 2 and data.issuers <= data.live
    assert dep.served() == 1 and data.pending is None
    dep.bundle_of(a)
    done = dep.check()
    assert done.returncode == 0, done.stderr
    assert record_211(b) not in dep.authoritative_records(), "retired at the first check"
    assert record_211(a) in dep.authoritative_records()
    assert_no_probe_failures(dep)


# Bad bundles ---------------------------------------------------------------

def _server_pem() -> str:
    _key, cert = make_leaf(["not-a-ca.dane.test"])
    return cert_pem(cert).decode("ascii")


BAD_BUNDLES = [
    ("not PEM", "this is not a certificate\n", "no PEM certificate in it"),
    ("empty", "", "no PEM certificate in it"),
    ("server cert", None, "certificate 1 (CN=not-a-ca.dane.test) is not a CA certificate"),
]


def _write_bad(path: Path, text: str | None) -> None:
    path.write_text(_server_pem() if text is None else text, encoding="ascii")


@pytest.mark.parametrize(("what", "text", "message"), BAD_BUNDLES, ids=[b[0] for b in BAD_BUNDLES])
def test_bad_bundle_stops_certbot_run(
    issuers_lab: Lab, tmp_path: Path, what: str, text: str | None, message: str
) -> None:
    dep = Bundled(issuers_lab, tmp_path, f"bad-run-{what.replace(' ', '-')}.dane.test")
    _write_bad(dep.bundle, text)
    done = dep.certbot("run", *dep.dns_args(), *dep.dane_args(), "-d", dep.host, ok=False)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "dane:" in line]
    assert len(lines) == 1, done.stderr
    assert f"--dane-issuers {dep.bundle}: {message}" in lines[0], lines[0]
    assert not (dep.config / "live").exists(), "a certificate was issued despite the bundle"
    assert not (dep.config / "dane").exists()
    assert dep.authoritative_records() == set()


@pytest.mark.parametrize(("what", "text", "message"), BAD_BUNDLES, ids=[b[0] for b in BAD_BUNDLES])
def test_bad_bundle_fails_check_and_changes_nothing(
    bundled: Bundled, what: str, text: str | None, message: str
) -> None:
    dep = bundled
    before = dep.lineage_file.rollover
    records = dep.authoritative_records()
    links = (dep.dane_dir() / "fullchain.pem").resolve()
    _write_bad(dep.bundle, text)
    done = dep.check()
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"--dane-issuers {dep.bundle}: {message}" in done.stderr, done.stderr
    # A renewal while the bundle is bad: certbot renews, the plugin stops the
    # lineage before it publishes anything.
    renewed = dep.renew(ok=False)
    assert f"--dane-issuers {dep.bundle}: {message}" in renewed.stderr + renewed.stdout
    dep.check()
    after = dep.lineage_file.rollover
    assert dep.authoritative_records() == records, "DNS changed"
    assert (dep.dane_dir() / "fullchain.pem").resolve() == links, "links moved"
    for field in ("served", "pending", "issuers", "owned", "published", "live"):
        assert getattr(after, field) == getattr(before, field), field
    assert after.last_error and message in after.last_error, "status shows why"
    row = dep.status()
    assert message in row["last_error"]
    assert_no_probe_failures(dep)


def test_status_and_print_show_the_issuer_records(bundled: Bundled) -> None:
    dep = bundled
    a = record_211(dep.lab.pebble_intermediate())
    rows = json.loads(dep.cli("status", "--json").stdout)
    assert rows[0]["issuer_records"] == [
        {"record": f"{dep.owner} IN TLSA {a}", "published": True, "live": True, "visible": True}
    ]
    printed = dep.cli("print", "--cert-name", dep.host)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    title = f"; {dep.host} issuer records (--dane-issuers {dep.bundle})"
    # The served version's 2 1 1 record is the bundled one: printed once, above.
    assert f"{title} (same records as above)" in lines, lines
    assert lines.count(f"{dep.owner} 3600 IN TLSA {a}") == 1, lines
