"""The promise, end to end: real certbot, Pebble, BIND 9, Unbound and openssl.

A service re-reads the dane directory on every connection, and a DANE probe
checks it every 300 ms against the TLSA RRset the validating resolver
returns (AD required). No probe may fail while certificates roll over.
"""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from tests.deployment import Deployment, certbot_dane_path
from tests.lab.lab import Lab
from tests.lab.probe import Prober, dane_check
from tests.lab.service import DaneService

pytestmark = pytest.mark.lab

CHECK_INTERVAL = 1.0
FAKE_SYSTEMD_RUN = Path(__file__).parent / "bin" / "fake-systemd-run"
D = TypeVar("D", bound=Deployment)


def wait_probe_ok(dep: Deployment, service: DaneService, limit: float = 30.0) -> None:
    """First deploy pins at once; wait until the record validates before probing."""
    deadline = time.monotonic() + limit
    while True:
        result = dane_check(dep.host, service.port, dep.lab.resolver, dep.owner)
        if result.ok:
            return
        assert time.monotonic() < deadline, f"first record never validated: {result.reason}"
        time.sleep(0.3)


@contextmanager
def issued_served_probed(dep: D) -> Iterator[D]:
    """Issue with ``-i dane``, serve the dane directory, probe it from then on."""
    dep.issue()
    assert dep.served() == 1
    with DaneService(dep.dane_dir()) as service:
        wait_probe_ok(dep, service)
        prober = Prober(dep.host, service.port, dep.lab.resolver, dep.owner, interval_ms=300)
        dep.prober = prober  # type: ignore[attr-defined]
        dep.service = service  # type: ignore[attr-defined]
        with prober:
            yield dep


