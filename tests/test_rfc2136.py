"""Tests for certbot_dane.dns.rfc2136 against the loopback lab's BIND 9.

Every test uses its own owner names (built from the test's name) because the
lab is shared by the whole session. What the store did is checked at BIND
directly (``lab.wait_signed`` / ``lab.auth_query``), not only through the
store's own ``list``.
"""
from __future__ import annotations

import base64
import datetime
import secrets
import time
from pathlib import Path

import dns.name
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from certbot_dane import dnsio
from certbot_dane.dns import StoreConfigError, StoreError, open_store
from certbot_dane.dns.rfc2136 import Rfc2136Store
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.lab.lab import Lab
from tests.lab.process import free_port

pytestmark = pytest.mark.lab


# Helpers ------------------------------------------------------------------------


@pytest.fixture
def owner(request: pytest.FixtureRequest) -> str:
    """A fresh owner name in the lab zone, unique to this test (and run)."""
    label = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")
    return f"_25._tcp.{label[:40]}-{secrets.token_hex(3)}.dane.test."


@pytest.fixture
def store(lab: Lab, tmp_path: Path) -> Rfc2136Store:
    return Rfc2136Store.from_credentials(str(lab.rfc2136_ini(tmp_path / "rfc2136.ini")), timeout=5)


def rec(owner: str, usage: int = 3, selector: int = 1, mtype: int = 1, data: str = "") -> Record:
    length = {0: 200, 1: 32, 2: 64}[mtype]
    return Record(owner, usage, selector, mtype, data or secrets.token_hex(length))


def zone_text(record: Record) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data}"


def at_bind(lab: Lab, owner: str) -> set[str]:
    """The TLSA rdata BIND serves at ``owner``, as zone-file text."""
    response = lab.auth_query(owner, "TLSA")
    name = dns.name.from_text(owner)
    for rrset in response.answer:
        if rrset.name == name and rrset.rdtype == dns.rdatatype.TLSA:
            return {rd.to_text() for rd in rrset}
    return set()


def canonical(record: Record) -> str:
    return record.rdata().to_text()


def rsa_cert() -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.dane.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def write_ini(path: Path, **values: str) -> str:
    text = "".join(f"dns_rfc2136_{key} = {value}\n" for key, value in values.items())
    path.write_text(text, encoding="ascii")
    path.chmod(0o600)
    return str(path)


def lab_values(lab: Lab) -> dict[str, str]:
    return {
        "server": "127.0.0.1",
        "port": str(lab.auth_port),
        "name": lab.tsig_name,
        "secret": lab.tsig_secret,
        "algorithm": "HMAC-SHA256",
    }


# Credentials --------------------------------------------------------------------


def test_from_credentials_reads_the_lab_ini(lab: Lab, tmp_path: Path) -> None:
    path = lab.rfc2136_ini(tmp_path / "lab.ini")
    store = Rfc2136Store.from_credentials(str(path), timeout=3)
    assert (store.server, store.port, store.timeout) == ("127.0.0.1", lab.auth_port, 3)
    # open_store builds the same thing by name
    settings = Settings(targets="311:25", directory=str(tmp_path), credentials=str(path))
    same = open_store(settings, "/etc/letsencrypt", timeout=4)
    assert isinstance(same, Rfc2136Store)
    assert (same.server, same.port, same.timeout) == ("127.0.0.1", lab.auth_port, 4)


