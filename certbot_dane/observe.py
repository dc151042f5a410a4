"""Looking at DNS: authoritative servers, the validating resolver, TTLs.

"Visible" is decided here from what servers answer, never from what a store
says it did: every authoritative server of the zone must serve each record
with a signature, and the validating resolver must return each record with
the AD bit. Answers without AD never count.

A TLSA owner name may be an alias (RFC 7671 section 7): its records then
live at the end of a CNAME chain. :meth:`Observer.aliases_many` finds where;
the authoritative servers are asked at that target (in the target's zone),
and the resolver at the original name, as a DANE client asks.

A truncated answer is never taken for the whole one: it is asked again over TCP
(:mod:`.dnsio`). Knot DNS fills a UDP answer too small for an RRset and its
RRSIG with the RRset alone, so taken as it is, a large TLSA set would look
unsigned and never become visible.
"""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from . import dnsio
from .tlsa import Record

Address = tuple[str, int]

#: Owners whose authoritative servers are looked up at once (without --dane-nameservers).
ZONE_WORKERS = 16
#: CNAMEs followed from a TLSA owner name before giving up (a loop, a misconfiguration).
MAX_CHAIN = 8


class ObserveError(Exception):
    """DNS could not be asked; the message names the server and the question."""


@dataclass(frozen=True)
class Observation:
    authoritative: bool
    validated: bool
    ttl: int | None
    detail: str = ""


@dataclass(frozen=True)
class Alias:
    """Where an owner name's records live, and the largest CNAME TTL on the way."""

    target: str
    ttl: int = 0


