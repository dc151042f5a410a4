"""The lab with Knot DNS as its authoritative server works: the zone is
signed and validates, TSIG updates apply and validate, a restart keeps them.

Some tests pin down the ways Knot differs from BIND that the RFC 2136 store
and the observer must live with (see docs/stores/rfc2136.rst): an update is
answered once it is signed, an update without the key gets NOTAUTH, a record
added again keeps its TTL, and a truncated answer can carry an RRset without
its signature.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from certbot_dane.observe import Observer

from .knot import SOCKET_PATH_MAX, Knot
from .lab import LOOPBACK, Lab

pytestmark = pytest.mark.lab


def random_tlsa() -> str:
    return f"3 1 1 {secrets.token_hex(32)}"


def fresh_owner(lab: Lab) -> str:
    return f"_25._tcp.k{secrets.token_hex(4)}.{lab.zone}"


def rrset_of(
    response: dns.message.Message, owner: str, rdtype: str, covers: str = "NONE"
) -> dns.rrset.RRset | None:
    name = dns.name.from_text(owner)
    for rrset in response.answer:
        if (
            rrset.name == name
            and rrset.rdtype == dns.rdatatype.from_text(rdtype)
            and rrset.covers == dns.rdatatype.from_text(covers)
        ):
            return rrset
    return None


def soa_serial(lab: Lab) -> int:
    soa = rrset_of(lab.auth_query(lab.zone, "SOA"), lab.zone, "SOA")
    assert soa is not None
    return int(soa[0].serial)


def test_zone_is_signed_with_one_csk_and_validates(knot_lab: Lab) -> None:
    lab = knot_lab
    assert lab.authority.kind == "knot"
    at_knot = lab.auth_query(lab.zone, "DNSKEY")
    keys = rrset_of(at_knot, lab.zone, "DNSKEY")
    assert keys is not None and rrset_of(at_knot, lab.zone, "RRSIG", "DNSKEY") is not None
    assert [(k.flags, k.algorithm) for k in keys] == [(257, dns.dnssec.Algorithm.ECDSAP256SHA256)]
    # Confirmed as submitted: no CDS for a parent that does not exist.
    assert rrset_of(lab.auth_query(lab.zone, "CDS"), lab.zone, "CDS") is None

    soa = lab.resolver_query(lab.zone, "SOA")
    assert soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AD
    answer = lab.resolver_query(f"mail.{lab.zone}", "A")
    assert answer.flags & dns.flags.AD
    missing = lab.resolver_query(f"nothing-here.{lab.zone}", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AD


def test_update_is_served_signed_as_soon_as_it_is_answered(knot_lab: Lab) -> None:
    lab = knot_lab
    owner, record = fresh_owner(lab), random_tlsa()
    update = lab.update()
    update.add(owner, lab.record_ttl, "TLSA", record)
    assert lab.send_update(update) == dns.rcode.NOERROR
    # No waiting: Knot answers an update once it has applied and signed it.
    at_knot = lab.auth_query(owner, "TLSA")
    assert rrset_of(at_knot, owner, "RRSIG", "TLSA") is not None
    tlsa = rrset_of(at_knot, owner, "TLSA")
    assert tlsa is not None and [rd.to_text() for rd in tlsa] == [record]

    lab.flush_resolver(owner, "TLSA")
    validated = lab.resolver_query(owner, "TLSA")
    assert validated.flags & dns.flags.AD
    tlsa = rrset_of(validated, owner, "TLSA")
    assert tlsa is not None and [rd.to_text() for rd in tlsa] == [record]


def test_zone_file_stays_the_labs_unsigned_text(knot_lab: Lab) -> None:
    lab = knot_lab
    lab.publish(fresh_owner(lab), "TLSA", random_tlsa())
    zone_file = lab.authority.directory / "dane.test.zone"
    assert zone_file.read_text(encoding="utf-8") == lab.zone_text()


def test_update_without_the_key_is_notauth(knot_lab: Lab) -> None:
    lab = knot_lab
    owner = fresh_owner(lab)
    unsigned = lab.update(signed=False)
    unsigned.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    rcode = lab.send_update(unsigned)
    assert rcode == dns.rcode.NOTAUTH  # BIND: REFUSED
    assert dns.rcode.to_text(rcode) == lab.authority.refused_update_rcode

    stranger = dns.update.UpdateMessage(
        lab.zone,
        keyring=dns.tsigkeyring.from_text({"stranger-key": ("hmac-sha256", lab.tsig_secret)}),
        keyname=dns.name.from_text("stranger-key"),
        keyalgorithm=dns.tsig.HMAC_SHA256,
    )
    stranger.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    with pytest.raises(dns.tsig.PeerBadKey):
        lab.send_update(stranger)
    assert lab.auth_query(owner, "TLSA").rcode() == dns.rcode.NXDOMAIN


def test_adding_a_present_record_again_keeps_its_ttl(knot_lab: Lab) -> None:
    """Why the store's retime deletes and adds in one update."""
    lab = knot_lab
    owner, record = fresh_owner(lab), random_tlsa()
    update = lab.update()
    update.add(owner, 60, "TLSA", record)
    assert lab.send_update(update) == dns.rcode.NOERROR

    again = lab.update()
    again.add(owner, 120, "TLSA", record)
    assert lab.send_update(again) == dns.rcode.NOERROR
    tlsa = rrset_of(lab.auth_query(owner, "TLSA"), owner, "TLSA")
    assert tlsa is not None and tlsa.ttl == 60

    retime = lab.update()
    retime.delete(owner, "TLSA", record)
    retime.add(owner, 120, "TLSA", record)
    assert lab.send_update(retime) == dns.rcode.NOERROR
    tlsa = rrset_of(lab.auth_query(owner, "TLSA"), owner, "TLSA")
    assert tlsa is not None and tlsa.ttl == 120 and len(tlsa) == 1


