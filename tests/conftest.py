"""Shared fixtures: one loopback lab (BIND 9, Unbound, Pebble) per test session."""
from __future__ import annotations

import pytest

from tests.lab.fixtures import lab_fixture  # noqa: F401 - a fixture, used by name
from tests.lab.lab import Lab


@pytest.fixture(scope="session")
def lab(lab_fixture: Lab) -> Lab:  # noqa: F811 - the imported fixture, by name
    return lab_fixture
