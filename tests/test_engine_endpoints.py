"""The engine's endpoint gate over an in-memory DNS, with the probe scripted.

What an endpoint presents is decided by the test (``endpoints.probe`` is
replaced), so the gate's bookkeeping can be followed check by check: the
old records stay while an endpoint is behind, ``status`` (a dry run) says
the same as the check, and past the timeout the check fails.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from certbot_dane import endpoints, report
from certbot_dane.engine import Engine
from tests.test_engine import NAME, Env

ENDPOINT = "127.0.0.1:2525/smtp"


class Script:
    """What the endpoint presents: the version number it loaded."""

    def __init__(self) -> None:
        self.loaded = 1
        self.calls = 0

    def probe(
        self,
        endpoint: endpoints.Endpoint,
        remaining: dict,
        known: list,
        timeout: float = 0.0,
    ) -> endpoints.Presented:
        self.calls += 1
        by_number = {k.number: k for k in known}
        version = by_number[self.loaded]
        ok = all(
            any(r in version.records for r in records) for records in remaining.values()
        )
        return endpoints.Presented(endpoint, ok, f"version {version.number} ({version.role})")


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path, reload="true")
    e.settings = replace(e.settings, endpoints=ENDPOINT, endpoint_timeout=500)
    e.lineage.renew()
    e.engine().install(NAME, e.settings)
    return e


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    s = Script()
    monkeypatch.setattr(endpoints, "probe", s.probe)
    return s


def switch(env: Env) -> tuple[set, set]:
    """Renew and check until the links serve version 2: (old records, new records)."""
    old = env.records_of(1)
    env.lineage.renew()
    env.engine().check(NAME)
    new = env.records_of(2)
    env.now += 1000
    env.engine().check(NAME)
    assert env.served() == 2
    return old, new


def status(env: Env) -> dict:
    (run,) = Engine.explain_many(env.engine(), [NAME]).values()
    assert not isinstance(run, Exception)
    return report.status_row(run, env.config, env.now, dns=False)


def test_old_records_stay_while_the_endpoint_presents_the_old_version(
    env: Env, script: Script
) -> None:
    old, new = switch(env)
    for _ in range(3):
        env.now += 100
        result = env.engine().check(NAME)
        assert result.error is None and result.waiting_for == "endpoint"
        assert env.dns.records() == old | new
    script.loaded = 2
    env.now += 100
    result = env.engine().check(NAME)
    assert "retired 1 record(s)" in result.steps
    assert env.dns.records() == new


def test_status_names_the_endpoint_behind_and_since_when(env: Env, script: Script) -> None:
    switch(env)
    behind_since = env.now
    env.now += 100
    row = status(env)
    assert row["waiting_for"] == "endpoint"
    assert row["endpoints"] == [
        {
            "endpoint": ENDPOINT,
            "ok": False,
            "presents": "version 1 (old)",
            "behind_since": behind_since,
        }
    ]
    assert f"endpoint behind: {ENDPOINT} presents version 1 (old)" in row["state"]
    lines = report.table([row], env.now).splitlines()
    assert f"  endpoint {ENDPOINT}: BEHIND for 100 s: presents version 1 (old)" in lines


def test_past_the_timeout_status_shows_the_error_the_check_recorded(
    env: Env, script: Script
) -> None:
    switch(env)
    env.now += 600
    result = env.engine().check(NAME)
    assert result.error and result.error.startswith("endpoint not caught up after 600 s")
    row = status(env)
    assert row["state"] == row["last_error"]
    assert row["last_error"].startswith("endpoint not caught up after 600 s")
