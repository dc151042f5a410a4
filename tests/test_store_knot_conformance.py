"""The store conformance suite against Knot DNS 3.2 (RFC 2136 with TSIG).

The same store and harness as against BIND: whatever Knot does differently
(it answers an update once it is signed, keeps an RRset's TTL when a present
record is added again) must not show through the store. The retime test is
the one that tells: a plain re-add would leave the old TTL in place.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness
from tests.lab.lab import Lab
from tests.test_store_rfc2136_conformance import Rfc2136Harness

pytestmark = pytest.mark.lab


@pytest.fixture
def harness(knot_lab: Lab) -> Iterator[Harness]:
    assert knot_lab.authority.kind == "knot"
    with ExitStack() as stack:
        yield Rfc2136Harness(knot_lab, stack)
