"""Tests for certbot_dane.observe: address parsing (offline) and the Observer
against the loopback lab (BIND 9 authoritative, Unbound validating).

Records are published with the lab's TSIG key (``lab.publish``, which waits
until BIND serves them signed and flushes them from Unbound). Owner names are
unique per test because the lab is shared by the session.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from certbot_dane.observe import (
    Observation,
    ObserveError,
    Observer,
    parse_address,
    parse_addresses,
)
from certbot_dane.tlsa import Record
from tests.lab.lab import Lab
from tests.lab.process import free_port
from tests.netfakes import ScriptedDns

# Address parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("  192.0.2.1:53  ", ("192.0.2.1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
        ("::1", ("::1", 53)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


def test_parse_address_default_port() -> None:
    assert parse_address("192.0.2.1", default_port=5300) == ("192.0.2.1", 5300)
    assert parse_address("[::1]", default_port=5300) == ("::1", 5300)


@pytest.mark.parametrize(
    "text",
    ["", "   ", ":53", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:dns",
     "127.0.0.1:-1", "[]:53", "[::1]:x", "[::1]:0"],
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected ADDR or ADDR:PORT") as info:
        parse_address(text)
    assert "\n" not in str(info.value)


def test_parse_addresses() -> None:
    assert parse_addresses(None) == []
    assert parse_addresses("") == []
    assert parse_addresses(" , ") == []
    assert parse_addresses("127.0.0.1:5300, [::1]:53,192.0.2.1") == [
        ("127.0.0.1", 5300),
        ("::1", 53),
        ("192.0.2.1", 53),
    ]
    with pytest.raises(ValueError):
        parse_addresses("127.0.0.1:53,127.0.0.1:http")


# Lab helpers --------------------------------------------------------------------


@pytest.fixture
def owner(request: pytest.FixtureRequest) -> str:
    label = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")
    return f"_25._tcp.{label[:40]}-{secrets.token_hex(3)}.dane.test."


def rec(owner: str) -> Record:
    return Record(owner, 3, 1, 1, secrets.token_hex(32))


def text(record: Record) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data}"


def closed_port(lab: Lab) -> tuple[str, int]:
    return ("127.0.0.1", free_port({lab.auth_port, lab.resolver_port}, udp=True))


class FakeAuthority(ScriptedDns):
    """A UDP name server on loopback that answers every query with ``answer(query)``."""

    def __init__(self, answer: Callable[[dns.message.Message], dns.message.Message]) -> None:
        super().__init__(lambda query: [(0.0, answer(query))])


def soa(zone: str = "dane.test.", ttl: int = 2, minimum: int = 2) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        zone, ttl, "IN", "SOA", f"ns1.{zone} hostmaster.{zone} 1 60 10 3600 {minimum}"
    )


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeAuthority]]:
    servers: list[FakeAuthority] = []

    def start(answer: Callable[[dns.message.Message], dns.message.Message]) -> FakeAuthority:
        servers.append(FakeAuthority(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# authoritative_view --------------------------------------------------------------


@pytest.mark.lab
def test_authoritative_view_absent(lab: Lab, owner: str) -> None:
    observer = Observer(lab.resolver, [lab.auth_address])
    assert observer.authoritative_view(owner, lab.auth_address) == (set(), False, lab.record_ttl)
    assert observer.queries == 1


@pytest.mark.lab
def test_authoritative_view_nodata(lab: Lab, owner: str) -> None:
    """The owner exists (a TXT record) but has no TLSA: NOERROR/NODATA, same negative TTL."""
    lab.publish(owner, "TXT", '"not a TLSA"')
    observer = Observer(lab.resolver, [lab.auth_address])
    assert observer.authoritative_view(owner, lab.auth_address) == (set(), False, lab.record_ttl)


@pytest.mark.lab
def test_authoritative_view_published(lab: Lab, owner: str) -> None:
    first, second = rec(owner), rec(owner)
    lab.publish(owner, "TLSA", text(first), text(second), ttl=7)
    observer = Observer(lab.resolver, [lab.auth_address])
    records, signed, ttl = observer.authoritative_view(owner, lab.auth_address)
    assert records == {first, second}
    assert signed is True
    assert ttl == 7


@pytest.mark.lab
def test_authoritative_view_refused(lab: Lab) -> None:
    observer = Observer(lab.resolver, [lab.auth_address])
    with pytest.raises(ObserveError, match="answered REFUSED for TLSA at _25._tcp.mail.example."):
        observer.authoritative_view("_25._tcp.mail.example.", lab.auth_address)


@pytest.mark.lab
def test_prior_ttl(lab: Lab, owner: str) -> None:
    other = owner.replace("_25._tcp.", "_465._tcp.")
    lab.publish(owner, "TLSA", text(rec(owner)), ttl=9)
    observer = Observer(lab.resolver, [lab.auth_address, lab.auth_address])
    assert observer.prior_ttl([owner, other, owner]) == 9
    assert observer.queries == 4  # two distinct owners at two servers
    assert Observer(lab.resolver, [lab.auth_address]).prior_ttl([other]) == lab.record_ttl
    assert Observer(lab.resolver, [lab.auth_address]).prior_ttl([]) == 0


# observe ------------------------------------------------------------------------


@pytest.mark.lab
def test_observe_published(lab: Lab, owner: str) -> None:
    record = rec(owner)
    lab.publish(owner, "TLSA", text(record), ttl=5)
    lab.flush_resolver(owner, "TLSA")
    observer = Observer(lab.resolver, [lab.auth_address])
    seen = observer.observe([record])
    assert seen.authoritative is True
    assert seen.validated is True
    assert seen.ttl == 5
    assert seen.detail == ""
    assert observer.queries == 2  # one authoritative server, one resolver question


@pytest.mark.lab
def test_observe_subset_of_a_larger_rrset(lab: Lab, owner: str) -> None:
    ours, theirs = rec(owner), rec(owner)
    lab.publish(owner, "TLSA", text(ours), text(theirs))
    seen = Observer(lab.resolver, [lab.auth_address]).observe([ours])
    assert (seen.authoritative, seen.validated) == (True, True)


@pytest.mark.lab
def test_observe_not_published(lab: Lab, owner: str) -> None:
    record = rec(owner)
    observer = Observer(lab.resolver, [lab.auth_address])
    seen = observer.observe([record])
    assert seen.authoritative is False
    assert seen.validated is False
    assert seen.ttl == lab.record_ttl
    assert seen.detail == f"{owner} missing at 127.0.0.1:{lab.auth_port}"


@pytest.mark.lab
def test_observe_partly_published(lab: Lab, owner: str) -> None:
    published, missing = rec(owner), rec(owner)
    lab.publish(owner, "TLSA", text(published))
    seen = Observer(lab.resolver, [lab.auth_address]).observe([published, missing])
    assert (seen.authoritative, seen.validated) == (False, False)
    assert "missing" in seen.detail


@pytest.mark.lab
def test_observe_two_owners_counts_queries(lab: Lab, owner: str) -> None:
    other = owner.replace("_25._tcp.", "_587._tcp.")
    a, b = rec(owner), rec(other)
    lab.publish(owner, "TLSA", text(a))
    lab.publish(other, "TLSA", text(b))
    observer = Observer(lab.resolver, [lab.auth_address, lab.auth_address])
    seen = observer.observe([a, b])
    assert (seen.authoritative, seen.validated) == (True, True)
    # 2 owners x 2 authoritative servers + 1 resolver question per owner
    assert observer.queries == 6
    observer.observe([a])
    assert observer.queries == 6 + 3


@pytest.mark.lab
def test_observe_resolver_cache_then_flush(lab: Lab, owner: str) -> None:
    """The resolver caches "no TLSA here"; after a flush it validates the new record."""
    record = rec(owner)
    observer = Observer(lab.resolver, [lab.auth_address])
    assert observer.validated(owner)[0] == set()  # now cached as NXDOMAIN
    update = lab.update()
    update.replace(owner, 60, "TLSA", text(record))
    assert lab.send_update(update) == dns.rcode.NOERROR
    lab.wait_signed(owner, "TLSA", expect=[text(record)])
    stale = observer.observe([record])
    assert (stale.authoritative, stale.validated) == (True, False)
    assert stale.detail == (
        f"{owner}: the resolver does not return them yet (it may still hold the RRset "
        "from before)"
    )
    lab.flush_resolver(owner, "TLSA")
    fresh = observer.observe([record])
    assert (fresh.authoritative, fresh.validated) == (True, True)


@pytest.mark.lab
def test_extra_authority_unreachable(lab: Lab, owner: str) -> None:
    record = rec(owner)
    lab.publish(owner, "TLSA", text(record))
    dead = closed_port(lab)
    observer = Observer(lab.resolver, [lab.auth_address, dead], timeout=1)
    began = time.monotonic()
    with pytest.raises(ObserveError) as info:
        observer.observe([record])
    assert time.monotonic() - began < 4
    message = str(info.value)
    assert f"at 127.0.0.1:{dead[1]}" in message
    assert f"ask for TLSA at {owner}" in message
    assert "timed out" in message or "refused" in message.lower()


@pytest.mark.lab
def test_extra_authority_without_the_record(
    lab: Lab, owner: str, fake: Callable[..., FakeAuthority]
) -> None:
    record = rec(owner)
    lab.publish(owner, "TLSA", text(record))

    def nodata(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.authority.append(soa())
        return response

    stale = fake(nodata)
    observer = Observer(lab.resolver, [lab.auth_address, stale.address])
    seen = observer.observe([record])
    assert seen.authoritative is False
    assert seen.validated is True  # the resolver does see it; one server lags
    assert seen.detail == f"{owner} missing at 127.0.0.1:{stale.address[1]}"
    assert stale.questions == 1


@pytest.mark.lab
def test_extra_authority_unsigned(
    lab: Lab, owner: str, fake: Callable[..., FakeAuthority]
) -> None:
    record = rec(owner)
    lab.publish(owner, "TLSA", text(record))

    def unsigned(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text(owner, 2, "IN", "TLSA", text(record)))
        return response

    server = fake(unsigned)
    seen = Observer(lab.resolver, [server.address, lab.auth_address]).observe([record])
    assert seen.authoritative is False
    assert seen.detail == f"{owner} unsigned at 127.0.0.1:{server.address[1]}"


def test_authority_servfail(fake: Callable[..., FakeAuthority]) -> None:
    def servfail(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response

    server = fake(servfail)
    observer = Observer(server.address, [server.address], timeout=1)
    with pytest.raises(ObserveError, match="answered SERVFAIL for TLSA at _25._tcp.x.test."):
        observer.authoritative_view("_25._tcp.x.test.", server.address)


def test_negative_ttl_is_the_smaller_of_soa_ttl_and_minimum(
    fake: Callable[..., FakeAuthority],
) -> None:
    def nxdomain(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(soa("x.test.", ttl=300, minimum=30))
        return response

    server = fake(nxdomain)
    observer = Observer(server.address, [server.address], timeout=1)
    assert observer.authoritative_view("_25._tcp.x.test.", server.address) == (set(), False, 30)


@pytest.mark.lab
def test_resolver_without_validation(lab: Lab, owner: str) -> None:
    """BIND itself as "resolver": it serves the record but never sets AD."""
    record = rec(owner)
    lab.publish(owner, "TLSA", text(record))
    observer = Observer(lab.auth_address, [lab.auth_address])
    assert observer.validated(owner) == ({record}, False)
    seen = observer.observe([record])
    assert (seen.authoritative, seen.validated) == (True, False)
    assert seen.detail == (
        f"{owner}: the resolver returns them without AD; it does not validate, or the "
        "zone's chain of trust is broken"
    )


@pytest.mark.lab
def test_resolver_unreachable(lab: Lab, owner: str) -> None:
    dead = closed_port(lab)
    observer = Observer(dead, [lab.auth_address], timeout=1)
    with pytest.raises(ObserveError, match=f"resolve TLSA at {owner} at 127.0.0.1:{dead[1]}"):
        observer.observe([rec(owner)])


@pytest.mark.lab
def test_authorities_from_ns_records(lab: Lab, owner: str) -> None:
    """Without an override the zone's NS addresses are used (on port 53)."""
    observer = Observer(lab.resolver)
    assert observer.zone_of(owner) == "dane.test."
    assert observer.queries == 1
    assert observer.authorities(owner) == [("127.0.0.1", 53)]
    # zone (1) + NS (1) + A and AAAA of ns1.dane.test. (2)
    assert observer.queries == 1 + 4


