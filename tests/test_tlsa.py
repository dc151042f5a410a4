"""Tests for certbot_dane.tlsa: spec parsing, owner names, association data, records."""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import shutil
import subprocess

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certbot_dane.tlsa import (
    Record,
    SpecError,
    Target,
    association,
    cert_names,
    format_specs,
    load_pem_chain,
    owner_name,
    parse_spec,
    parse_specs,
    records_for,
)

# Certificates -------------------------------------------------------------------

_EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def _make_cert(
    key,
    subject_cn: str,
    *,
    sans: list[x509.GeneralName] | None = None,
    issuer_key=None,
    issuer_name: x509.Name | None = None,
    ca: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_EPOCH)
        .not_valid_after(_EPOCH + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ca(rsa_key):
    return _make_cert(rsa_key, "Test CA", ca=True)


@pytest.fixture(scope="module")
def leaf(ec_key, rsa_key, ca):
    sans = [
        x509.DNSName("Mail.Example.COM"),
        x509.DNSName("*.example.com"),
        x509.DNSName("smtp.example.com."),
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
    ]
    return _make_cert(ec_key, "mail.example.com", sans=sans, issuer_key=rsa_key,
                      issuer_name=ca.subject)


@pytest.fixture(scope="module", params=["rsa", "ec"])
def self_signed(request, rsa_key, ec_key):
    key = rsa_key if request.param == "rsa" else ec_key
    return _make_cert(key, f"{request.param}.example.net",
                      sans=[x509.DNSName(f"{request.param}.example.net")])


# Spec parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("311:25", Target(3, 1, 1, 25, "tcp", None)),
        ("  311:25  ", Target(3, 1, 1, 25, "tcp", None)),
        ("200:1", Target(2, 0, 0, 1, "tcp", None)),
        ("312:65535", Target(3, 1, 2, 65535, "tcp", None)),
        ("211:443/tcp@www.example.com", Target(2, 1, 1, 443, "tcp", "www.example.com")),
        ("301:853/UDP", Target(3, 0, 1, 853, "udp", None)),
        ("311:443/sctp@WWW.Example.Com.", Target(3, 1, 1, 443, "sctp", "www.example.com")),
        ("311:00025", Target(3, 1, 1, 25, "tcp", None)),
    ],
)
def test_parse_spec_valid(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    "text", ["311:25", "211:443@www.example.com", "312:853/udp", "300:5061/sctp@sip.example.org"]
)
def test_spec_round_trip(text):
    target = parse_spec(text)
    assert target.spec() == text
    assert parse_spec(target.spec()) == target


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "''"),
        ("31:25", "'31:25'"),
        ("3111:25", "'3111:25'"),
        ("311-25", "'311-25'"),
        ("311:", "'311:'"),
        ("abc:25", "'abc:25'"),
        ("311:25/", "'311:25/'"),
        ("311:25@", "'311:25@'"),
        ("311:123456", "'311:123456'"),
        ("311:25/t_p", "'311:25/t_p'"),
        ("311:25@a b", "'311:25@a b'"),
        ("311:25@a@b", "'311:25@a@b'"),
        ("011:25", "usage 0"),
        ("111:25", "usage 1"),
        ("411:25", "usage 4"),
        ("321:25", "selector 2"),
        ("391:25", "selector 9"),
        ("313:25", "matching type 3"),
        ("319:25", "matching type 9"),
        ("311:0", "port 0"),
        ("311:65536", "port 65536"),
        ("311:99999", "port 99999"),
        ("311:25@a..example.com", "host 'a..example.com'"),
        ("311:25@" + "x" * 64 + ".example.com", "host 'xxxx"),
        ("311:25@*.example.com", "wildcard"),
    ],
)
def test_parse_spec_invalid_names_the_bad_part(text, named):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    assert named in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["311:25@.", "311:25@*"])
def test_parse_spec_rejects_root_and_bare_wildcard_host(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_parse_specs_sorts_and_collapses_duplicates():
    targets = parse_specs("311:443, 211:25@mx.example.com,311:443,,311:25 , 311:00443")
    assert targets == (
        Target(2, 1, 1, 25, "tcp", "mx.example.com"),
        Target(3, 1, 1, 25, "tcp", None),
        Target(3, 1, 1, 443, "tcp", None),
    )
    assert format_specs(targets) == "211:25@mx.example.com,311:25,311:443"
    assert parse_specs(format_specs(targets)) == targets


@pytest.mark.parametrize("text", ["", " ", ",", " , ,", None])
def test_parse_specs_empty(text):
    with pytest.raises(SpecError, match="no TLSA spec given"):
        parse_specs(text)


def test_parse_specs_names_the_bad_part_among_good_ones():
    with pytest.raises(SpecError) as info:
        parse_specs("311:25,341:443,211:25")
    assert "'341:443'" in str(info.value)
    assert "selector 4" in str(info.value)


# Owner names ---------------------------------------------------------------------


def test_owners_skip_wildcards_and_normalise():
    target = parse_spec("311:25")
    names = ["example.com", "*.example.com", "WWW.Example.com.", "example.com"]
    assert target.owners(names) == ["_25._tcp.example.com.", "_25._tcp.www.example.com."]


def test_owners_only_wildcards_gives_nothing():
    assert parse_spec("311:443").owners(["*.example.com"]) == []


def test_owners_with_host_ignore_certificate_names():
    target = parse_spec("211:853/udp@DNS.Example.org")
    assert target.owners(["example.com", "*.example.com"]) == ["_853._udp.dns.example.org."]


def test_owner_name_is_absolute_lower_case():
    assert owner_name(25, "tcp", "MX.Example.COM.") == "_25._tcp.mx.example.com."
    assert dns.name.from_text(owner_name(443, "tcp", "a.b")).is_absolute()


# Certificate names -----------------------------------------------------------------


def test_cert_names_from_san_lower_case_ip_skipped(leaf):
    assert cert_names(leaf) == ["*.example.com", "mail.example.com", "smtp.example.com"]


def test_cert_names_fall_back_to_cn(ca):
    assert cert_names(ca) == ["test ca"]


def test_load_pem_chain_keeps_order(leaf, ca):
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))
    assert load_pem_chain(pem) == [leaf, ca]