@dataclass(frozen=True)
class AuditView:
    """What every authoritative server serves for a group of records.

    ``aliased``: owner names that are CNAMEs now (records cannot live there).
    """

    present: frozenset[Record]
    ttls: dict[str, int]
    aliased: frozenset[str] = frozenset()


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
        # Zones of several owners are looked up from a thread pool.
        with self._count_lock:
            self.queries += 1

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
        view = _raise(self._views({owner: [server]}, resolve={})[(owner, server)])
        return view.records, view.signed, view.ttl

    def validated(self, owner: str) -> tuple[set[Record], bool]:
        """(records, AD) as the validating resolver returns them."""
        return _raise(self._views({}, resolve={owner: owner})[(owner, None)])

    def prior_ttl(self, owners: Iterable[str]) -> int:
        """The longest time any cache may keep what it now has for these owners."""
        return _raise(self.prior_ttl_many([owners])[0])

    def observe(self, records: Iterable[Record]) -> Observation:
        """Are these records on every authoritative server and validated?"""
        return _raise(self.observe_many([records])[0])

    def prior_ttl_many(self, groups: Sequence[Iterable[str]]) -> list[int | ObserveError]:
        """:meth:`prior_ttl` for each group of owners, all asked at once."""
        owners = [sorted(set(group)) for group in groups]
        servers = self._servers({o for group in owners for o in group})
        # Only TTLs matter here: no signatures asked for, smaller answers.
        views = self._views(servers, resolve={}, signed=False)
        results: list[int | ObserveError] = []
        for group in owners:
            try:
                ttls = [0] + [
                    _raise(views[(owner, server)]).ttl
                    for owner in group
                    for server in _raise(servers[owner])
                ]
                results.append(max(ttls))
            except ObserveError as err:
                results.append(err)
        return results

    def observe_many(
        self,
        groups: Sequence[Iterable[Record]],
        names: Mapping[str, Iterable[str]] | None = None,
    ) -> list[Observation | ObserveError]:
        """:meth:`observe` for each group of records, all asked at once.

        ``names`` maps a record's owner (where it lives) to the owner names
        that are aliases of it: the resolver is asked at those, as a DANE
        client would (by default at the record's owner itself).
        """
        wanted = [sorted(set(group)) for group in groups]
        owners = {r.owner for group in wanted for r in group}
        asked = {o: sorted(set((names or {}).get(o, ()))) or [o] for o in owners}
        servers = self._servers(owners)
        views = self._views(servers, resolve={n: o for o in owners for n in asked[o]})
        results: list[Observation | ObserveError] = []
        for group in wanted:
            try:
                results.append(self._judge(group, servers, views, asked))
            except ObserveError as err:
                results.append(err)
        return results

    def audit_many(self, groups: Sequence[Iterable[Record]]) -> list[AuditView | ObserveError]:
        """Which records of each group every authoritative server still serves.

        One question per owner and server, without signatures (presence and
        TTLs are all an audit needs).
        """
        wanted = [sorted(set(group)) for group in groups]
        owners = {r.owner for group in wanted for r in group}
        servers = self._servers(owners)
        views = self._views(servers, resolve={}, signed=False)
        results: list[AuditView | ObserveError] = []
        for group in wanted:
            try:
                present: set[Record] = set(group)
                ttls: dict[str, int] = {}
                aliased: set[str] = set()
                for owner in sorted({r.owner for r in group}):
                    for server in _raise(servers[owner]):
                        view = _raise(views[(owner, server)])
                        present -= {r for r in group if r.owner == owner} - view.records
                        if view.records:
                            ttls[owner] = max(ttls.get(owner, 0), view.ttl)
                        if view.cname:
                            aliased.add(owner)
                results.append(AuditView(frozenset(present), ttls, frozenset(aliased)))
            except ObserveError as err:
                results.append(err)
        return results

    def aliases_many(self, owners: Iterable[str]) -> dict[str, Alias | ObserveError]:
        """Where each owner name's TLSA records live: the end of its CNAME chain.

        Asked of the authoritative servers, one hop (zone) at a time, never
        of the resolver: a question there before the records exist would
        leave a cached "no such record" that delays their validation. An
        owner that is no alias maps to itself.
        """
        found: dict[str, Alias | ObserveError] = {}
        asking = {owner: owner for owner in set(owners)}
        ttls = dict.fromkeys(asking, 0)
        for _ in range(MAX_CHAIN):
            if not asking:
                return found
            names = sorted(set(asking.values()))
            servers = self._servers(names)
            keys = [
                (n, addresses[0])
                for n in names
                if not isinstance(addresses := servers[n], ObserveError)
            ]
            questions = [_tlsa(n, s, dnssec=False) for n, s in keys]
            answers = dict(zip(keys, self._ask_all(questions), strict=True))
            for owner, name in sorted(asking.items()):
                step = self._hop(name, servers[name], answers)
                if isinstance(step, ObserveError):
                    found[owner] = step
                    del asking[owner]
                    continue
                end, ttl = step
                ttls[owner] = max(ttls[owner], ttl)
                if end == name:
                    found[owner] = Alias(end, ttls[owner])
                    del asking[owner]
                else:
                    asking[owner] = end
        for owner, name in asking.items():
            found[owner] = ObserveError(
                f"the CNAME chain from {owner} is longer than {MAX_CHAIN} names (at {name})"
            )
        return found

    @staticmethod
    def _hop(
        name: str,
        servers: list[Address] | ObserveError,
        answers: dict[tuple[str, Address], dns.message.Message | ObserveError],
    ) -> tuple[str, int] | ObserveError:
        """Where one authoritative answer sends ``name``: itself, or along its CNAMEs."""
        if isinstance(servers, ObserveError):
            return servers
        server = servers[0]
        answer = answers[(name, server)]
        if isinstance(answer, ObserveError):
            return answer
        rcode = answer.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return ObserveError(
                f"{server[0]}:{server[1]} answered {dns.rcode.to_text(rcode)} for TLSA at {name}"
            )
        return chain_end(answer, name)

    def _judge(
        self,
        wanted: list[Record],
        servers: dict[str, list[Address] | ObserveError],
        views: dict[tuple[str, Address | None], _View | tuple | ObserveError],
        asked: Mapping[str, list[str]],
    ) -> Observation:
        owners = sorted({r.owner for r in wanted})
        authoritative = True
        ttl = 0
        missing = ""
        for owner in owners:
            need = {r for r in wanted if r.owner == owner}
            for server in _raise(servers[owner]):
                view = _raise(views[(owner, server)])
                found, signed, view_ttl = view.records, view.signed, view.ttl
                ttl = max(ttl, view_ttl)
                if not need <= found or not signed:
                    authoritative = False
                    what = "unsigned" if need <= found else "missing"
                    missing = missing or f"{owner} {what} at {server[0]}:{server[1]}"
        validated = True
        for owner in owners:
            need = {r for r in wanted if r.owner == owner}
            for name in asked[owner]:
                found, ad = _raise(views[(name, None)])
                if need <= found and not ad:
                    validated = False
                    missing = missing or (
                        f"{name}: the resolver returns them without AD; it does not "
                        "validate, or the zone's chain of trust is broken"
                    )
                elif not need <= found:
                    validated = False
                    missing = missing or (
                        f"{name}: the resolver does not return them yet (it may still "
                        "hold the RRset from before)"
                    )
        return Observation(authoritative, validated, ttl, missing)

    def _servers(self, owners: Iterable[str]) -> dict[str, list[Address] | ObserveError]:
        """Each owner's authoritative servers (or why they are unknown)."""
        def one(owner: str) -> list[Address] | ObserveError:
            try:
                return self.authorities(owner)
            except ObserveError as err:
                return err

        names = sorted(owners)
        if self.nameservers or len(names) <= 1:
            return {owner: one(owner) for owner in names}
        # Finding a zone's servers takes several resolver round trips.
        with ThreadPoolExecutor(max_workers=min(ZONE_WORKERS, len(names))) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    def _views(
        self,
        servers: dict[str, list[Address] | ObserveError],
        resolve: Mapping[str, str],
        signed: bool = True,
    ) -> dict[tuple[str, Address | None], _View | tuple | ObserveError]:
        """Ask every server about its owners, and the resolver about ``resolve``.

        ``resolve`` maps each name to ask the resolver at to the owner its
        records live at (the end of its CNAME chain, or itself). Keys are
        (owner, server), with server None for the resolver's answer (keyed
        by the name asked).
        All questions go out at once. The resolver is first asked with the AD
        bit and without DO: a validating resolver then sets AD without adding
        signatures (RFC 6840, section 5.7), and the answer is a fraction of
        the size to parse. Where AD is missing it is asked again with DO, so
        a resolver that sets AD only for DO queries is judged as before.
        """
        keys: list[tuple[str, Address | None]] = [
            (owner, server)
            for owner, addresses in servers.items()
            if not isinstance(addresses, ObserveError)
            for server in addresses
        ]
        keys += [(owner, None) for owner in sorted(resolve)]
        questions = [
            _tlsa(owner, server, dnssec=signed) if server else _validate(owner, self.resolver)
            for owner, server in keys
        ]
        answers = self._ask_all(questions)
        again = [
            i
            for i, (_, server) in enumerate(keys)
            if server is None
            and isinstance(answers[i], dns.message.Message)
            and not answers[i].flags & dns.flags.AD  # type: ignore[union-attr]
        ]
        retried = self._ask_all([_validate(keys[i][0], self.resolver, dnssec=True) for i in again])
        for i, answer in zip(again, retried, strict=True):
            answers[i] = answer
        views: dict[tuple[str, Address | None], _View | tuple | ObserveError] = {}
        for (owner, server), answer in zip(keys, answers, strict=True):
            try:
                if server is None:
                    views[(owner, None)] = self._validated(owner, resolve[owner], answer)
                else:
                    views[(owner, server)] = self._authoritative(owner, server, answer)
            except ObserveError as err:
                views[(owner, server)] = err
        return views

    def _ask_all(self, questions: list[_Question]) -> list[dns.message.Message | ObserveError]:
        with self._count_lock:
            self.queries += len(questions)
        if not questions:
            return []
        answers = dnsio.exchange([(q.query, q.server) for q in questions], self.timeout)
        results: list[dns.message.Message | ObserveError] = []
        for question, answer in zip(questions, answers, strict=True):
            if isinstance(answer, dns.message.Message):
                results.append(answer)
                continue
            reason = "timed out" if isinstance(answer, dns.exception.Timeout) else str(answer)
            host, port = question.server
            results.append(ObserveError(f"cannot {question.what} at {host}:{port}: {reason}"))
        return results

    def _authoritative(
        self, owner: str, server: Address, response: dns.message.Message | ObserveError
    ) -> _View:
        response = _raise(response)
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise ObserveError(
                f"{server[0]}:{server[1]} answered {dns.rcode.to_text(rcode)} for TLSA at {owner}"
            )
        name = dns.name.from_text(owner)
        records: set[Record] = set()
        signed = cname = False
        ttl: int | None = None
        for rrset in response.answer:
            if rrset.name != name:
                continue
            if rrset.rdtype == dns.rdatatype.TLSA:
                records = {Record.from_rdata(owner, rd) for rd in rrset}
                ttl = rrset.ttl
            elif rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == dns.rdatatype.TLSA:
                signed = True
            elif rrset.rdtype == dns.rdatatype.CNAME:
                cname = True
        if ttl is None:
            ttl = _negative_ttl(response)
        return _View(records, signed, ttl, cname)

    def _validated(
        self, name: str, owner: str, response: dns.message.Message | ObserveError
    ) -> tuple[set[Record], bool]:
        """(records, AD) for the question at ``name``; records named by ``owner``,
        where they live (the end of the chain the answer follows)."""
        response = _raise(response)
        ad = bool(response.flags & dns.flags.AD)
        if response.rcode() != dns.rcode.NOERROR:
            return set(), False
        end = dns.name.from_text(chain_end(response, name)[0])
        for rrset in response.answer:
            if rrset.name == end and rrset.rdtype == dns.rdatatype.TLSA:
                return {Record.from_rdata(owner, rd) for rd in rrset}, ad
        return set(), ad