@pytest.fixture
def served(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """A lineage issued with ``-i dane``, served, and probed from then on."""
    host = f"{request.node.name.replace('_', '-')[:40]}.dane.test".lower()
    with issued_served_probed(Deployment(lab, tmp_path, host)) as dep:
        yield dep


def assert_no_probe_failures(dep: Deployment) -> None:
    prober: Prober = dep.prober  # type: ignore[attr-defined]
    prober.stop()
    failures = prober.failures
    assert prober.successes, "the probe never ran"
    service: DaneService = dep.service  # type: ignore[attr-defined]
    assert failures == [], (
        f"DANE probe failures: {failures[:5]}; the service had {service.load_errors} load "
        f"error(s), {service.handshake_errors} handshake error(s), last: {service.last_error}"
    )


def roll_over_with_a_new_key(dep: Deployment) -> None:
    """Renew with a new key and check until the switch; assert each visible step.

    The new record is published next to the old one while the links stay;
    after the switch the old record is gone and the links serve live/'s
    certificate; the probe never failed.
    """
    old = dep.authoritative_records()
    assert len(old) == 1
    dep.renew()
    assert dep.served() == 1, "the links stay until the new record is live"
    both = dep.authoritative_records()
    assert old < both and len(both) == 2, "the new record is published next to the old"
    dep.check_until_switched(2, interval=CHECK_INTERVAL)
    assert dep.served() == 2
    new = dep.authoritative_records()
    assert len(new) == 1 and not new & old, "the old record must be gone after the switch"
    assert (dep.dane_dir() / "fullchain.pem").read_bytes() == (
        dep.config / "live" / dep.host / "fullchain.pem"
    ).read_bytes()
    assert_no_probe_failures(dep)


def test_certbot_lists_the_plugin(lab: Lab, tmp_path: Path) -> None:
    done = lab.run_certbot(tmp_path / "config", "plugins")
    assert done.returncode == 0, done.stderr
    assert "* dane" in done.stdout


def test_renewal_with_new_key_never_breaks_dane(served: Deployment) -> None:
    dep = served
    roll_over_with_a_new_key(dep)
    # The switch came at the first or second check after visibility + hold.
    data = dep.lineage_file
    visible = max(dep.events("visible"))
    switched = max(dep.events("switched"))
    hold = dep.lab.record_ttl + dep.margin
    late_checks = [t for t, _ in dep.checks if visible + hold <= t < switched]
    assert len(late_checks) <= 2, f"{len(late_checks)} checks after the hold did not switch"
    assert data.rollover.owned == data.rollover.served.records  # type: ignore[union-attr]


def test_the_hold_ends_with_a_check_armed_by_certbot_renew(
    served: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """certbot renew arms a one-shot check at the hold's end (systemd-run, here a
    stand-in that runs the command after the delay): the switch comes then,
    with no timer run and no check by hand."""
    dep = served
    log = tmp_path / "systemd-run.log"
    monkeypatch.setenv("CERTBOT_DANE_SYSTEMD_RUN", str(FAKE_SYSTEMD_RUN))
    monkeypatch.setenv("FAKE_SYSTEMD_RUN_LOG", str(log))
    dep.renew()
    assert dep.served() == 1
    armed = log.read_text().splitlines()
    assert armed and f"--cert-name {dep.host}" in armed[0], armed
    assert f"--unit=certbot-dane-hold-{dep.host}-" in armed[0]
    deadline = time.monotonic() + 30
    while dep.served() != 2:
        assert time.monotonic() < deadline, f"the armed check never switched: {dep.status()}"
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while len(dep.authoritative_records()) != 1:
        assert time.monotonic() < deadline, "the old record was never retired"
        time.sleep(0.2)
    assert dep.checks == [], "no certbot-dane check was run by the test"
    assert_no_probe_failures(dep)


def test_key_reuse_switches_within_the_renewal(served: Deployment) -> None:
    dep = served
    old = dep.authoritative_records()
    dep.renew("--reuse-key")
    assert dep.served() == 2, "same key, same 3 1 1 record: nothing to wait for"
    assert dep.authoritative_records() == old
    assert dep.events("visible") == [], "no DNS observation was needed"
    assert_no_probe_failures(dep)


def test_two_renewals_before_the_switch(served: Deployment) -> None:
    dep = served
    first = dep.authoritative_records()
    dep.renew()
    second = dep.authoritative_records() - first
    dep.renew()
    records = dep.authoritative_records()
    assert first <= records, "the served version keeps its record"
    assert not second & records, "the skipped version's record is removed"
    assert dep.served() == 1
    dep.check_until_switched(3, interval=CHECK_INTERVAL)
    assert len(dep.authoritative_records()) == 1
    assert_no_probe_failures(dep)


def test_renewal_without_the_plugin_is_caught_by_check(served: Deployment) -> None:
    dep = served
    # A re-issue without -i dane: certbot drops installer = dane from the conf.
    dep.certbot("certonly", "--force-renewal", *dep.dns_args(), "-d", dep.host)
    conf = (dep.config / "renewal" / f"{dep.host}.conf").read_text()
    assert "installer = dane" not in conf
    assert dep.served() == 1, "the dane links never follow live/ blindly"
    dep.check_until_switched(2, interval=CHECK_INTERVAL)
    assert len(dep.authoritative_records()) == 1
    assert_no_probe_failures(dep)


def test_dns_server_down_during_renewal(served: Deployment) -> None:
    dep = served
    prober: Prober = dep.prober  # type: ignore[attr-defined]
    prober.stop()  # with BIND down the resolver has nothing to validate
    pid_file = dep.lab.authority.pid_file
    # The deploy hook runs after certbot saved the new certificate and before
    # renew_deploy: the DNS update then finds the server gone.
    hook = f"kill $(cat {pid_file})"
    done = dep.renew("--deploy-hook", hook, ok=False)
    try:
        assert done.returncode != 0
        assert "dane: lineage" in done.stderr + done.stdout or "dane" in done.stderr
        assert dep.served() == 1
        check = dep.check()
        assert check.returncode == 1
        assert check.stderr.count("\n") == 1 and "127.0.0.1" in check.stderr, check.stderr
        assert dep.served() == 1
        assert dep.status()["last_error"]
    finally:
        dep.lab.stop_authority()
        dep.lab.start_authority()
    prober.start()
    dep.check_until_switched(2, interval=CHECK_INTERVAL)
    assert dep.status()["last_error"] is None
    assert_no_probe_failures(dep)


def test_concurrent_checks(served: Deployment) -> None:
    dep = served
    dep.renew()
    time.sleep(dep.lab.record_ttl + dep.margin + 1)
    argv = [certbot_dane_path(), "--config-dir", str(dep.config), "check"]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    dep.check_until_switched(2, interval=CHECK_INTERVAL)
    switches = dep.events("switched")
    assert len(switches) == 2, "one initial pin and exactly one switch"
    assert_no_probe_failures(dep)


def test_one_check_rolls_several_lineages_together(lab: Lab, tmp_path: Path) -> None:
    """Three lineages renewed outside the plugin; one certbot-dane check run
    publishes all their records (one batched run), later runs switch them; no
    probe of any of them fails."""
    hosts = [f"batch{i}-together.dane.test" for i in range(3)]
    deps = [Deployment(lab, tmp_path, host) for host in hosts]
    with ExitStack() as stack:
        for dep in deps:
            stack.enter_context(issued_served_probed(dep))
        before = {dep.host: dep.authoritative_records() for dep in deps}
        for dep in deps:
            # A re-issue without -i dane: only certbot-dane check sees it.
            dep.certbot("certonly", "--force-renewal", *dep.dns_args(), "-d", dep.host)
        began = time.time()
        first = deps[0].check()
        ended = time.time()
        assert first.returncode == 0, first.stderr
        for dep in deps:
            published = [t for t in dep.events("published") if began <= t <= ended]
            assert published, f"{dep.host}: not published by the first check"
            assert dep.served() == 1, "the links stay until the new records are live"
            assert len(dep.authoritative_records()) == 2
        for _ in range(60):
            if all(dep.served() == 2 and dep.lineage_file.rollover.pending is None for dep in deps):
                break
            time.sleep(CHECK_INTERVAL)
            done = deps[0].check()
            assert done.returncode == 0, done.stderr
        for dep in deps:
            assert dep.served() == 2, f"{dep.host} did not switch"
            after = dep.authoritative_records()
            assert len(after) == 1 and not after & before[dep.host]
            assert_no_probe_failures(dep)