def test_algorithm_is_case_insensitive(lab: Lab, tmp_path: Path) -> None:
    values = lab_values(lab) | {"algorithm": "hmac-sha256"}
    store = Rfc2136Store.from_credentials(write_ini(tmp_path / "c.ini", **values))
    assert store.zone_of("www.dane.test.") == dns.name.from_text("dane.test.")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"server": "ns1.dane.test"}, ["dns_rfc2136_server", "must be an IP address"]),
        ({"server": ""}, ["dns_rfc2136_server", "must be an IP address"]),
        ({"secret": None}, ["no dns_rfc2136_secret", "add it"]),
        ({"name": None}, ["no dns_rfc2136_name", "add it"]),
        ({"algorithm": "HMAC-SHA3"}, ["unknown TSIG algorithm 'HMAC-SHA3'", "HMAC-SHA256"]),
        ({"port": "fifty-three"}, ["dns_rfc2136_port", "is not a number"]),
        ({"secret": "not base64!!"}, ["malformed", "dns_rfc2136_secret in ", "bad.ini"]),
    ],
    ids=["server-name", "server-empty", "no-secret", "no-name", "algorithm", "port", "secret"],
)
def test_bad_credentials(
    lab: Lab, tmp_path: Path, change: dict[str, str | None], expected: list[str]
) -> None:
    values = lab_values(lab)
    for key, value in change.items():
        if value is None:
            del values[key]
        else:
            values[key] = value
    path = write_ini(tmp_path / "bad.ini", **values)
    with pytest.raises(StoreConfigError) as info:
        Rfc2136Store.from_credentials(path)
    message = str(info.value)
    assert message.startswith("rfc2136 store: ")
    assert "\n" not in message
    for part in expected:
        assert part in message
    if "secret" not in change:
        assert lab.tsig_secret not in message


def test_missing_credentials_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ini"
    with pytest.raises(StoreConfigError) as info:
        Rfc2136Store.from_credentials(str(missing))
    message = str(info.value)
    assert message.startswith("rfc2136 store: ")
    assert str(missing) in message
    assert "\n" not in message


def test_no_credentials_path() -> None:
    with pytest.raises(StoreConfigError, match="--dane-credentials") as info:
        Rfc2136Store.from_credentials(None)
    assert "\n" not in str(info.value)


def test_unknown_store_name(tmp_path: Path) -> None:
    settings = Settings(targets="311:25", directory=str(tmp_path), store="carrier-pigeon")
    with pytest.raises(StoreConfigError, match="unknown DNS store 'carrier-pigeon'.*--dane-dns"):
        open_store(settings, "/etc/letsencrypt")


# Zone discovery -----------------------------------------------------------------


def test_zone_of_deep_owner(store: Rfc2136Store) -> None:
    zone = store.zone_of("_25._tcp.a.b.c.dane.test.")
    assert zone == dns.name.from_text("dane.test.")
    # the apex itself and an existing name answer the same
    assert store.zone_of("dane.test.") == zone
    assert store.zone_of("www.dane.test.") == zone


