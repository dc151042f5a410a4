"""RFC 2136 store hardening: TSIG algorithms, signed queries, big RRsets over
TCP, and hosts sharing an owner name updating it at the same time.

Which algorithm signs an update is checked on the wire (a loopback fake
server parses every message with dnspython and verifies its TSIG) and at a
real BIND 9 started here with one key per algorithm, since the lab's BIND
knows only its hmac-sha256 key.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from certbot_dane.dns.base import StoreConfigError, StoreError
from certbot_dane.dns.rfc2136 import ALGORITHMS, Rfc2136Store
from certbot_dane.tlsa import Record
from tests.lab.lab import Lab
from tests.lab.plain_bind import plain_bind
from tests.netfakes import FakeDns

KEY_NAME = "hardening-key."
SECRET = base64.b64encode(b"a shared secret for the fake DNS").decode()


# A fake authoritative server that keeps what it was sent --------------------------


def tsig_keyring() -> dict[dns.name.Name, bytes]:
    """A keyring of the bare secret: verification then uses whatever algorithm
    the message names, so a test can see which one that was."""
    return {dns.name.from_text(KEY_NAME): base64.b64decode(SECRET)}


# Helpers --------------------------------------------------------------------------


def rec(owner: str, mtype: int = 1) -> Record:
    return Record(owner, 3, 1, mtype, secrets.token_hex(32 if mtype == 1 else 64))


def fresh_owner(zone: str = "dane.test.") -> str:
    return f"_25._tcp.h-{secrets.token_hex(4)}.{zone}"


def bind_records(port: int, owner: str) -> set[Record]:
    query = dns.message.make_query(owner, dns.rdatatype.TLSA)
    response = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
    return {
        Record.from_rdata(owner, rd)
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TLSA
        for rd in rrset
    }


def lab_store(lab: Lab, timeout: float = 5.0) -> Rfc2136Store:
    return Rfc2136Store(
        "127.0.0.1", lab.auth_port, lab.tsig_name, lab.tsig_secret, "HMAC-SHA256", timeout
    )


# TSIG algorithms ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_updates_are_signed_with_the_requested_algorithm(algorithm: str) -> None:
    with FakeDns(keyring=tsig_keyring()) as server:
        store = Rfc2136Store("127.0.0.1", server.port, KEY_NAME, SECRET, algorithm.lower(), 2)
        owner = fresh_owner("example.test.")
        record = rec(owner)
        store.add([record], 60)
        store.delete([record])
    updates = [m for m in server.received if m.opcode() == dns.opcode.UPDATE]
    assert len(updates) == 2
    for update in updates:
        assert update.had_tsig
        assert update.keyname == dns.name.from_text(KEY_NAME)
        assert update.keyalgorithm == ALGORITHMS[algorithm]
    queries = [m for m in server.received if m.opcode() == dns.opcode.QUERY]
    assert queries and not any(q.had_tsig for q in queries), "queries unsigned by default"


@pytest.mark.parametrize("spelling", ["hmac-sha512", "HMAC-SHA512", "Hmac-Sha512 ", " hmac-SHA512"])
def test_algorithm_spelling_is_free(spelling: str) -> None:
    with FakeDns(keyring=tsig_keyring()) as server:
        store = Rfc2136Store("127.0.0.1", server.port, KEY_NAME, SECRET, spelling, 2)
        store.add([rec(fresh_owner("example.test."))], 60)
    (update,) = [m for m in server.received if m.opcode() == dns.opcode.UPDATE]
    assert update.keyalgorithm == dns.tsig.HMAC_SHA512


@pytest.mark.parametrize("name", ["HMAC-SHA3-256", "hmac-sha", "gss-tsig", ""])
def test_unknown_algorithms_are_refused_offline(name: str) -> None:
    with pytest.raises(StoreConfigError) as info:
        Rfc2136Store("127.0.0.1", 53, KEY_NAME, SECRET, name)
    for known in ALGORITHMS:
        assert known in str(info.value)


def test_sign_query_from_the_credentials(tmp_path: Path) -> None:
    """certbot-dns-rfc2136's dns_rfc2136_sign_query signs the SOA and TLSA
    queries too, for servers that answer only signed queries."""
    with FakeDns(keyring=tsig_keyring()) as server:
        ini = tmp_path / "rfc2136.ini"
        ini.write_text(
            "dns_rfc2136_server = 127.0.0.1\n"
            f"dns_rfc2136_port = {server.port}\n"
            f"dns_rfc2136_name = {KEY_NAME}\n"
            f"dns_rfc2136_secret = {SECRET}\n"
            "dns_rfc2136_algorithm = HMAC-SHA384\n"
            "dns_rfc2136_sign_query = true\n"
        )
        ini.chmod(0o600)
        store = Rfc2136Store.from_credentials(str(ini), timeout=2)
        owner = fresh_owner("example.test.")
        record = rec(owner)
        store.add([record], 60)
        assert store.list(owner).records == {record}
    assert server.received
    for message in server.received:
        assert message.had_tsig, message.opcode()
        assert message.keyalgorithm == dns.tsig.HMAC_SHA384


@pytest.fixture(scope="module")
def bind_with_every_algorithm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A BIND 9 primary for ``algs.test.`` (unsigned) that accepts updates
    signed with one key per TSIG algorithm; yields its port."""
    keys = {f"{alg.lower()}.": (alg.lower(), SECRET) for alg in ALGORITHMS}
    grants = "".join(f"grant {alg.lower()}. zonesub TLSA; " for alg in ALGORITHMS)
    with plain_bind(tmp_path_factory.mktemp("bind-algs"), "algs.test", keys, grants) as port:
        yield port


