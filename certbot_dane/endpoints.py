"""Endpoints: what the services really present, judged by DANE alone.

The links in the dane directory say which certificate a service *should*
present; a reload that returns before the old processes are gone, a reload
that fails quietly, or a second host that gets the certificate later all
keep presenting the old one. ``--dane-endpoints`` lists where the lineage's
services listen; before a record is retired, each of them is reached (with
STARTTLS where given) and its chain is matched against the records that will
remain, exactly as a DANE client matches it. An endpoint that does not match
keeps the old records in DNS.

The name the endpoint is asked for (SNI, and the DANE owner name) is the
host of a TLSA owner of the lineage: the one for the endpoint's host and port
when there is one, else those with the endpoint's port.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import tlsa
from .verify import STARTTLS_PROTOCOLS, EndpointError, fetch_chain, matches

#: Endpoints probed at once.
PROBE_WORKERS = 16
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Endpoint:
    """``HOST:PORT[/STARTTLS]``: where a service of the lineage listens."""

    host: str
    port: int
    starttls: str | None = None

    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (f"/{self.starttls}" if self.starttls else "")


def parse_endpoint(text: str) -> Endpoint:
    """One endpoint; ValueError with a message that shows the expected form."""
    part = text.strip()
    form = "expected HOST:PORT[/STARTTLS], e.g. 127.0.0.1:25/smtp or mx2.example.com:993"
    where, _, starttls = part.partition("/")
    bracketed = where.startswith("[")
    if bracketed:
        host, _, rest = where[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = where.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad endpoint {part!r}: {form}")
    if ":" in host and not bracketed:
        # 2001:db8::1:25 is an address and a port, or an address alone.
        raise ValueError(f"bad endpoint {part!r}: write an IPv6 address as [ADDR]:PORT")
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"bad endpoint {part!r}: brackets hold an IPv6 address; write a name or an "
                "IPv4 address without them"
            ) from None
    protocol = starttls.lower() or None
    if protocol is not None and protocol not in STARTTLS_PROTOCOLS:
        raise ValueError(
            f"bad endpoint {part!r}: STARTTLS {starttls!r} is not one of "
            f"{', '.join(STARTTLS_PROTOCOLS)}"
        )
    return Endpoint(host.lower().rstrip("."), int(port), protocol)


def parse_endpoints(text: str | None) -> tuple[Endpoint, ...]:
    """The comma-separated ``--dane-endpoints`` value (duplicates collapse)."""
    parts = [p for p in (text or "").split(",") if p.strip()]
    return tuple(dict.fromkeys(parse_endpoint(p) for p in parts))


def format_endpoints(endpoints: Iterable[Endpoint]) -> str:
    return ",".join(e.text() for e in endpoints)


def owners_for(endpoint: Endpoint, owners: Iterable[str]) -> list[str]:
    """The TLSA owner names a DANE client reaching ``endpoint`` would use."""
    own = sorted(set(owners))
    exact = [o for o in own if o == tlsa.owner_name(endpoint.port, "tcp", endpoint.host)]
    if exact:
        return exact
    same_port = [o for o in own if o.split(".", 1)[0] == f"_{endpoint.port}"]
    return same_port or own


def host_of(owner: str) -> str:
    """``_25._tcp.mx.example.com.`` -> ``mx.example.com``."""
    return owner.rstrip(".").split(".", 2)[2]


@dataclass(frozen=True)
class Presented:
    """What one endpoint presented: does it match the remaining records, and what is it."""

    endpoint: Endpoint
    ok: bool
    presents: str


@dataclass(frozen=True)
class Known:
    """A version the lineage knows, to name what an endpoint presents."""

    number: int
    role: str
    leaf: x509.Certificate | None
    records: frozenset[tlsa.Record]


def probe_all(
    endpoints: Sequence[Endpoint],
    remaining: dict[str, frozenset[tlsa.Record]],
    known: Sequence[Known],
    timeout: float = PROBE_TIMEOUT,
) -> list[Presented]:
    """Probe every endpoint, several at once.

    ``remaining`` maps each TLSA owner name (as certificates ask for it) to
    the records that will remain for it, wherever DNS keeps them.
    """
    def one(endpoint: Endpoint) -> Presented:
        return probe(endpoint, remaining, known, timeout)

    if len(endpoints) <= 1:
        return [one(e) for e in endpoints]
    with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(endpoints))) as pool:
        return list(pool.map(one, endpoints))


def probe(
    endpoint: Endpoint,
    remaining: dict[str, frozenset[tlsa.Record]],
    known: Sequence[Known],
    timeout: float = PROBE_TIMEOUT,
) -> Presented:
    owners = owners_for(endpoint, remaining)
    if not owners:
        return Presented(endpoint, False, "nothing: the lineage has no TLSA owner name")
    try:
        chain = fetch_chain(
            endpoint.host, endpoint.port, host_of(owners[0]), endpoint.starttls, timeout
        )
    except EndpointError as err:
        return Presented(endpoint, False, f"nothing ({err})")
    ok = all(any(matches(r, chain) for r in remaining[o]) for o in owners)
    return Presented(endpoint, ok, describe(chain, known))


def describe(chain: list[x509.Certificate], known: Sequence[Known]) -> str:
    """Which known version a chain is, in words."""
    leaf = chain[0]
    for version in known:
        if version.leaf is not None and version.leaf == leaf:
            return f"version {version.number} ({version.role})"
    for version in known:
        if version.leaf is None and any(
            matches(r, chain) for r in version.records if r.usage in (1, 3)
        ):
            return f"version {version.number} ({version.role})"
    digest = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    return f"a certificate of no version this lineage knows (SHA-256 {digest[:16]}...)"
