"""The write test's failure paths, on the in-memory DNS of tests/fakes.py.

The lab tests (tests/test_cli_writetest.py) prove the test against BIND;
these cover what BIND will not do on request: a delete refused after an add
went through, an add that fails after it landed, a server that keeps the
record or serves it unsigned.
"""
from __future__ import annotations

from collections.abc import Iterable

import pytest

from certbot_dane import writetest
from certbot_dane.dns.base import StoreError
from certbot_dane.observe import Address, ObserveError
from certbot_dane.tlsa import Record
from tests.fakes import FakeDNS, FakeStore

OWNER = "_25._tcp.mx.example.org."
SERVED = Record(OWNER, 3, 1, 1, "ab" * 32)
PRIMARY: Address = ("127.0.0.1", 5301)
SECONDARY: Address = ("127.0.0.1", 5302)


class Views:
    """An observer whose servers serve the fake DNS, each as told."""

    def __init__(
        self,
        dns: FakeDNS,
        servers: Iterable[Address] = (PRIMARY,),
        unsigned: Iterable[Address] = (),
        frozen: Iterable[Address] = (),
    ) -> None:
        self.dns = dns
        self.servers = list(servers)
        self.unsigned = set(unsigned)
        #: servers that keep what they served first (a secondary that stopped transferring)
        self.frozen = set(frozen)
        self.kept: dict[Address, set[Record]] = {}
        self.timeout = 1.0
        self.asked = 0

    def authorities(self, owner: str) -> list[Address]:
        if self.dns.down:
            raise ObserveError(f"cannot find the zone of {owner}: timed out")
        return self.servers

    def authoritative_view(self, owner: str, server: Address) -> tuple[set[Record], bool, int]:
        self.asked += 1
        records = set(self.dns.zone.get(owner, set()))
        if server in self.frozen:
            records = self.kept.setdefault(server, records) | records
        return records, server not in self.unsigned, 2


@pytest.fixture
def dns_() -> FakeDNS:
    dns = FakeDNS()
    dns.zone[OWNER] = {SERVED}
    dns.ttls[OWNER] = 300
    return dns


def plan() -> writetest.Plan:
    return writetest.Plan(OWNER, frozenset({SERVED}), None, "/etc/letsencrypt/rfc2136.ini")


def exercise(store: FakeStore, observer: Views, timeout: float = 0.3) -> list[str]:
    lines: list[str] = []
    writetest.exercise(plan(), store, observer, lines.append, timeout)  # type: ignore[arg-type]
    return lines


class RefusingDelete(FakeStore):
    def delete(self, records: Iterable[Record], keep: Iterable[Record] = ()) -> None:
        raise StoreError("fake store: the server refused to delete")


class AddLandsThenFails(FakeStore):
    """An add whose answer never came back, though the server applied it."""

    def add(self, records: Iterable[Record], ttl: int) -> None:
        super().add(records, ttl)
        raise StoreError("fake store: cannot add: timed out")


def test_all_steps_and_the_served_record_stays(dns_: FakeDNS) -> None:
    lines = exercise(FakeStore(dns_), Views(dns_, [PRIMARY, SECONDARY]))
    assert lines[0].startswith(f"added {OWNER} 300 IN TLSA 3 1 1 ")
    assert lines[1].startswith("seen on 2/2 authoritative servers after ")
    assert lines[2:3] == ["deleted the test record"]
    assert lines[3].startswith("gone from 2/2 authoritative servers after ")
    assert dns_.zone[OWNER] == {SERVED}
    assert dns_.ttls[OWNER] == 300
    assert [op for op, _ in dns_.operations] == ["add", "delete"]


def test_record_ttl_when_the_name_has_no_records(dns_: FakeDNS) -> None:
    dns_.zone.clear()
    lines: list[str] = []
    bare = writetest.Plan(OWNER, frozenset(), 120, None)
    writetest.exercise(bare, FakeStore(dns_), Views(dns_), lines.append, 0.3)  # type: ignore[arg-type]
    assert lines[0].startswith(f"added {OWNER} 120 IN TLSA 3 1 1 ")


def test_refused_delete_names_the_record_to_delete_by_hand(dns_: FakeDNS) -> None:
    with pytest.raises(writetest.WriteTestFailed) as failed:
        exercise(RefusingDelete(dns_), Views(dns_))
    (left,) = dns_.zone[OWNER] - {SERVED}
    message = str(failed.value)
    assert message.startswith("write test failed deleting the test record: fake store: ")
    assert f"delete '{OWNER} 300 IN TLSA 3 1 1 {left.data}' by hand" in message


def test_add_that_landed_and_cannot_be_deleted(dns_: FakeDNS) -> None:
    class Both(AddLandsThenFails, RefusingDelete):
        pass

    with pytest.raises(writetest.WriteTestFailed) as failed:
        exercise(Both(dns_), Views(dns_))
    (left,) = dns_.zone[OWNER] - {SERVED}
    message = str(failed.value)
    assert message.startswith(
        "write test failed adding the test record: fake store: cannot add: timed out "
        "(credentials /etc/letsencrypt/rfc2136.ini); the test record was added after all: "
    )
    assert message.endswith(f"delete '{OWNER} 300 IN TLSA 3 1 1 {left.data}' by hand")


def test_add_that_landed_is_deleted(dns_: FakeDNS) -> None:
    with pytest.raises(writetest.WriteTestFailed) as failed:
        exercise(AddLandsThenFails(dns_), Views(dns_))
    assert "added after all" not in str(failed.value)
    assert dns_.zone[OWNER] == {SERVED}
    assert [op for op, _ in dns_.operations] == ["add", "delete"]


def test_unsigned_answer_is_not_served(dns_: FakeDNS) -> None:
    with pytest.raises(writetest.WriteTestFailed) as failed:
        exercise(FakeStore(dns_), Views(dns_, [PRIMARY, SECONDARY], unsigned=[SECONDARY]))
    assert str(failed.value).startswith(
        "write test failed waiting for the test record: seen on 1/2 authoritative servers "
    )
    assert str(failed.value).endswith(
        "127.0.0.1:5302 serves it without a signature (is the zone signed?)"
    )
    assert dns_.zone[OWNER] == {SERVED}


def test_server_that_keeps_the_record(dns_: FakeDNS) -> None:
    observer = Views(dns_, [PRIMARY, SECONDARY], frozen=[SECONDARY])
    with pytest.raises(writetest.WriteTestFailed) as failed:
        exercise(FakeStore(dns_), observer)
    assert str(failed.value).startswith(
        "write test failed waiting for the test record to go: still on 1/2 authoritative "
    )
    assert str(failed.value).endswith("127.0.0.1:5302 still serves it")
    # Polled until the bound, not asked once.
    assert observer.asked > 4


def test_no_servers_found_adds_nothing(dns_: FakeDNS) -> None:
    observer = Views(dns_)
    dns_.down = True
    with pytest.raises(writetest.WriteTestFailed) as failed:
        exercise(FakeStore(dns_), observer)
    assert str(failed.value) == (
        f"write test failed finding the authoritative servers of {OWNER}: cannot find the "
        f"zone of {OWNER}: timed out"
    )
    assert dns_.operations == []


def test_interrupted_wait_still_deletes(dns_: FakeDNS) -> None:
    class Interrupting(Views):
        def authoritative_view(
            self, owner: str, server: Address
        ) -> tuple[set[Record], bool, int]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exercise(FakeStore(dns_), Interrupting(dns_))
    assert dns_.zone[OWNER] == {SERVED}
    assert [op for op, _ in dns_.operations] == ["add", "delete"]
