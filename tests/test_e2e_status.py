"""Status tells the truth: for each reason a rollover waits, on the real lab.

``certbot-dane status`` runs the check's own steps as a dry run. Each test
below brings a lineage into one kind of wait with real certbot, BIND,
Unbound and Pebble, then asks status, runs ``certbot-dane check`` and asks
status again: the check's line and status's ``state`` (JSON and table) must
say the same thing, ``waiting_for`` must name the reason, and status must
never say "ready to switch" while a check would wait.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import CliDeployment, cells, host_for, one_error_line
from tests.lab.lab import Lab
from tests.lab.service import DaneService
from tests.netfakes import LaggingSecondary

pytestmark = pytest.mark.lab


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    return CliDeployment(lab, tmp_path, host_for(request, "st"))


def with_option(args: list[str], name: str, value: str) -> list[str]:
    """``args`` with the value of option ``name`` replaced."""
    changed = list(args)
    changed[changed.index(name) + 1] = value
    return changed


def table_row(dep: CliDeployment) -> dict[str, str]:
    done = dep.cli("status")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    header, line, *_details = done.stdout.splitlines()
    return cells(header, line)


def agree(dep: CliDeployment, waiting_for: str) -> dict:
    """Status, a check, status again: one reason, said the same way by all three.

    Returns the JSON row after the check.
    """
    before = dep.status()
    done = dep.check()
    assert done.returncode == 0, done.stderr
    row = dep.status()
    assert row["waiting_for"] == before["waiting_for"] == waiting_for, (before, row)
    assert row["state"] == before["state"]
    assert done.stdout == f"{dep.host}: nothing to do; waiting: {row['state']}\n"
    assert "ready to switch" not in row["state"]
    assert table_row(dep)["STATE"] == row["state"]
    return row


def check_until(dep: CliDeployment, waiting_for: str, limit: int = 30) -> dict:
    """Check every second until status says the lineage waits for ``waiting_for``."""
    for _ in range(limit):
        done = dep.check()
        assert done.returncode == 0, done.stderr
        row = dep.status()
        if row["waiting_for"] == waiting_for:
            return row
        time.sleep(1.0)
    raise AssertionError(f"never waiting for {waiting_for}: {dep.status()}")


def test_a_resolver_without_ad_is_waited_for(dep: CliDeployment) -> None:
    """--dane-resolver at the lab's BIND, which answers authoritatively and never
    sets AD: after the hold, the check waits for validation, and so says status."""
    bind = f"127.0.0.1:{dep.lab.auth_port}"
    dep.certbot(
        "run", *dep.dns_args(), *with_option(dep.dane_args(), "--dane-resolver", bind),
        "-d", dep.host,
    )
    dep.renew()
    check_until(dep, "validation")
    row = agree(dep, "validation")
    assert row["state"] == (
        "the validating resolver does not yet return the new records with AD "
        f"({dep.owner}: the resolver returns them without AD; it does not validate, or the "
        "zone's chain of trust is broken)"
    )
    assert (row["served"], row["pending"], row["until"]) == (1, 2, None)
    assert row["records_visible"] == 0, "no answer without AD counts as visible"
    assert dep.served() == 1


@pytest.fixture
def secondary(lab: Lab) -> Iterator[LaggingSecondary]:
    server = LaggingSecondary(lab.auth_address)
    yield server
    server.close()


def test_a_lagging_authoritative_server_is_waited_for(
    dep: CliDeployment, secondary: LaggingSecondary
) -> None:
    """--dane-nameservers lists BIND and a secondary that never gets the new record."""
    port = secondary.address[1]
    servers = f"127.0.0.1:{dep.lab.auth_port},127.0.0.1:{port}"
    dep.certbot(
        "run", *dep.dns_args(), *with_option(dep.dane_args(), "--dane-nameservers", servers),
        "-d", dep.host,
    )
    secondary.freeze(dep.owner)
    dep.renew()
    assert len(dep.authoritative_records()) == 2, "the primary serves both records"
    row = agree(dep, "authoritative")
    assert row["state"] == (
        "the new records are not yet on every authoritative server "
        f"({dep.owner} missing at 127.0.0.1:{port})"
    )
    assert row["until"] is None and row["hold_left"] is None and row["visible_since"] is None
    time.sleep(dep.lab.record_ttl + dep.margin + 1)
    agree(dep, "authoritative")
    assert dep.served() == 1, "no switch while one authoritative server lags"


def test_the_hold_is_waited_for_with_its_end(lab: Lab, tmp_path: Path) -> None:
    """A large --dane-hold-margin: waiting for the hold, until a known moment."""
    margin = 3600
    dep = CliDeployment(lab, tmp_path, "st-hold.dane.test", margin=margin)
    dep.issue()
    dep.renew()
    row = agree(dep, "hold")
    assert row["state"] == "hold: caches may still have the old RRset"
    assert row["until"] == row["hold_until"]
    assert row["until"] == pytest.approx(row["visible_since"] + lab.record_ttl + margin)
    assert margin - 60 < row["hold_left"] <= margin + lab.record_ttl
    assert table_row(dep)["HOLD LEFT"] in ("59 min", "60 min")
    assert dep.served() == 1


def test_a_refused_update_is_a_store_error_with_the_stores_message(
    dep: CliDeployment,
) -> None:
    """The record store's credentials file gets a wrong TSIG secret after issuance:
    the renewal's publish is refused, the check fails with the store's message, and
    status says the next check publishes again and what failed last time."""
    credentials = dep.lab.rfc2136_ini(dep.root / "dane-rfc2136.ini")
    dep.certbot(
        "run", *dep.dns_args(), *dep.dane_args(), "--dane-credentials", str(credentials),
        "-d", dep.host,
    )
    good = credentials.read_text()
    credentials.write_text(re.sub(r"(?m)^dns_rfc2136_secret = .*$", "dns_rfc2136_secret = "
                                  + "c2VjcmV0" * 5 + "YQ==", good))
    renewal = dep.renew(ok=False)
    assert renewal.returncode != 0, "certbot reports the renewal's failed deploy"
    before = dep.status()
    done = dep.check()
    assert done.returncode == 1 and done.stdout == ""
    row = dep.status()
    message = row["last_error"]
    assert message and message.startswith("rfc2136 store: cannot add 1 TLSA record(s)")
    assert "c2VjcmV0" not in message, "no secret in a message"
    assert one_error_line(done) == f"certbot-dane: {dep.host}: {message}"
    assert row["waiting_for"] == before["waiting_for"] == "store_error"
    assert row["state"] == before["state"] == (
        f"next check: publishing 1 record(s) again; it failed last time: {message}"
    )
    table = table_row(dep)
    assert table["STATE"] == "next check: publishing 1 record(s) again"
    assert table["LAST ERROR"] == message
    assert (row["served"], row["pending"], row["records_published"]) == (1, 2, 1)
    # The fix: the right secret; the next check publishes.
    credentials.write_text(good)
    done = dep.check()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{dep.host}: published 1 record(s)")
    assert dep.status()["last_error"] is None


def test_an_endpoint_behind_is_waited_for(dep: CliDeployment, tmp_path: Path) -> None:
    """--dane-endpoints at a TLS stand-in that keeps presenting the old certificate:
    after the switch the old record stays, and status says which endpoint is behind."""
    stand_in = tmp_path / "stand-in"
    stand_in.mkdir()
    with DaneService(stand_in) as service:
        endpoint = f"127.0.0.1:{service.port}"
        dep.certbot(
            "run", *dep.dns_args(), *dep.dane_args(), "--dane-endpoints", endpoint,
            "-d", dep.host,
        )
        for name in ("fullchain.pem", "privkey.pem"):
            (stand_in / name).write_bytes((dep.dane_dir() / name).read_bytes())
        old = dep.authoritative_records()
        dep.renew()
        for _ in range(30):
            row = dep.status()
            done = dep.check()
            ended = time.time()
            assert done.returncode == 0, done.stderr
            ready = "ready to switch" in row["state"]
            switched = "switched to version 2" in done.stdout
            if ready:
                assert switched, f"status said {row['state']!r}, the check: {done.stdout!r}"
            elif switched:
                # Only a hold that ended meanwhile may make the check switch.
                assert row["waiting_for"] == "hold" and row["until"] <= ended, row
            if dep.status()["waiting_for"] == "endpoint":
                break
            time.sleep(1.0)
        assert dep.served() == 2
        row = agree(dep, "endpoint")
        assert row["state"] == (
            f"endpoint behind: {endpoint} presents version 1 (old); the old records stay"
        )
        (lag,) = row["endpoints"]
        assert (lag["endpoint"], lag["ok"], lag["presents"]) == (endpoint, False, "version 1 (old)")
        assert lag["behind_since"] is not None
        assert old < dep.authoritative_records(), "the old record stays"
        # The fix: the service presents the served certificate (a reload would).
        for name in ("fullchain.pem", "privkey.pem"):
            (stand_in / name).write_bytes((dep.dane_dir() / name).read_bytes())
        done = dep.check()
        assert done.stdout == f"{dep.host}: retired 1 record(s)\n", done.stdout
        assert dep.authoritative_records() & old == set()


def test_last_check_is_when_a_check_ran_not_when_the_state_was_written(
    dep: CliDeployment,
) -> None:
    dep.issue()
    path = dep.config / "dane-state" / f"{dep.host}.json"
    written = path.read_bytes(), path.stat().st_mtime_ns
    first = dep.status()["last_check"]
    time.sleep(1.1)
    assert dep.status()["last_check"] == first, "status is no check"
    began = time.time()
    done = dep.check()
    assert done.stdout == f"{dep.host}: nothing to do\n"
    assert (path.read_bytes(), path.stat().st_mtime_ns) == written, "a check that changes nothing"
    moved = dep.status()["last_check"]
    assert moved > first and moved >= began - 0.01
    assert json.loads(path.read_text())["last_check"] < moved
