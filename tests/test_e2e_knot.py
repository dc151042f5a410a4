"""The promise, end to end, with Knot DNS as the zone's primary: real certbot
with dns-rfc2136 writes its challenge to Knot, the plugin publishes TLSA
records through the RFC 2136 store, Unbound validates what Knot signed, and
the DANE probe never fails while a renewal with a new key rolls over.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.deployment import Deployment
from tests.lab.lab import Lab
from tests.test_e2e import issued_served_probed, roll_over_with_a_new_key

pytestmark = pytest.mark.lab


def test_renewal_with_new_key_never_breaks_dane_on_knot(knot_lab: Lab, tmp_path: Path) -> None:
    assert knot_lab.authority.kind == "knot"
    with issued_served_probed(Deployment(knot_lab, tmp_path, "knot-e2e.dane.test")) as dep:
        roll_over_with_a_new_key(dep)
        assert dep.status()["last_error"] is None
        switched = dep.events("switched")
        assert len(switched) == 2, "one initial pin and exactly one switch"
