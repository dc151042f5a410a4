"""A full renewal with the PowerDNS store: real certbot and Pebble, PowerDNS
Authoritative 4.7 as the signed zone's server, Unbound validating it, and a
DANE probe every 300 ms that must never fail.

certbot answers the DNS-01 challenge with dns-rfc2136 (PowerDNS accepts RFC
2136 with the lab's TSIG key); the TLSA records go through PowerDNS's HTTP
API with certbot-dns-powerdns's credentials file, as on a host whose
PowerDNS has both enabled.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment import Deployment
from tests.lab.lab import Lab
from tests.lab.pdns import PowerDns
from tests.test_e2e import issued_served_probed, roll_over_with_a_new_key

pytestmark = pytest.mark.lab


class PowerDnsDeployment(Deployment):
    """A lineage whose TLSA records go through the PowerDNS HTTP API."""

    def __init__(self, lab: Lab, root: Path, host: str, margin: int = 1) -> None:
        super().__init__(lab, root, host, margin)
        assert isinstance(lab.authority, PowerDns)
        self.pdns = lab.authority
        self.pdns_ini = self.pdns.ini(root / "pdns.ini")
        self.mark = len(self.pdns.api_requests())

    def dane_args(self, tlsa: str = "311:25") -> list[str]:
        return [
            *super().dane_args(tlsa),
            "--dane-dns",
            "powerdns",
            "--dane-credentials",
            str(self.pdns_ini),
        ]

    def api_patches(self) -> int:
        """PATCHes of the zone PowerDNS logged since this lineage began: the store's writes."""
        zone = f"PATCH /api/v1/servers/localhost/zones/{self.lab.zone} 204"
        return self.pdns.api_requests()[self.mark :].count(zone)

    def tlsa_updates(self) -> list[str]:
        """RFC 2136 updates that touched this lineage's TLSA records (there must be none)."""
        log = (self.pdns.directory / "pdns.log").read_text(errors="replace")
        owner = self.owner.rstrip(".")
        return [line for line in log.splitlines() if "UPDATE" in line and f"{owner}|TLSA" in line]


@pytest.fixture
def served(pdns_lab: Lab, tmp_path: Path) -> Iterator[PowerDnsDeployment]:
    deployment = PowerDnsDeployment(pdns_lab, tmp_path, "pdns-renewal.dane.test")
    with issued_served_probed(deployment) as dep:
        yield dep


def test_renewal_through_the_powerdns_api(served: PowerDnsDeployment) -> None:
    dep = served
    settings = dep.lineage_file.settings
    assert (settings.store, settings.credentials) == ("powerdns", str(dep.pdns_ini))
    conf = (dep.config / "renewal" / f"{dep.host}.conf").read_text()
    assert "dane_dns = powerdns" in conf and f"dane_credentials = {dep.pdns_ini}" in conf
    assert dep.api_patches() == 1, "the first record went through the API"

    roll_over_with_a_new_key(dep)

    # The new record published next to the old one, then the old one removed.
    assert dep.api_patches() == 3
    assert dep.tlsa_updates() == [], "TLSA records must not go through RFC 2136"
    data = dep.lineage_file
    assert data.rollover.owned == data.rollover.served.records  # type: ignore[union-attr]
    assert data.rollover.last_error is None