# Association data ----------------------------------------------------------------

_openssl = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(_openssl is None, reason="openssl CLI not installed")


def _openssl_run(args: list[str], data: bytes) -> bytes:
    return subprocess.run(
        [_openssl, *args], input=data, stdout=subprocess.PIPE, check=True
    ).stdout


def _openssl_blob(cert: x509.Certificate, selector: int) -> bytes:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if selector == 0:
        return _openssl_run(["x509", "-outform", "DER"], pem)
    pubkey_pem = _openssl_run(["x509", "-noout", "-pubkey"], pem)
    return _openssl_run(["pkey", "-pubin", "-outform", "DER"], pubkey_pem)


def _openssl_association(cert: x509.Certificate, selector: int, mtype: int) -> str:
    blob = _openssl_blob(cert, selector)
    if mtype == 0:
        return blob.hex()
    digest = {1: "-sha256", 2: "-sha512"}[mtype]
    return _openssl_run(["dgst", digest, "-binary"], blob).hex()


@needs_openssl
@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_association_matches_openssl(self_signed, selector, mtype):
    expected = _openssl_association(self_signed, selector, mtype)
    got = association(self_signed, selector, mtype)
    assert got == expected
    assert got == got.lower()
    if mtype == 1:
        assert len(got) == 64
    if mtype == 2:
        assert len(got) == 128


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
def test_association_selector_1_hashes_the_key_that_signed(request, key_name):
    # Independent of the certificate parser: the SPKI comes from the key object.
    key = request.getfixturevalue(key_name)
    cert = _make_cert(key, "k.example.net")
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert association(cert, 1, 0) == spki.hex()
    assert association(cert, 1, 1) == hashlib.sha256(spki).hexdigest()
    assert association(cert, 1, 2) == hashlib.sha512(spki).hexdigest()


