"""TLSA targets and records: spec parsing and certificate association data.

A *target* says which TLSA record set to maintain (``311:25`` means usage 3,
selector 1, matching type 1 at ``_25._tcp.<each name of the certificate>``).
A *record* is one concrete TLSA record at one owner name, derived from one
certificate version. Records are plain, hashable values so that the rollover
core can reason about sets of them without touching DNS.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
from cryptography import x509
from cryptography.hazmat.primitives import serialization

USAGES = (2, 3)
SELECTORS = (0, 1)
MATCHING_TYPES = (0, 1, 2)

_SPEC = re.compile(
    r"^(?P<ust>\d{3}):(?P<port>\d{1,5})(?:/(?P<proto>[A-Za-z0-9-]+))?(?:@(?P<host>[^@\s]+))?$"
)


class SpecError(ValueError):
    """A ``--dane-tlsa`` spec that cannot be parsed; the message names the bad part."""


@dataclass(frozen=True)
class Target:
    """One TLSA record set to maintain for a lineage."""

    usage: int
    selector: int
    mtype: int
    port: int
    proto: str = "tcp"
    host: str | None = None

    def spec(self) -> str:
        text = f"{self.usage}{self.selector}{self.mtype}:{self.port}"
        if self.proto != "tcp":
            text += f"/{self.proto}"
        if self.host:
            text += f"@{self.host}"
        return text

    def owners(self, cert_names: Iterable[str]) -> list[str]:
        """Owner names (absolute, lower case) this target covers for a certificate."""
        hosts = [self.host] if self.host else [n for n in cert_names if not n.startswith("*.")]
        return sorted({owner_name(self.port, self.proto, h) for h in hosts})


def owner_name(port: int, proto: str, host: str) -> str:
    name = dns.name.from_text(f"_{port}._{proto}.{host.rstrip('.')}")
    return name.to_text().lower()


def parse_spec(text: str) -> Target:
    part = text.strip()
    match = _SPEC.match(part)
    if not match:
        raise SpecError(
            f"bad TLSA spec {part!r}: expected UST:PORT[/PROTO][@HOST], e.g. 311:25 or "
            "312:443/tcp@www.example.com"
        )
    usage, selector, mtype = (int(c) for c in match["ust"])
    if usage not in USAGES:
        raise SpecError(f"bad TLSA spec {part!r}: usage {usage} is not 2 (DANE-TA) or 3 (DANE-EE)")
    if selector not in SELECTORS:
        raise SpecError(f"bad TLSA spec {part!r}: selector {selector} is not 0 or 1")
    if mtype not in MATCHING_TYPES:
        raise SpecError(f"bad TLSA spec {part!r}: matching type {mtype} is not 0, 1 or 2")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise SpecError(f"bad TLSA spec {part!r}: port {port} is not in 1-65535")
    host = match["host"]
    if host is not None:
        try:
            dns.name.from_text(host)
        except dns.exception.DNSException as err:
            raise SpecError(
                f"bad TLSA spec {part!r}: host {host!r} is not a DNS name ({err})"
            ) from None
        if "*" in host:
            raise SpecError(f"bad TLSA spec {part!r}: a wildcard host has no TLSA owner name")
        if not host.strip("."):
            raise SpecError(f"bad TLSA spec {part!r}: the host after @ is empty")
    proto = (match["proto"] or "tcp").lower()
    return Target(usage, selector, mtype, port, proto, host.lower().rstrip(".") if host else None)


def parse_specs(text: str) -> tuple[Target, ...]:
    """Parse the comma-separated ``--dane-tlsa`` value; duplicates collapse."""
    parts = [p for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise SpecError("no TLSA spec given: pass --dane-tlsa, e.g. --dane-tlsa 311:25")
    return tuple(sorted(set(parse_spec(p) for p in parts), key=Target.spec))


def format_specs(targets: Iterable[Target]) -> str:
    return ",".join(t.spec() for t in targets)


@dataclass(frozen=True, order=True)
class Record:
    """One TLSA record at one owner name. ``data`` is lower-case hex."""

    owner: str
    usage: int
    selector: int
    mtype: int
    data: str

    def rdata(self) -> dns.rdtypes.ANY.TLSA.TLSA:
        return dns.rdtypes.ANY.TLSA.TLSA(
            dns.rdataclass.IN,
            dns.rdatatype.TLSA,
            self.usage,
            self.selector,
            self.mtype,
            bytes.fromhex(self.data),
        )

    @classmethod
    def from_rdata(cls, owner: str, rdata: dns.rdtypes.ANY.TLSA.TLSA) -> Record:
        return cls(owner.lower(), rdata.usage, rdata.selector, rdata.mtype, rdata.cert.hex())

    def zone_line(self, ttl: int) -> str:
        return f"{self.owner} {ttl} IN TLSA {self.usage} {self.selector} {self.mtype} {self.data}"

    def short(self) -> str:
        return f"{self.owner} TLSA {self.usage} {self.selector} {self.mtype} {self.data[:16]}..."


def association(cert: x509.Certificate, selector: int, mtype: int) -> str:
    """The certificate association data (RFC 6698 section 2.1), lower-case hex."""
    if selector == 0:
        blob = cert.public_bytes(serialization.Encoding.DER)
    else:
        blob = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if mtype == 1:
        return hashlib.sha256(blob).hexdigest()
    if mtype == 2:
        return hashlib.sha512(blob).hexdigest()
    return blob.hex()


_PEM_END = b"-----END CERTIFICATE-----"


def load_pem_chain(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in order.

    Done block by block because ``x509.load_pem_x509_certificates`` needs
    cryptography 39, and Debian 12 ships 38.
    """
    blocks = [b + _PEM_END for b in pem.split(_PEM_END) if b"-----BEGIN CERTIFICATE-----" in b]
    if not blocks:
        raise ValueError("no PEM certificate found")
    return [x509.load_pem_x509_certificate(block) for block in blocks]


