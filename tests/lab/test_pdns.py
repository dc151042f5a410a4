"""The lab with PowerDNS Authoritative works: signed zone, validating resolver,
RFC 2136 updates with the lab's key, the HTTP API, restarts, and issuance."""

from __future__ import annotations

import secrets
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
import requests

from . import Lab
from .pdns import PowerDns
from .test_lab import issue, wait_for

pytestmark = pytest.mark.lab


def random_tlsa() -> str:
    return f"3 1 1 {secrets.token_hex(32)}"


def authority(lab: Lab) -> PowerDns:
    assert isinstance(lab.authority, PowerDns)
    return lab.authority


def tlsa_texts(response: dns.message.Message) -> list[str]:
    return [rd.to_text() for r in response.answer if r.rdtype == dns.rdatatype.TLSA for rd in r]


def patch(lab: Lab, key: str, name: str, *contents: str) -> requests.Response:
    """Replace ``name``'s TLSA RRset through the HTTP API."""
    rrset = {
        "name": name,
        "type": "TLSA",
        "ttl": lab.record_ttl,
        "changetype": "REPLACE",
        "records": [{"content": c, "disabled": False} for c in contents],
    }
    pdns = authority(lab)
    return requests.patch(
        f"{pdns.api_url}/api/v1/servers/localhost/zones/{lab.zone}",
        json={"rrsets": [rrset]},
        headers={"X-API-Key": key},
        timeout=5,
        proxies={"http": "", "https": ""},
    )


def test_pdns_zone_is_signed_and_validates(pdns_lab: Lab) -> None:
    lab = pdns_lab
    assert lab.authority.kind == "pdns"
    dnskey = lab.auth_query(lab.zone, "DNSKEY")
    assert dnskey.rcode() == dns.rcode.NOERROR
    assert any(r.rdtype == dns.rdatatype.RRSIG for r in dnskey.answer)

    soa = lab.resolver_query(lab.zone, "SOA")
    assert soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AD
    assert soa.answer[0][0].minimum == lab.record_ttl

    mail = lab.resolver_query(f"mail.{lab.zone}", "A")
    assert mail.flags & dns.flags.AD
    missing = lab.resolver_query(f"nothing-here.{lab.zone}", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AD


def test_pdns_signed_update_is_served_signed_and_validates(pdns_lab: Lab) -> None:
    lab = pdns_lab
    owner = f"_25._tcp.upd.{lab.zone}"
    record = random_tlsa()
    lab.publish(owner, "TLSA", record)
    answer = lab.resolver_query(owner, "TLSA")
    assert answer.flags & dns.flags.AD
    assert tlsa_texts(answer) == [record]

    lab.unpublish(owner, "TLSA")
    gone = lab.resolver_query(owner, "TLSA")
    assert tlsa_texts(gone) == [] and gone.flags & dns.flags.AD


def test_pdns_update_without_the_key_is_refused(pdns_lab: Lab) -> None:
    lab = pdns_lab
    owner = f"_26._tcp.mail.{lab.zone}"
    unsigned = lab.update(signed=False)
    unsigned.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    assert lab.send_update(unsigned) == dns.rcode.REFUSED

    # An unknown key gets an unsigned REFUSED: dnspython 2.4 and later reject
    # the unsigned answer, 2.3 (Debian 12) returns it.
    stranger = dns.update.UpdateMessage(
        lab.zone,
        keyring=dns.tsigkeyring.from_text({"stranger-key": ("hmac-sha256", lab.tsig_secret)}),
        keyname=dns.name.from_text("stranger-key"),
        keyalgorithm=dns.tsig.HMAC_SHA256,
    )
    stranger.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    try:
        rcode = lab.send_update(stranger)
    except dns.exception.DNSException:
        rcode = None
    assert rcode in (None, dns.rcode.REFUSED), rcode
    assert lab.auth_query(owner, "TLSA").rcode() == dns.rcode.NXDOMAIN


def test_pdns_api_change_is_served_signed_and_validates(pdns_lab: Lab) -> None:
    lab = pdns_lab
    owner = f"_25._tcp.api.{lab.zone}"
    record = random_tlsa()
    done = patch(lab, authority(lab).api_key, owner, record)
    assert done.status_code == 204, done.text
    # Signed at the very next query: PowerDNS signs answers as it sends them.
    signed = lab.wait_signed(owner, "TLSA", expect=[record], timeout=0.001)
    assert signed is not None and signed.ttl == lab.record_ttl
    lab.flush_resolver(owner, "TLSA")
    answer = lab.resolver_query(owner, "TLSA")
    assert answer.flags & dns.flags.AD and tlsa_texts(answer) == [record]
    logged = f"PATCH /api/v1/servers/localhost/zones/{lab.zone} 204"
    wait_for(lambda: logged in authority(lab).api_requests())


def test_pdns_api_refuses_a_wrong_key(pdns_lab: Lab) -> None:
    lab = pdns_lab
    owner = f"_25._tcp.wrongkey.{lab.zone}"
    done = patch(lab, "not-the-key", owner, random_tlsa())
    assert done.status_code == 401
    logged = f"PATCH /api/v1/servers/localhost/zones/{lab.zone} 401"
    wait_for(lambda: logged in authority(lab).api_requests())
    assert lab.auth_query(owner, "TLSA").rcode() == dns.rcode.NXDOMAIN


def test_pdns_ini_names_the_api(pdns_lab: Lab, tmp_path: Path) -> None:
    pdns = authority(pdns_lab)
    ini = pdns.ini(tmp_path / "pdns.ini")
    assert ini.stat().st_mode & 0o777 == 0o600
    assert ini.read_text().splitlines() == [
        f"dns_powerdns_api_url = {pdns.api_url}",
        f"dns_powerdns_api_key = {pdns.api_key}",
    ]


def test_pdns_restart_keeps_zone_state(pdns_lab: Lab) -> None:
    lab = pdns_lab
    owner = f"_443._tcp.www.{lab.zone}"
    record = random_tlsa()
    lab.publish(owner, "TLSA", record)
    lab.stop_authority(hard=True)
    with pytest.raises(dns.exception.Timeout):
        lab.auth_query(owner, "TLSA", timeout=0.5)
    lab.start_authority()
    assert lab.wait_signed(owner, "TLSA", expect=[record], timeout=2) is not None
    lab.flush_resolver(owner, "TLSA")
    answer = lab.resolver_query(owner, "TLSA")
    assert answer.flags & dns.flags.AD and tlsa_texts(answer) == [record]


def test_certbot_issues_through_pdns(pdns_lab: Lab, tmp_path: Path) -> None:
    """certbot-dns-rfc2136's DNS-01 challenge, checked by Pebble at PowerDNS."""
    issue(pdns_lab, tmp_path, "mail.dane.test")