def test_resolver_host_name_is_an_observe_error() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        parse_address("resolver.invalid:53")
    observer = Observer(("resolver.invalid", 53), [("127.0.0.1", 9)], timeout=1)
    with pytest.raises(ObserveError):
        observer.validated("_25._tcp.mail.dane.test.")


# The resolver's AD bit, with and without DO ---------------------------------------


def _resolver_answering(
    record: Record, ad_without_do: bool, asked: list[tuple[bool, bool]]
) -> Callable[[dns.message.Message], dns.message.Message]:
    """A stand-in resolver: the record, with AD when the query has DO (and, if
    ``ad_without_do``, when it only has AD). Logs (DO, AD) of each query."""

    def answer(query: dns.message.Message) -> dns.message.Message:
        do = bool(query.ednsflags & dns.flags.DO)
        ad = bool(query.flags & dns.flags.AD)
        asked.append((do, ad))
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text(record.owner, 30, "IN", "TLSA", text(record)))
        if do or (ad and ad_without_do):
            response.flags |= dns.flags.AD
        return response

    return answer


def test_the_resolver_is_asked_with_ad_and_without_do_first(
    fake: Callable[..., FakeAuthority],
) -> None:
    record = rec("_25._tcp.x.test.")
    asked: list[tuple[bool, bool]] = []
    resolver = fake(_resolver_answering(record, True, asked))
    assert Observer(resolver.address, [resolver.address]).validated(record.owner) == (
        {record},
        True,
    )
    assert asked == [(False, True)]


