"""A full renewal with the exec store: real certbot and Pebble, the records
published by docs/examples/nsupdate-tlsa.sh through nsupdate at BIND, a
DANE probe every 300 ms that must never fail.

certbot still answers the DNS-01 challenge with dns-rfc2136; only the TLSA
records go through the program, as on a host whose DNS is scripted.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment import Deployment
from tests.lab.lab import Lab
from tests.test_e2e import issued_served_probed, roll_over_with_a_new_key
from tests.test_store_exec import SCRIPT, nsupdate_config

pytestmark = pytest.mark.lab


class ExecDeployment(Deployment):
    """A lineage whose TLSA records are published by the sample exec script."""

    def __init__(self, lab: Lab, root: Path, host: str, margin: int = 1) -> None:
        super().__init__(lab, root, host, margin)
        self.exec_conf = nsupdate_config(lab, root / "nsupdate")
        self.exec_command = f"{SCRIPT} {self.exec_conf}"

    def dane_args(self, tlsa: str = "311:25") -> list[str]:
        return [
            *super().dane_args(tlsa),
            "--dane-dns",
            "exec",
            "--dane-exec",
            self.exec_command,
            "--dane-exec-timeout",
            "30",
        ]


@pytest.fixture
def served(lab: Lab, tmp_path: Path) -> Iterator[ExecDeployment]:
    deployment = ExecDeployment(lab, tmp_path, "exec-renewal.dane.test")
    with issued_served_probed(deployment) as dep:
        yield dep


def test_renewal_through_the_exec_store(served: ExecDeployment) -> None:
    dep = served
    settings = dep.lineage_file.settings
    assert (settings.store, settings.exec_command, settings.credentials) == (
        "exec",
        dep.exec_command,
        None,
    )
    conf = (dep.config / "renewal" / f"{dep.host}.conf").read_text()
    assert "dane_dns = exec" in conf and "dane_exec = " in conf

    roll_over_with_a_new_key(dep)
    data = dep.lineage_file
    assert data.rollover.owned == data.rollover.served.records  # type: ignore[union-attr]
    assert data.rollover.last_error is None
