"""``certbot-dane reset``: re-pin the links to the version DNS vouches for."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_support import CliDeployment, host_for, one_error_line
from tests.lab.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    return CliDeployment(lab, tmp_path, host_for(request, "rst"))


def record_of(dep: CliDeployment, number: int) -> str:
    """The 3 1 1 rdata of archive version ``number``, from the state."""
    s = dep.lineage_file.rollover
    for version in (s.served, s.pending):
        if version is not None and version.number == number:
            (record,) = version.records
            return f"{record.usage} {record.selector} {record.mtype} {record.data}"
    raise AssertionError(f"version {number} is neither served nor pending")


def test_links_moved_to_a_wrong_version_are_put_back(dep: CliDeployment) -> None:
    dep.issue()
    dep.renew()
    dep.renew()  # version 2 stays staged, its record retired; 3 is pending
    dep.repoint(2)
    check = dep.cli("check")
    assert check.returncode == 1 and "changed by hand" in check.stderr
    dns_before = dep.authoritative_records()
    done = dep.cli("reset", "--cert-name", dep.host)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"{dep.host}: links re-pinned to version 1 (served;")
    assert "they were on 2" in done.stdout
    assert dep.served() == 1
    assert dep.authoritative_records() == dns_before, "reset never touches DNS"
    data = dep.lineage_file
    assert data.rollover.served.number == 1  # type: ignore[union-attr]
    assert data.rollover.pending.number == 3  # type: ignore[union-attr]
    assert data.rollover.last_error is None
    assert data.timeline[-1].what == "reset"
    # The rollover carries on from there.
    dep.check_until_switched(3)
    assert dep.served() == 3


def test_served_records_removed_by_hand_pins_the_visible_pending(
    dep: CliDeployment, lab: Lab
) -> None:
    dep.issue()
    dep.renew()
    lab.publish(dep.owner, "TLSA", record_of(dep, 2))  # version 1's record gone
    done = dep.cli("reset", "--cert-name", dep.host)
    assert done.returncode == 0, done.stderr
    assert "re-pinned to version 2 (pending;" in done.stdout
    assert dep.served() == 2
    s = dep.lineage_file.rollover
    assert s.served.number == 2 and s.pending is None  # type: ignore[union-attr]
    # Visible now is not yet live for every cache: its records are proven
    # (a hold) before the lineage counts as settled; the links stay.
    dep.check_until_switched(2, interval=1.0)
    assert dep.served() == 2


def test_a_record_deleted_by_hand_is_published_again(dep: CliDeployment, lab: Lab) -> None:
    dep.certbot("run", *dep.dns_args(), *dep.dane_args("311:25,211:25"), "-d", dep.host)
    (ee,) = [r for r in dep.lineage_file.rollover.served.records if r.usage == 3]  # type: ignore[union-attr]
    both = dep.authoritative_records()
    assert len(both) == 2
    lab.publish(dep.owner, "TLSA", f"3 1 1 {ee.data}")  # the 2 1 1 record gone
    done = dep.cli("reset", "--cert-name", dep.host)
    assert done.returncode == 0, done.stderr
    assert "the links stay on version 1 (served;" in done.stdout
    assert "the next check publishes 1 missing record(s)" in done.stdout
    assert dep.served() == 1
    assert dep.cli("check").returncode == 0
    assert dep.authoritative_records() == both


def test_nothing_to_do(dep: CliDeployment) -> None:
    dep.issue()
    before = dep.snapshot()
    done = dep.cli("reset", "--cert-name", dep.host)
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout
    assert dep.snapshot() == before


def test_refused_when_no_version_is_visible(dep: CliDeployment, lab: Lab) -> None:
    dep.issue()
    dep.renew()
    lab.publish(dep.owner, "TLSA", "3 1 1 " + "cd" * 32)
    dep.repoint(2)
    before = dep.snapshot()
    done = dep.cli("reset", "--cert-name", dep.host)
    assert done.returncode == 1
    line = one_error_line(done)
    assert "none of the versions 1, 2 are visible" in line and "nothing changed" in line
    assert dep.snapshot() == before


def test_needs_a_cert_name(dep: CliDeployment) -> None:
    dep.issue()
    done = dep.cli("reset")
    assert done.returncode == 2
    assert "--cert-name" in done.stderr
