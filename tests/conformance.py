"""One conformance suite for every record store.

A store's test module provides a ``harness`` fixture (a :class:`Harness`)
and imports the tests below with ``from tests.conformance import *``; pytest
then runs them against that store's real or emulated server.
"""
from __future__ import annotations

import abc
import itertools
from collections.abc import Iterator

import pytest

from certbot_dane.dns.base import RecordStore, StoreError
from certbot_dane.tlsa import Record


class Harness(abc.ABC):
    """What the suite needs to know about one store and its backend."""

    #: the zone the backend serves, absolute ("dane.test.")
    zone: str
    #: strings that must never appear in an error message (TSIG secrets, tokens)
    secrets: tuple[str, ...] = ()

    @abc.abstractmethod
    def store(self) -> RecordStore:
        """A store for this host, ready to use."""

    @abc.abstractmethod
    def other_host(self) -> RecordStore:
        """A second, independent store on the same backend: another host."""

    @abc.abstractmethod
    def backend_records(self, owner: str) -> set[Record]:
        """The TLSA records at ``owner`` as the backend holds them, not via the store."""

    def backend_ttl(self, owner: str) -> int | None:
        """The TTL of the TLSA RRset at ``owner`` as the backend holds it.

        By default what the store lists; a harness whose store cannot list
        (exec) asks the backend itself.
        """
        return self.store().list(owner).ttl

    @abc.abstractmethod
    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        """(kind, store, operations) that must fail: auth refused, server down,
        timeout, malformed answer, where the backend can produce them.
        ``operations`` names which of add, delete and list must fail (a DNS
        query for list is not authenticated, so a bad key fails only updates)."""


_counter = itertools.count()


def owner(harness: Harness, labels: str = "") -> str:
    """A fresh owner name per test, so tests never see each other's records."""
    host = f"c{next(_counter)}-{id(harness) % 10000}"
    middle = f"{labels}." if labels else ""
    return f"_25._tcp.{middle}{host}.{harness.zone}"


def record(
    name: str, data: str = "11", usage: int = 3, selector: int = 1, mtype: int = 1
) -> Record:
    if mtype == 1:
        data = (data * 32)[:64]
    elif mtype == 2:
        data = (data * 64)[:128]
    return Record(name, usage, selector, mtype, data)


def test_add_then_list(harness: Harness) -> None:
    name = owner(harness)
    store = harness.store()
    mine = {record(name, "a1"), record(name, "b2")}
    store.add(mine, 300)
    view = store.list(name)
    assert view.records == mine
    assert view.ttl == 300
    assert harness.backend_records(name) == mine


def test_add_twice_is_idempotent(harness: Harness) -> None:
    name = owner(harness)
    store = harness.store()
    mine = {record(name, "a1")}
    store.add(mine, 300)
    store.add(mine, 300)
    assert harness.backend_records(name) == mine


def test_delete_one_of_two(harness: Harness) -> None:
    name = owner(harness)
    store = harness.store()
    first, second = record(name, "a1"), record(name, "b2")
    store.add({first, second}, 300)
    store.delete({first})
    assert harness.backend_records(name) == {second}
    assert store.list(name).records == {second}


def test_delete_absent_is_a_no_op(harness: Harness) -> None:
    name = owner(harness)
    store = harness.store()
    kept = record(name, "a1")
    store.add({kept}, 300)
    store.delete({record(name, "ff")})
    assert harness.backend_records(name) == {kept}


def test_other_hosts_records_survive(harness: Harness) -> None:
    name = owner(harness)
    mine, theirs = record(name, "a1"), record(name, "c3")
    ours, other = harness.store(), harness.other_host()
    other.add({theirs}, 300)
    ours.add({mine}, 300)
    assert harness.backend_records(name) == {mine, theirs}
    ours.delete({mine})
    assert harness.backend_records(name) == {theirs}, "another host's record was removed"


@pytest.mark.parametrize(
    ("usage", "selector", "mtype"), list(itertools.product((2, 3), (0, 1), (0, 1, 2)))
)
def test_every_usage_selector_and_matching_type(
    harness: Harness, usage: int, selector: int, mtype: int
) -> None:
    name = owner(harness)
    data = "30820122300d06092a864886f70d01010105000382010f00" * (6 if mtype == 0 else 1)
    rec = record(name, data, usage, selector, mtype)
    harness.store().add({rec}, 300)
    assert harness.backend_records(name) == {rec}
    assert harness.store().list(name).records == {rec}


def test_owner_with_many_labels(harness: Harness) -> None:
    name = owner(harness, "a.b.c.d.e")
    rec = record(name, "d4")
    store = harness.store()
    store.add({rec}, 300)
    assert harness.backend_records(name) == {rec}
    store.delete({rec})
    assert harness.backend_records(name) == set()


def test_failures_are_one_clear_store_error(harness: Harness) -> None:
    name = owner(harness)
    kinds = []
    for kind, store, operations in harness.failing():
        kinds.append(kind)
        for operation in operations:
            with pytest.raises(StoreError) as info:
                if operation == "add":
                    store.add({record(name, "e5")}, 300)
                elif operation == "delete":
                    store.delete({record(name, "e5")})
                else:
                    store.list(name)
            message = str(info.value)
            assert "\n" not in message, f"{kind}/{operation}: {message!r}"
            assert store.name in message, f"{kind}/{operation}: store not named: {message}"
            for secret in harness.secrets:
                assert secret not in message, f"{kind}/{operation}: secret in {message}"
    assert kinds, "the harness offers no failure to test"
    assert harness.backend_records(name) == set()


def test_retime_changes_the_ttl_and_keeps_the_records(harness: Harness) -> None:
    name = owner(harness)
    store, other = harness.store(), harness.other_host()
    mine, theirs = {record(name, "a1"), record(name, "b2")}, record(name, "c3")
    other.add({theirs}, 300)
    store.add(mine, 300)
    store.retime(mine, 120)
    assert harness.backend_records(name) == mine | {theirs}
    assert harness.backend_ttl(name) == 120


def test_delete_leaves_the_records_to_keep(harness: Harness) -> None:
    name = owner(harness)
    store = harness.store()
    old, new = record(name, "a1"), record(name, "b2")
    store.add({old, new}, 300)
    store.delete({old}, keep={new})
    assert harness.backend_records(name) == {new}


__all__ = [
    "test_delete_leaves_the_records_to_keep",
    "test_retime_changes_the_ttl_and_keeps_the_records",
    "test_add_then_list",
    "test_add_twice_is_idempotent",
    "test_delete_absent_is_a_no_op",
    "test_delete_one_of_two",
    "test_every_usage_selector_and_matching_type",
    "test_failures_are_one_clear_store_error",
    "test_other_hosts_records_survive",
    "test_owner_with_many_labels",
]