def test_association_selector_1_survives_reissue_selector_0_does_not(ec_key):
    # Two certificates with the same key: the SPKI hash is the same (key reuse),
    # the full-certificate hash is not.
    first = _make_cert(ec_key, "a.example.net")
    second = _make_cert(ec_key, "a.example.net")
    assert association(first, 1, 1) == association(second, 1, 1)
    assert association(first, 0, 1) != association(second, 0, 1)


# Records -------------------------------------------------------------------------


def test_records_for_usage_3_hashes_the_leaf(leaf, ca):
    records = records_for(parse_specs("311:25,301:465"), leaf, ca)
    spki = association(leaf, 1, 1)
    full = association(leaf, 0, 1)
    assert records == {
        Record("_25._tcp.mail.example.com.", 3, 1, 1, spki),
        Record("_25._tcp.smtp.example.com.", 3, 1, 1, spki),
        Record("_465._tcp.mail.example.com.", 3, 0, 1, full),
        Record("_465._tcp.smtp.example.com.", 3, 0, 1, full),
    }


def test_records_for_usage_2_hashes_the_issuer(leaf, ca):
    records = records_for(parse_specs("211:25@mx.example.com,202:25@mx.example.com"), leaf, ca)
    assert records == {
        Record("_25._tcp.mx.example.com.", 2, 1, 1, association(ca, 1, 1)),
        Record("_25._tcp.mx.example.com.", 2, 0, 2, association(ca, 0, 2)),
    }
    assert association(ca, 1, 1) != association(leaf, 1, 1)


def test_records_for_usage_2_without_chain_is_an_error(leaf):
    with pytest.raises(ValueError, match="211:25"):
        records_for(parse_specs("211:25"), leaf, None)


def test_records_for_usage_3_needs_no_chain(leaf):
    assert len(records_for(parse_specs("311:25"), leaf, None)) == 2


def test_records_for_only_wildcards_gives_nothing(rsa_key):
    cert = _make_cert(rsa_key, "x", sans=[x509.DNSName("*.example.com")])
    assert records_for(parse_specs("311:25"), cert, None) == frozenset()


@pytest.mark.parametrize("spec", ["311:25", "300:25", "302:25", "211:25", "200:25", "212:25"])
def test_record_rdata_round_trips_through_dnspython(leaf, ca, spec):
    (record, *_) = sorted(records_for(parse_specs(spec), leaf, ca))
    line = record.zone_line(300)
    owner, ttl, rdclass, rdtype, *rdata_tokens = line.split()
    assert (owner, ttl, rdclass, rdtype) == (record.owner, "300", "IN", "TLSA")
    parsed = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, " ".join(rdata_tokens))
    assert parsed == record.rdata()
    assert (parsed.usage, parsed.selector, parsed.mtype) == (
        record.usage,
        record.selector,
        record.mtype,
    )
    assert Record.from_rdata(owner.upper(), parsed) == record
    rrset = dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, " ".join(rdata_tokens))
    assert rrset.name == dns.name.from_text(record.owner)
    assert list(rrset) == [record.rdata()]
    # The wire form is what a resolver returns: it survives too.
    wire = record.rdata().to_wire()
    back = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.TLSA, wire, 0, len(wire))
    assert Record.from_rdata(record.owner, back) == record


def test_record_short_and_ordering():
    a = Record("_25._tcp.a.example.", 3, 1, 1, "ab" * 32)
    b = Record("_25._tcp.b.example.", 3, 1, 1, "00" * 32)
    assert sorted([b, a]) == [a, b]
    assert a.short() == "_25._tcp.a.example. TLSA 3 1 1 abababababababab..."
    assert len({a, Record(a.owner, 3, 1, 1, "ab" * 32)}) == 1
