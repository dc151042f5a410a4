"""The lab itself works: signed zone, validating resolver, RFC 2136 updates,
DANE checks against a live TLS service, and real issuance from Pebble."""

from __future__ import annotations

import datetime
import secrets
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certbot_dane.tlsa import load_pem_chain

from . import DaneService, Lab, Prober, dane_check, pki
from .fixtures import running_lab
from .lab import LabZone

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from running_lab(tmp_path_factory.mktemp("lab"))


def random_tlsa() -> str:
    return f"3 1 1 {secrets.token_hex(32)}"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def serve_cert(directory: Path, host: str) -> x509.Certificate:
    """Write a fresh self-signed key pair for ``host`` as a service expects it."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = pki.make_leaf([host])
    (directory / "fullchain.pem").write_bytes(pki.cert_pem(cert))
    pki.write_private(directory / "privkey.pem", pki.key_pem(key))
    return cert


def test_zone_is_signed_and_validates(lab: Lab) -> None:
    at_bind = lab.auth_query(lab.zone, "DNSKEY")
    assert at_bind.rcode() == dns.rcode.NOERROR
    assert any(r.rdtype == dns.rdatatype.RRSIG for r in at_bind.answer)

    soa = lab.resolver_query(lab.zone, "SOA")
    assert soa.rcode() == dns.rcode.NOERROR
    assert soa.flags & dns.flags.AD
    soa_rdata = soa.answer[0][0]
    assert soa_rdata.minimum == lab.record_ttl  # negative answers cached no longer

    for host in ("mail", "www", "ns1"):
        answer = lab.resolver_query(f"{host}.{lab.zone}", "A")
        assert answer.flags & dns.flags.AD, host
        a = next(r for r in answer.answer if r.rdtype == dns.rdatatype.A)
        assert [rd.address for rd in a] == ["127.0.0.1"]
        assert a.ttl <= lab.record_ttl

    # Authenticated denial for a name that does not exist.
    missing = lab.resolver_query(f"nothing-here.{lab.zone}", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.flags & dns.flags.AD


def test_signed_update_is_published_and_validates(lab: Lab) -> None:
    owner = f"_25._tcp.mail.{lab.zone}"
    record = random_tlsa()
    update = lab.update()
    update.replace(owner, lab.record_ttl, "TLSA", record)
    assert lab.send_update(update) == dns.rcode.NOERROR

    at_bind = lab.wait_signed(owner, "TLSA", expect=[record])
    assert at_bind is not None and at_bind.ttl == lab.record_ttl

    lab.flush_resolver(owner, "TLSA")
    answer = lab.resolver_query(owner, "TLSA")
    assert answer.flags & dns.flags.AD
    tlsa = next(r for r in answer.answer if r.rdtype == dns.rdatatype.TLSA)
    assert [rd.to_text() for rd in tlsa] == [record]

    lab.unpublish(owner, "TLSA")
    gone = lab.resolver_query(owner, "TLSA")
    assert not any(r.rdtype == dns.rdatatype.TLSA for r in gone.answer)
    assert gone.flags & dns.flags.AD  # the denial is signed too


def test_update_without_key_is_refused(lab: Lab) -> None:
    owner = f"_26._tcp.mail.{lab.zone}"
    update = lab.update(signed=False)
    update.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    assert lab.send_update(update) == dns.rcode.REFUSED

    # A key BIND does not know is rejected as well.
    stranger = dns.update.UpdateMessage(
        lab.zone,
        keyring=dns.tsigkeyring.from_text({"stranger-key": ("hmac-sha256", lab.tsig_secret)}),
        keyname=dns.name.from_text("stranger-key"),
        keyalgorithm=dns.tsig.HMAC_SHA256,
    )
    stranger.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    with pytest.raises(dns.tsig.PeerError):
        lab.send_update(stranger)

    assert lab.auth_query(owner, "TLSA").rcode() == dns.rcode.NXDOMAIN


def test_dane_check_against_live_service(lab: Lab, tmp_path: Path) -> None:
    host = f"www.{lab.zone}".rstrip(".")
    cert = serve_cert(tmp_path / "live", host)
    matching = f"3 1 1 {pki.spki_sha256(cert)}"
    with DaneService(tmp_path / "live") as service:
        owner = f"_{service.port}._tcp.{host}."

        absent = dane_check(host, service.port, lab.resolver, owner)
        assert not absent.ok and absent.reason == "NXDOMAIN"

        lab.publish(owner, "TLSA", matching)
        # BIND itself never sets AD: a client must not trust its answer.
        unvalidated = dane_check(host, service.port, lab.auth_address, owner)
        assert not unvalidated.ok and unvalidated.reason == "no AD"

        good = dane_check(host, service.port, lab.resolver, owner)
        assert good.ok, good.output
        assert "matched EE certificate" in good.reason
        assert good.records == (matching,)

        lab.publish(owner, "TLSA", random_tlsa())
        bad = dane_check(host, service.port, lab.resolver, owner)
        assert not bad.ok
        assert bad.reason == "no matching DANE TLSA records"

        # During a rollover both the current and the next key are published.
        lab.publish(owner, "TLSA", random_tlsa(), matching)
        both = dane_check(host, service.port, lab.resolver, owner)
        assert both.ok, both.output
        assert len(both.records) == 2

        # Handlers run in their own threads: let them record the last one.
        wait_for(lambda: service.handshakes + service.handshake_errors == 3)
        assert service.connections == 3  # NXDOMAIN and "no AD" made no connection
        assert service.handshakes == 2
        assert service.handshake_errors == 1  # the client aborted on the mismatch
        assert service.load_errors == 0


def test_service_reloads_certificate_per_connection(lab: Lab, tmp_path: Path) -> None:
    host = f"mail.{lab.zone}".rstrip(".")
    first = serve_cert(tmp_path / "svc", host)
    with DaneService(tmp_path / "svc") as service:
        owner = f"_{service.port}._tcp.{host}."
        lab.publish(owner, "TLSA", f"3 1 1 {pki.spki_sha256(first)}")
        assert dane_check(host, service.port, lab.resolver, owner).ok

        # A new key pair on disk is served at the next connection: the old
        # record no longer matches.
        serve_cert(tmp_path / "svc", host)
        assert dane_check(host, service.port, lab.resolver, owner).reason == (
            "no matching DANE TLSA records"
        )

        # Unreadable key pair: the connection fails, the error is counted.
        (tmp_path / "svc" / "privkey.pem").unlink()
        assert not dane_check(host, service.port, lab.resolver, owner).ok
        wait_for(lambda: service.load_errors == 1)


def test_prober_samples_in_background(lab: Lab, tmp_path: Path) -> None:
    host = f"www.{lab.zone}".rstrip(".")
    cert = serve_cert(tmp_path / "p", host)
    with DaneService(tmp_path / "p") as service:
        owner = f"_{service.port}._tcp.{host}."
        lab.publish(owner, "TLSA", f"3 1 1 {pki.spki_sha256(cert)}")
        with Prober(host, service.port, lab.resolver, owner, interval_ms=100) as prober:
            time.sleep(1.0)
        assert len(prober.successes) >= 3
        assert prober.failures == []

        lab.publish(owner, "TLSA", random_tlsa())
        with Prober(host, service.port, lab.resolver, owner, interval_ms=100) as prober:
            time.sleep(0.5)
        assert prober.successes == []
        assert {s.reason for s in prober.failures} == {"no matching DANE TLSA records"}


def test_bind_restart_keeps_zone_state(lab: Lab) -> None:
    owner = f"_443._tcp.www.{lab.zone}"
    record = random_tlsa()
    lab.publish(owner, "TLSA", record)

    # Killed outright, not shut down cleanly: the journal alone must carry
    # the update over.
    lab.stop_authority(hard=True)
    with pytest.raises(dns.exception.Timeout):
        lab.auth_query(owner, "TLSA", timeout=0.5)
    lab.start_authority()

    assert lab.wait_signed(owner, "TLSA", expect=[record], timeout=2) is not None
    lab.flush_resolver(owner, "TLSA")
    answer = lab.resolver_query(owner, "TLSA")
    assert answer.flags & dns.flags.AD
    assert [rd.to_text() for r in answer.answer if r.rdtype == dns.rdatatype.TLSA for rd in r] == [
        record
    ]


def lifetime(cert: x509.Certificate) -> datetime.timedelta:
    # The *_utc properties exist from cryptography 42 on; older ones lack them.
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after - cert.not_valid_before


def issue(lab: Lab, tmp_path: Path, domain: str) -> x509.Certificate:
    ini = lab.rfc2136_ini(tmp_path / "rfc2136.ini")
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    config_dir = tmp_path / "certbot" / "config"
    result = lab.run_certbot(
        config_dir,
        "certonly",
        "-a",
        "dns-rfc2136",
        "--dns-rfc2136-credentials",
        str(ini),
        "--dns-rfc2136-propagation-seconds",
        "1",
        "-d",
        domain,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fullchain = config_dir / "live" / domain / "fullchain.pem"
    chain = load_pem_chain(fullchain.read_bytes())
    leaf = chain[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [domain]

    # Issued by Pebble's current intermediate, which its root signed.
    # (openssl, not cryptography: Debian 12's cryptography 38 cannot verify.)
    root, intermediate = load_pem_chain(lab.pebble_roots().encode())
    anchors = config_dir / "pebble-root.pem"
    untrusted = config_dir / "pebble-intermediate.pem"
    anchors.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    untrusted.write_bytes(intermediate.public_bytes(serialization.Encoding.PEM))
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(anchors), "-untrusted", str(untrusted),
         str(config_dir / "live" / domain / "cert.pem")],
        capture_output=True, text=True, check=False,
    )
    assert verified.returncode == 0 and ": OK" in verified.stdout, verified.stdout + verified.stderr

    # certbot cleaned up its challenge record (BIND re-signs asynchronously).
    challenge = f"_acme-challenge.{domain}."
    lab.wait_signed(challenge, "TXT", present=False, timeout=5)
    assert lab.auth_query(challenge, "TXT").rcode() == dns.rcode.NXDOMAIN
    return leaf


def test_certbot_issues_from_pebble(lab: Lab, tmp_path: Path) -> None:
    cmd = lab.certbot_cmd(tmp_path / "c" / "config", "renew")
    assert "--no-random-sleep-on-renew" not in cmd
    assert cmd[cmd.index("--server") + 1] == lab.acme_url

    leaf = issue(lab, tmp_path, "mail.dane.test")
    assert lifetime(leaf) > datetime.timedelta(days=365)  # Pebble's default: 5 years


def test_second_lab_with_options(lab: Lab, tmp_path: Path) -> None:
    # Runs next to the module's lab: ports must not collide.
    started: Lab | None = None
    for other in running_lab(tmp_path / "lab", ttl=5, cert_validity=3600):
        assert other.auth_port not in (lab.auth_port, lab.resolver_port)
        soa = other.resolver_query(other.zone, "SOA")
        assert soa.flags & dns.flags.AD
        assert soa.answer[0].ttl <= 5 and soa.answer[0][0].minimum == 5

        leaf = issue(other, tmp_path, "www.dane.test")
        assert abs(lifetime(leaf).total_seconds() - 3600) <= 60
        started = other
    assert started is not None and not started.running


def test_extra_zones_validate_and_one_refuses_the_lab_key(tmp_path: Path) -> None:
    zones = ("alias.test.", LabZone("locked.test.", updates=False))
    for other in running_lab(tmp_path / "lab", extra_zones=zones):
        assert other.zones == ("dane.test.", "alias.test.", "locked.test.")
        for zone in other.zones:
            soa = other.resolver_query(zone, "SOA")
            assert soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AD, zone
        other.publish("x.alias.test.", "TXT", '"ok"')
        other.publish("x.locked.test.", "TXT", '"ok"')  # with the other key
        refused = dns.update.UpdateMessage(
            "locked.test.",
            keyring=other.keyring(),
            keyname=dns.name.from_text(other.tsig_name),
            keyalgorithm=dns.tsig.HMAC_SHA256,
        )
        refused.add("y.locked.test.", 30, "TXT", '"no"')
        assert other.send_update(refused) == dns.rcode.REFUSED
        assert other.zone_for("_25._tcp.x.locked.test.") == "locked.test."


def test_pebble_restart_gives_a_new_intermediate_key(lab: Lab) -> None:
    before = load_pem_chain(lab.pebble_intermediate().encode())[0]
    after = load_pem_chain(lab.restart_pebble().encode())[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert before.public_key().public_bytes(der, spki) != after.public_key().public_bytes(der, spki)