def cert_names(cert: x509.Certificate) -> list[str]:
    """DNS names of a certificate (SAN, else CN), lower case; IP addresses skipped."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ]
    return sorted({n.lower().rstrip(".") for n in names})


def is_ca(cert: x509.Certificate) -> bool:
    """Does the certificate say it is a CA (BasicConstraints CA true)?"""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def host_names(cert: x509.Certificate) -> list[str]:
    """:func:`cert_names` that are host names (a CA's common name, such as
    "R3" or "Pebble Intermediate CA 2d7a", is not)."""
    return [n for n in cert_names(cert) if _HOST_NAME.fullmatch(n)]


_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)+")


def records_for_subject(
    targets: Iterable[Target], subject: x509.Certificate, names: Iterable[str]
) -> frozenset[Record]:
    """The records that hash ``subject`` itself for every target, usage 2 and 3 alike,
    at the owner names of ``names`` (or of a target's own host)."""
    hosts = list(names)
    return frozenset(
        Record(owner, t.usage, t.selector, t.mtype, association(subject, t.selector, t.mtype))
        for t in targets
        for owner in t.owners(hosts)
    )


def records_for(
    targets: Iterable[Target], leaf: x509.Certificate, issuer: x509.Certificate | None
) -> frozenset[Record]:
    """The TLSA records one certificate version needs for the given targets.

    Usage 3 (DANE-EE) hashes the leaf; usage 2 (DANE-TA) hashes the issuing
    certificate, the first one of the chain, which the service must send.
    """
    names = cert_names(leaf)
    records = set()
    for target in targets:
        subject = leaf if target.usage == 3 else issuer
        if subject is None:
            raise ValueError(f"usage 2 target {target.spec()} needs a chain, but it is empty")
        data = association(subject, target.selector, target.mtype)
        for owner in target.owners(names):
            records.add(Record(owner, target.usage, target.selector, target.mtype, data))
    return frozenset(records)