def test_zone_of_is_cached(store: Rfc2136Store, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = "_443._tcp.cached.dane.test."
    assert store.zone_of(owner) == dns.name.from_text("dane.test.")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("asked the server again")

    monkeypatch.setattr(dnsio, "exchange", fail)
    assert store.zone_of(owner) == dns.name.from_text("dane.test.")


def test_zone_of_a_foreign_name(store: Rfc2136Store) -> None:
    # BIND has recursion off: REFUSED, no SOA
    with pytest.raises(StoreError) as info:
        store.zone_of("_25._tcp.mail.example.org.")
    message = str(info.value)
    assert "is not authoritative for _25._tcp.mail.example.org." in message
    assert "REFUSED" in message


# Add, list, delete --------------------------------------------------------------


def test_list_of_an_absent_owner_is_empty(store: Rfc2136Store, owner: str) -> None:
    view = store.list(owner)
    assert view.records == frozenset()
    assert view.ttl is None


def test_add_then_list(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    record = rec(owner)
    store.add([record], ttl=300)
    lab.wait_signed(owner, "TLSA", expect=[canonical(record)])
    view = store.list(owner)
    assert view.records == frozenset({record})
    assert view.ttl == 300


def test_add_twice_is_idempotent(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    first, second = rec(owner), rec(owner, mtype=2)
    store.add([first, second], ttl=120)
    store.add([first, second], ttl=120)
    store.add([first], ttl=120)
    lab.wait_signed(owner, "TLSA", expect=[canonical(first), canonical(second)])
    view = store.list(owner)
    assert view.records == {first, second}
    assert len(at_bind(lab, owner)) == 2


def test_add_keeps_records_of_others(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    """A record published by another host at the same name survives our add and delete."""
    foreign = rec(owner)
    lab.publish(owner, "TLSA", zone_text(foreign), ttl=60)
    ours = rec(owner)
    store.add([ours], ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(foreign), canonical(ours)])
    store.delete([ours])
    lab.wait_signed(owner, "TLSA", expect=[canonical(foreign)])
    assert store.list(owner).records == {foreign}


def test_delete_one_of_two(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    keep, drop = rec(owner), rec(owner)
    store.add([keep, drop], ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(keep), canonical(drop)])
    store.delete([drop])
    lab.wait_signed(owner, "TLSA", expect=[canonical(keep)])
    assert store.list(owner).records == {keep}


def test_delete_all_then_owner_is_gone(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    records = [rec(owner), rec(owner)]
    store.add(records, ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(r) for r in records])
    store.delete(records)
    lab.wait_signed(owner, "TLSA", present=False)
    assert store.list(owner).records == frozenset()


def test_delete_absent_is_noop(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    present, absent = rec(owner), rec(owner)
    store.delete([absent])  # nothing at the owner at all
    store.add([present], ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(present)])
    store.delete([absent])  # the RRset exists, the record does not
    time.sleep(0.2)
    assert at_bind(lab, owner) == {canonical(present)}
    assert store.list(owner).records == {present}


def test_add_and_delete_span_owners(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    other = owner.replace("_25._tcp.", "_465._tcp.")
    a, b = rec(owner), rec(other)
    store.add([a, b], ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(a)])
    lab.wait_signed(other, "TLSA", expect=[canonical(b)])
    store.delete([a, b])
    lab.wait_signed(owner, "TLSA", present=False)
    lab.wait_signed(other, "TLSA", present=False)


def test_ttl_of_a_later_add_applies_to_the_rrset(
    lab: Lab, store: Rfc2136Store, owner: str
) -> None:
    first, second = rec(owner), rec(owner)
    store.add([first], ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(first)])
    store.add([second], ttl=90)
    lab.wait_signed(owner, "TLSA", expect=[canonical(first), canonical(second)])
    view = store.list(owner)
    assert view.records == {first, second}
    assert view.ttl == 90  # one TTL per RRset (RFC 2181 5.2)


@pytest.mark.parametrize("usage", [2, 3])
@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [1, 2])
def test_parameter_combinations(
    lab: Lab, store: Rfc2136Store, owner: str, usage: int, selector: int, mtype: int
) -> None:
    record = rec(owner, usage, selector, mtype)
    store.add([record], ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(record)])
    listed = store.list(owner).records
    assert listed == {record}
    (got,) = listed
    assert (got.usage, got.selector, got.mtype, got.data) == (usage, selector, mtype, record.data)