@pytest.mark.lab
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_bind_accepts_every_algorithm(bind_with_every_algorithm: int, algorithm: str) -> None:
    port = bind_with_every_algorithm
    store = Rfc2136Store("127.0.0.1", port, f"{algorithm.lower()}.", SECRET, algorithm, 5)
    owner = fresh_owner("algs.test.")
    first, second = rec(owner), rec(owner)
    store.add([first, second], 60)
    assert bind_records(port, owner) == {first, second}
    store.delete([first])
    assert bind_records(port, owner) == {second}


@pytest.mark.lab
def test_bind_refuses_a_key_used_with_another_algorithm(bind_with_every_algorithm: int) -> None:
    port = bind_with_every_algorithm
    store = Rfc2136Store("127.0.0.1", port, "hmac-sha512.", SECRET, "HMAC-SHA384", 5)
    owner = fresh_owner("algs.test.")
    with pytest.raises(StoreError) as info:
        store.add([rec(owner)], 60)
    assert SECRET not in str(info.value) and "\n" not in str(info.value)
    assert bind_records(port, owner) == set()


# Big answers --------------------------------------------------------------------


@pytest.mark.lab
def test_big_rrset_is_listed_over_tcp(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty 3 1 1 records (many hosts behind one name) do not fit a 512-byte
    UDP answer; the list falls back to TCP and misses none."""
    store = lab_store(lab)
    owner = fresh_owner()
    records = {rec(owner) for _ in range(40)}
    store.add(records, 60)
    assert bind_records(lab.auth_port, owner) == records

    over_tcp: list[str] = []
    original = dns.query.tcp

    def spy(query: dns.message.Message, *args: object, **kwargs: object) -> dns.message.Message:
        over_tcp.append(query.question[0].name.to_text())
        return original(query, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dns.query, "tcp", spy)
    view = store.list(owner)
    assert view.records == records and view.ttl == 60
    assert over_tcp == [owner]  # truncated over UDP, asked again over TCP
    monkeypatch.undo()
    store.delete(records)
    assert bind_records(lab.auth_port, owner) == set()


def test_big_rrset_through_a_truncating_server() -> None:
    with FakeDns(keyring=tsig_keyring()) as server:
        store = Rfc2136Store("127.0.0.1", server.port, KEY_NAME, SECRET, "HMAC-SHA256", 2)
        owner = fresh_owner("example.test.")
        records = {rec(owner, mtype=2) for _ in range(12)}
        store.add(records, 60)
        assert store.list(owner).records == records


# Updates: one record at a time, no prerequisites ----------------------------------


def test_updates_touch_single_records_only() -> None:
    """An add carries only class-IN records and a delete only class-NONE ones
    (RFC 2136 2.5.1 and 2.5.4): nothing deletes an RRset or a name, and no
    prerequisite can fail because another host changed the RRset."""
    with FakeDns(keyring=tsig_keyring()) as server:
        store = Rfc2136Store("127.0.0.1", server.port, KEY_NAME, SECRET, "HMAC-SHA256", 2)
        owner = fresh_owner("example.test.")
        first, second = rec(owner), rec(owner)
        store.add([first, second], 60)
        store.delete([first])
    add, delete = [m for m in server.received if m.opcode() == dns.opcode.UPDATE]
    for update in (add, delete):
        assert update.zone[0].name == dns.name.from_text("example.test.")  # type: ignore[attr-defined]
        assert update.prerequisite == []  # type: ignore[attr-defined]
    # On the wire every RR of an update stands alone.
    added = [(rrset.deleting, rrset.ttl, rd) for rrset in add.update for rd in rrset]  # type: ignore[attr-defined]
    assert {(d, t) for d, t, _ in added} == {(None, 60)}
    assert {Record.from_rdata(owner, rd) for _, _, rd in added} == {first, second}
    deleted = [(rrset.deleting, rd) for rrset in delete.update for rd in rrset]  # type: ignore[attr-defined]
    assert [(d, Record.from_rdata(owner, rd)) for d, rd in deleted] == [
        (dns.rdataclass.NONE, first)
    ]


def _concurrently(*jobs: Callable[[], None]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], None]) -> None:
        try:
            start.wait()
            job()
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


@pytest.mark.lab
def test_two_hosts_updating_one_owner_at_once_lose_nothing(lab: Lab) -> None:
    """Two MX hosts roll over at the same owner name in parallel: each adds
    its records one by one and deletes some of its own. BIND serialises the
    updates; every record the other host keeps must survive."""
    owner = fresh_owner()
    hosts = {"a": lab_store(lab), "b": lab_store(lab)}
    added = {name: [rec(owner) for _ in range(6)] for name in hosts}
    dropped = {name: set(records[::2]) for name, records in added.items()}

    def roll(name: str) -> Callable[[], None]:
        def job() -> None:
            store = hosts[name]
            for record in added[name]:
                store.add([record], 60)
                time.sleep(0.005)
            for record in sorted(dropped[name]):
                store.delete([record])

        return job

    _concurrently(roll("a"), roll("b"))
    kept = {r for name in hosts for r in added[name] if r not in dropped[name]}
    assert bind_records(lab.auth_port, owner) == kept
    assert hosts["a"].list(owner).records == kept
