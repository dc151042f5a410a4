"""Looking at DNS: authoritative servers, the validating resolver, TTLs.

"Visible" is decided here from what servers answer, never from what a store
says it did: every authoritative server of the zone must serve each record
with a signature, and the validating resolver must return each record with
the AD bit. Answers without AD never count.
"""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from .tlsa import Record

Address = tuple[str, int]


class ObserveError(Exception):
    """DNS could not be asked; the message names the server and the question."""


@dataclass(frozen=True)
class Observation:
    authoritative: bool
    validated: bool
    ttl: int | None
    detail: str = ""


def parse_address(text: str, default_port: int = 53) -> Address:
    """``ADDR``, ``ADDR:PORT`` or ``[V6]:PORT``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected [V6]:PORT")
        port = rest[1:] or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {text!r}: expected ADDR or ADDR:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad address {text!r}: {host!r} is not an IP address") from None
    return host, int(port)


def parse_addresses(text: str | None) -> list[Address]:
    return [parse_address(p) for p in (text or "").split(",") if p.strip()]


def system_resolver() -> Address:
    try:
        return dns.resolver.Resolver().nameservers[0], 53
    except (dns.resolver.NoResolverConfiguration, IndexError):
        raise ObserveError(
            "no system resolver configured; pass --dane-resolver ADDR[:PORT] (a "
            "DNSSEC-validating resolver)"
        ) from None


class Observer:
    """Asks DNS about TLSA records; counts its queries (for benchmarks and tests)."""

    def __init__(
        self,
        resolver: Address,
        nameservers: list[Address] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.resolver = resolver
        self.nameservers = nameservers or None
        self.timeout = timeout
        self.queries = 0
        self._count_lock = threading.Lock()
        self._authorities: dict[str, list[Address]] = {}

    # Plumbing -------------------------------------------------------------

    def _count(self) -> None:
        # observe() asks several servers from a thread pool.
        with self._count_lock:
            self.queries += 1

    def _ask(self, query: dns.message.Message, server: Address, what: str) -> dns.message.Message:
        self._count()
        try:
            response, _ = dns.query.udp_with_fallback(
                query, server[0], timeout=self.timeout, port=server[1]
            )
        except (dns.exception.DNSException, OSError, ValueError) as err:
            reason = "timed out" if isinstance(err, dns.exception.Timeout) else str(err)
            raise ObserveError(f"cannot {what} at {server[0]}:{server[1]}: {reason}") from None
        return response

    def _resolver(self) -> dns.resolver.Resolver:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [self.resolver[0]]
        res.port = self.resolver[1]
        res.lifetime = self.timeout
        return res

    def authorities(self, owner: str) -> list[Address]:
        """The zone's authoritative servers: the override, else its NS records."""
        if self.nameservers:
            return self.nameservers
        zone = self.zone_of(owner)
        if zone in self._authorities:
            return self._authorities[zone]
        res = self._resolver()
        try:
            self._count()
            ns_names = [rd.target for rd in res.resolve(zone, "NS")]
            addresses: list[Address] = []
            for ns in ns_names:
                for rdtype in ("A", "AAAA"):
                    try:
                        self._count()
                        addresses += [(rd.address, 53) for rd in res.resolve(ns, rdtype)]
                    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                        pass
        except dns.exception.DNSException as err:
            raise ObserveError(f"cannot find the name servers of {zone}: {err}") from None
        if not addresses:
            raise ObserveError(f"the name servers of {zone} have no addresses")
        self._authorities[zone] = sorted(set(addresses))
        return self._authorities[zone]

    def zone_of(self, owner: str) -> str:
        try:
            self._count()
            return dns.resolver.zone_for_name(owner, resolver=self._resolver()).to_text()
        except dns.exception.DNSException as err:
            raise ObserveError(f"cannot find the zone of {owner}: {err}") from None

    # Questions ------------------------------------------------------------

    def authoritative_view(self, owner: str, server: Address) -> tuple[set[Record], bool, int]:
        """(records, signed, ttl) served by one authoritative server.

        For an empty answer, ``ttl`` is the negative TTL from the SOA: how
        long a resolver may cache "no such records".
        """
        query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=True)
        query.flags &= ~dns.flags.RD
        response = self._ask(query, server, f"ask for TLSA at {owner}")
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise ObserveError(
                f"{server[0]}:{server[1]} answered {dns.rcode.to_text(rcode)} for TLSA at {owner}"
            )
        name = dns.name.from_text(owner)
        records: set[Record] = set()
        signed = False
        ttl: int | None = None
        for rrset in response.answer:
            if rrset.name != name:
                continue
            if rrset.rdtype == dns.rdatatype.TLSA:
                records = {Record.from_rdata(owner, rd) for rd in rrset}
                ttl = rrset.ttl
            elif rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == dns.rdatatype.TLSA:
                signed = True
        if ttl is None:
            ttl = _negative_ttl(response)
        return records, signed, ttl

    def prior_ttl(self, owners: Iterable[str]) -> int:
        """The longest time any cache may keep what it now has for these owners."""
        ttls = [0]
        for owner in sorted(set(owners)):
            for server in self.authorities(owner):
                ttls.append(self.authoritative_view(owner, server)[2])
        return max(ttls)

    def validated(self, owner: str) -> tuple[set[Record], bool]:
        """(records, AD) as the validating resolver returns them."""
        query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=True)
        query.flags |= dns.flags.AD
        response = self._ask(query, self.resolver, f"resolve TLSA at {owner}")
        ad = bool(response.flags & dns.flags.AD)
        if response.rcode() != dns.rcode.NOERROR:
            return set(), False
        name = dns.name.from_text(owner)
        for rrset in response.answer:
            if rrset.name == name and rrset.rdtype == dns.rdatatype.TLSA:
                return {Record.from_rdata(owner, rd) for rd in rrset}, ad
        return set(), ad

    def observe(self, records: Iterable[Record]) -> Observation:
        """Are these records on every authoritative server and validated?"""
        wanted = sorted(set(records))
        owners = sorted({r.owner for r in wanted})
        jobs = [(owner, server) for owner in owners for server in self.authorities(owner)]
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(jobs)))) as pool:
            views = list(pool.map(lambda job: self.authoritative_view(*job), jobs))
        authoritative = True
        ttl = 0
        missing = ""
        for (owner, server), (found, signed, view_ttl) in zip(jobs, views, strict=True):
            ttl = max(ttl, view_ttl)
            need = {r for r in wanted if r.owner == owner}
            if not need <= found or not signed:
                authoritative = False
                what = "unsigned" if need <= found else "missing"
                missing = missing or f"{owner} {what} at {server[0]}:{server[1]}"
        validated = True
        for owner in owners:
            found, ad = self.validated(owner)
            need = {r for r in wanted if r.owner == owner}
            if not ad or not need <= found:
                validated = False
                missing = missing or f"{owner} not validated by the resolver"
        return Observation(authoritative, validated, ttl, missing)


def _negative_ttl(response: dns.message.Message) -> int:
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min(rrset.ttl, rrset[0].minimum)
    return 0