def test_full_data_records_need_tcp(
    lab: Lab, store: Rfc2136Store, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matching type 0 carries the whole certificate or SPKI: the answer does not
    fit the 512 bytes of a plain UDP response, so listing falls back to TCP."""
    cert = rsa_cert()
    full_cert = Record(owner, 3, 0, 0, cert.public_bytes(serialization.Encoding.DER).hex())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    full_spki = Record(owner, 3, 1, 0, spki.hex())
    ta = Record(owner, 2, 1, 0, spki.hex())
    records = [full_cert, full_spki, ta]
    store.add(records, ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(r) for r in records])

    over_tcp: list[str] = []
    original = dns.query.tcp

    def spy(query: dns.message.Message, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        over_tcp.append(query.question[0].name.to_text())
        return original(query, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dns.query, "tcp", spy)
    view = store.list(owner)
    assert view.records == set(records)
    assert over_tcp == [owner]  # truncated over UDP, asked again over TCP
    monkeypatch.undo()

    store.delete([full_cert])
    lab.wait_signed(owner, "TLSA", expect=[canonical(full_spki), canonical(ta)])
    assert store.list(owner).records == {full_spki, ta}


def test_owner_case_is_normalised(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    record = rec(owner)
    store.add([record], ttl=60)
    lab.wait_signed(owner, "TLSA", expect=[canonical(record)])
    assert store.list(owner.upper()).records == {record}


# Failures -----------------------------------------------------------------------


def test_wrong_tsig_secret(lab: Lab, tmp_path: Path, owner: str) -> None:
    wrong = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    values = lab_values(lab) | {"secret": wrong}
    store = Rfc2136Store.from_credentials(write_ini(tmp_path / "wrong.ini", **values), timeout=2)
    record = rec(owner)
    with pytest.raises(StoreError) as info:
        store.add([record], ttl=60)
    message = str(info.value)
    assert "rfc2136 store" in message
    assert f"add 1 TLSA record(s) at {owner}" in message
    assert f"127.0.0.1:{lab.auth_port}" in message
    assert wrong not in message
    assert lab.tsig_secret not in message
    assert "\n" not in message
    assert at_bind(lab, owner) == set()

    with pytest.raises(StoreError) as info:
        store.delete([record])
    message = str(info.value)
    assert "rfc2136 store" in message and "delete 1 TLSA record(s)" in message
    assert wrong not in message and lab.tsig_secret not in message


def test_unknown_tsig_key_name(lab: Lab, tmp_path: Path, owner: str) -> None:
    values = lab_values(lab) | {"name": "no-such-key"}
    store = Rfc2136Store.from_credentials(write_ini(tmp_path / "name.ini", **values), timeout=2)
    with pytest.raises(StoreError) as info:
        store.add([rec(owner)], ttl=60)
    message = str(info.value)
    assert "rfc2136 store" in message and "add 1 TLSA record(s)" in message
    assert lab.tsig_secret not in message
    assert at_bind(lab, owner) == set()


def test_server_down_times_out_quickly(lab: Lab, owner: str) -> None:
    port = free_port({lab.auth_port, lab.resolver_port}, udp=True)
    store = Rfc2136Store("127.0.0.1", port, lab.tsig_name, lab.tsig_secret, "HMAC-SHA256", 1)
    for call in (lambda: store.add([rec(owner)], ttl=60), lambda: store.list(owner)):
        began = time.monotonic()
        with pytest.raises(StoreError) as info:
            call()
        assert time.monotonic() - began < 3
        message = str(info.value)
        assert message.startswith("rfc2136 store: cannot ")
        assert f"127.0.0.1:{port}" in message
        assert "timed out" in message or "refused" in message.lower()
        assert lab.tsig_secret not in message


def test_server_gone_before_the_update(lab: Lab, store: Rfc2136Store, owner: str) -> None:
    """The zone is known, then the update's TCP connection is refused."""
    store.zone_of(owner)
    store.port = free_port({lab.auth_port, lab.resolver_port})
    store.timeout = 1
    began = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.add([rec(owner)], ttl=60)
    assert time.monotonic() - began < 3
    message = str(info.value)
    assert message.startswith(f"rfc2136 store: cannot add 1 TLSA record(s) at {owner}")
    assert "refused" in message.lower() or "timed out" in message
    assert lab.tsig_secret not in message


def test_an_add_the_server_ignores_next_to_a_cname_is_an_error(
    lab: Lab, tmp_path: Path, owner: str
) -> None:
    """RFC 2136 section 3.4.2.2: a TLSA update at a CNAME is dropped without an
    error; the store must never report such a record as published."""
    lab.publish(owner, "CNAME", "www.dane.test.")
    store = Rfc2136Store.from_credentials(str(lab.rfc2136_ini(tmp_path / "c.ini")), timeout=1)
    with pytest.raises(StoreError) as info:
        store.add([rec(owner)], 60)
    message = str(info.value)
    assert "\n" not in message
    assert f"does not serve the change after 1 s; if {owner} holds a CNAME" in message
    assert at_bind(lab, owner) == set()
    lab.unpublish(owner, "CNAME")
