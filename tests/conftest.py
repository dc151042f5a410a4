"""Shared fixtures: one loopback lab (BIND 9, Unbound, Pebble) per test session,
and one each with Knot DNS and PowerDNS as the authoritative server for the
tests that ask for them."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.fixtures import lab_fixture, running_lab  # noqa: F401 - a fixture, used by name
from tests.lab.lab import Lab


@pytest.fixture(scope="session")
def lab(lab_fixture: Lab) -> Lab:  # noqa: F811 - the imported fixture, by name
    return lab_fixture


@pytest.fixture(scope="session")
def pdns_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab with PowerDNS Authoritative (SQLite, RFC 2136 and the HTTP API)."""
    yield from running_lab(tmp_path_factory.mktemp("pdns_lab"), authority="pdns")


@pytest.fixture(scope="session")
def knot_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab whose authoritative server is Knot DNS (started on first use)."""
    yield from running_lab(tmp_path_factory.mktemp("knot"), authority="knot")