@dataclass(frozen=True)
class _View:
    """What one authoritative server serves for TLSA at one owner name."""

    records: set[Record]
    signed: bool
    ttl: int
    #: the name is an alias (a CNAME) at this server
    cname: bool = False


@dataclass(frozen=True)
class _Question:
    query: dns.message.Message
    server: Address
    what: str


def _tlsa(owner: str, server: Address, dnssec: bool = True) -> _Question:
    """A TLSA question to an authoritative server: no recursion, signatures if ``dnssec``."""
    query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=dnssec)
    query.flags &= ~dns.flags.RD
    return _Question(query, server, f"ask for TLSA at {owner}")


def _validate(owner: str, resolver: Address, dnssec: bool = False) -> _Question:
    """A TLSA question to the validating resolver, asking for the AD bit."""
    query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=dnssec)
    query.flags |= dns.flags.AD
    return _Question(query, resolver, f"resolve TLSA at {owner}")


def chain_end(response: dns.message.Message, owner: str) -> tuple[str, int]:
    """The end of the CNAME chain from ``owner`` in an answer, and its largest TTL."""
    name = dns.name.from_text(owner)
    ttl = 0
    seen = {name}
    while True:
        step = next(
            (
                rrset
                for rrset in response.answer
                if rrset.name == name and rrset.rdtype == dns.rdatatype.CNAME
            ),
            None,
        )
        if step is None:
            return name.to_text().lower(), ttl
        ttl = max(ttl, step.ttl)
        name = step[0].target
        if name in seen:  # a loop: stop where it closes
            return name.to_text().lower(), ttl
        seen.add(name)


_T = TypeVar("_T")


def _raise(value: _T | ObserveError) -> _T:
    if isinstance(value, ObserveError):
        raise value
    return value


def _negative_ttl(response: dns.message.Message) -> int:
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min(rrset.ttl, rrset[0].minimum)
    return 0