def test_truncated_answer_carries_the_rrset_without_its_signature(knot_lab: Lab) -> None:
    """A client that took a truncated answer for the whole one would see the
    records unsigned; the observer asks again over TCP (test_observe_knot)."""
    lab = knot_lab
    owner = fresh_owner(lab)
    update = lab.update()
    for _ in range(8):
        update.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    assert lab.send_update(update) == dns.rcode.NOERROR

    query = dns.message.make_query(owner, "TLSA", want_dnssec=True, payload=512)
    over_udp = dns.query.udp(query, LOOPBACK, port=lab.auth_port, timeout=2)
    assert over_udp.flags & dns.flags.TC
    tlsa = rrset_of(over_udp, owner, "TLSA")
    assert tlsa is not None and len(tlsa) == 8
    assert rrset_of(over_udp, owner, "RRSIG", "TLSA") is None

    over_tcp = dns.query.tcp(query, LOOPBACK, port=lab.auth_port, timeout=2)
    assert rrset_of(over_tcp, owner, "RRSIG", "TLSA") is not None


def test_observer_asks_again_over_tcp_when_the_signature_did_not_fit(knot_lab: Lab) -> None:
    """24 records fit a 1232-byte answer, their signature does not: Knot sends
    them truncated and unsigned. Taken as the answer, the records would look
    unsigned and never visible; the observer asks again over TCP."""
    lab = knot_lab
    owner = fresh_owner(lab)
    update = lab.update()
    for _ in range(24):
        update.add(owner, lab.record_ttl, "TLSA", random_tlsa())
    assert lab.send_update(update) == dns.rcode.NOERROR
    query = dns.message.make_query(owner, "TLSA", want_dnssec=True, payload=1232)
    over_udp = dns.query.udp(query, LOOPBACK, port=lab.auth_port, timeout=2)
    assert over_udp.flags & dns.flags.TC and rrset_of(over_udp, owner, "TLSA") is not None
    assert rrset_of(over_udp, owner, "RRSIG", "TLSA") is None

    observer = Observer(lab.resolver, [lab.auth_address])
    records, signed, ttl = observer.authoritative_view(owner, lab.auth_address)
    assert len(records) == 24 and signed and ttl == lab.record_ttl


def test_restart_keeps_the_zone_after_many_updates(knot_lab: Lab) -> None:
    lab = knot_lab
    owner, record = fresh_owner(lab), random_tlsa()
    lab.publish(owner, "TLSA", record)
    # Enough changes that a reload of the zone file under the journal would
    # fail Knot's semantic check (as with zonefile-load: whole).
    for _ in range(40):
        update = lab.update()
        update.add(fresh_owner(lab), lab.record_ttl, "TLSA", random_tlsa())
        assert lab.send_update(update) == dns.rcode.NOERROR
    serial = soa_serial(lab)

    # Killed outright: the journal alone carries the update over.
    lab.stop_authority(hard=True)
    with pytest.raises(dns.exception.Timeout):
        lab.auth_query(owner, "TLSA", timeout=0.5)
    lab.start_authority()

    assert lab.wait_signed(owner, "TLSA", expect=[record], timeout=2) is not None
    assert soa_serial(lab) == serial
    lab.flush_resolver(owner, "TLSA")
    answer = lab.resolver_query(owner, "TLSA")
    assert answer.flags & dns.flags.AD
    tlsa = rrset_of(answer, owner, "TLSA")
    assert tlsa is not None and [rd.to_text() for rd in tlsa] == [record]


def test_control_socket_path_fits_a_unix_socket(tmp_path: Path) -> None:
    shallow = Lab(tmp_path / "lab", authority="knot").authority
    assert isinstance(shallow, Knot)
    assert shallow.control_socket.parent == shallow.directory

    deep = Lab(tmp_path / ("d" * 60) / ("e" * 60), authority="knot").authority
    assert isinstance(deep, Knot)
    assert len(str(deep.directory / "knot.sock")) > SOCKET_PATH_MAX
    assert len(str(deep.control_socket)) <= SOCKET_PATH_MAX
    assert deep.pid_file.parent == deep.control_socket.parent
    deep.prepare()
    assert f'listen: "{deep.control_socket}"' in deep.conf.read_text(encoding="utf-8")