def test_a_resolver_that_sets_ad_only_for_do_is_asked_again_with_do(
    fake: Callable[..., FakeAuthority],
) -> None:
    records = [rec(f"_25._tcp.h{i}.x.test.") for i in range(3)]
    asked: list[tuple[bool, bool]] = []

    def answer(query: dns.message.Message) -> dns.message.Message:
        owner = query.question[0].name.to_text()
        record = next(r for r in records if r.owner == owner)
        return _resolver_answering(record, False, asked)(query)

    resolver = fake(answer)
    observer = Observer(resolver.address, [resolver.address])
    assert [observer.validated(r.owner) for r in records] == [({r}, True) for r in records]
    assert asked == [(False, True), (True, True)] * 3
    # Batched: one burst without DO, then one with DO for the ones lacking AD.
    asked.clear()
    observer.queries = 0
    results = observer.observe_many([[r] for r in records])
    assert all(isinstance(o, Observation) and o.validated for o in results)
    assert sorted(asked) == sorted([(True, False)] * 3 + [(False, True)] * 3 + [(True, True)] * 3)
    assert observer.queries == 9  # 3 authoritative (DO, no AD), 3 + 3 resolver


def test_a_resolver_without_ad_at_all_does_not_validate(
    fake: Callable[..., FakeAuthority],
) -> None:
    record = rec("_25._tcp.x.test.")
    asked: list[tuple[bool, bool]] = []

    def never(query: dns.message.Message) -> dns.message.Message:
        response = _resolver_answering(record, False, asked)(query)
        response.flags &= ~dns.flags.AD
        return response

    resolver = fake(never)
    assert Observer(resolver.address, [resolver.address]).validated(record.owner) == (
        {record},
        False,
    )
    assert asked == [(False, True), (True, True)]
