"""``certbot-dane status``: the table and the JSON monitoring interface."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509

from certbot_dane import report
from tests.cli_support import CliDeployment, cells, host_for, one_error_line
from tests.lab.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    return CliDeployment(lab, tmp_path, host_for(request))


def expiry(path: Path) -> float:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    # not_valid_after_utc needs cryptography 42; Debian 12 has 38.
    when = getattr(cert, "not_valid_after_utc", None)
    if when is None:
        when = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def rows(dep: CliDeployment, *args: str) -> list[dict]:
    done = dep.cli("status", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_json_keys_are_stable(dep: CliDeployment) -> None:
    dep.issue()
    (row,) = rows(dep)
    assert sorted(row) == sorted(report.JSON_KEYS)
    assert sorted(report.JSON_KEYS) == sorted(
        [
            "lineage", "served", "served_expires", "links", "pending", "state",
            "records_wanted", "records_published", "records_visible", "dns_error",
            "visible_since", "hold_until", "hold_left", "owned_records", "last_check",
            "last_error",
            # added with the endpoint gate, issuer records, aliases and the audit
            "waiting_for", "until", "issuer_records", "aliases", "endpoints", "repaired",
        ]
    ), "a monitoring interface: add keys, never rename or remove them"


def test_json_during_a_rollover(dep: CliDeployment) -> None:
    dep.issue()
    dep.renew()
    (row,) = rows(dep)
    assert row["lineage"] == dep.host
    assert (row["served"], row["links"], row["pending"]) == (1, 1, 2)
    cert1 = dep.config / "archive" / dep.host / "cert1.pem"
    assert row["served_expires"] == pytest.approx(expiry(cert1))
    assert row["records_wanted"] == 2 and row["records_published"] == 2
    assert row["records_visible"] == 2, "both records validate through Unbound"
    assert row["dns_error"] is None and row["last_error"] is None
    assert row["state"].startswith("hold: caches may still have the old RRset")
    assert row["hold_until"] is not None and 0 <= row["hold_left"] <= dep.lab.record_ttl + 1
    assert len(row["owned_records"]) == 2
    offline = rows(dep, "--offline")[0]
    assert offline["records_visible"] is None and offline["served"] == 1


def test_table(dep: CliDeployment) -> None:
    dep.issue()
    dep.renew()
    done = dep.cli("status")
    assert done.returncode == 0 and done.stderr == ""
    header, line = done.stdout.splitlines()
    row = cells(header, line)
    day = datetime.datetime.fromtimestamp(
        expiry(dep.config / "archive" / dep.host / "cert1.pem"), datetime.timezone.utc
    ).strftime("%Y-%m-%d")
    assert row["LINEAGE"] == dep.host and row["SERVED"] == "1"
    assert row["EXPIRES"].startswith(f"{day} (") and row["EXPIRES"].endswith(" d)")
    assert (row["PENDING"], row["PUBLISHED"], row["VISIBLE"]) == ("2", "2/2", "2/2")
    assert row["HOLD LEFT"].endswith(" s") and row["LAST CHECK"].endswith(" s ago")
    assert row["STATE"] == "hold: caches may still have the old RRset", "no epoch in the table"
    assert row["LAST ERROR"] == "-"


def test_table_shows_links_moved_by_hand_and_the_last_error(dep: CliDeployment) -> None:
    dep.issue()
    dep.renew()
    dep.renew()
    dep.repoint(2)
    assert dep.cli("check").returncode == 1
    done = dep.cli("status")
    assert done.returncode == 0
    row = cells(*done.stdout.splitlines())
    assert row["SERVED"] == "1 (links: 2)"
    assert "changed by hand" in row["LAST ERROR"]
    (data,) = rows(dep)
    assert data["links"] == 2 and "changed by hand" in data["last_error"]


def test_resolver_down_is_a_field_not_a_failure(dep: CliDeployment) -> None:
    dep.issue()
    data = dep.lineage_file
    path = dep.config / "dane-state" / f"{dep.host}.json"
    doc = json.loads(path.read_text())
    doc["settings"]["resolver"] = "127.0.0.1:9"  # discard: nothing answers
    path.write_text(json.dumps(doc))
    (row,) = rows(dep)
    assert row["records_visible"] is None
    assert "127.0.0.1:9" in row["dns_error"]
    assert row["served"] == data.rollover.served.number  # type: ignore[union-attr]


def test_no_lineage(dep: CliDeployment) -> None:
    dep.config.mkdir(parents=True)
    done = dep.cli("status")
    assert done.returncode == 0
    assert done.stdout.strip() == f"no lineage is managed by certbot-dane in {dep.config}"
    assert rows(dep) == []


def test_unknown_lineage(dep: CliDeployment) -> None:
    dep.issue()
    done = dep.cli("status", "--cert-name", "nope.dane.test")
    assert done.returncode == 2
    assert "'nope.dane.test' is not managed" in one_error_line(done)
