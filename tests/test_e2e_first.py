"""The first version next to records already there, on the real lab.

When the TLSA owner names already hold records the new certificate does not
match, and a resolver may have cached them, the first version waits like a
rollover: its records are published next to the others, and the dane links
appear only once they are live. A DANE client that starts connecting the
moment the links exist never fails. When the owners held nothing, or only
records the certificate matches, the links appear at once, as before.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.cli_support import CliDeployment, host_for, spki_sha256
from tests.lab.lab import Lab
from tests.lab.probe import Prober
from tests.lab.service import DaneService

pytestmark = pytest.mark.lab

#: TTL of the record published by hand: what a cache may hold it for.
FOREIGN_TTL = 10
OTHER_KEY = "3 1 1 " + "ab" * 32


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    return CliDeployment(lab, tmp_path, host_for(request, "first"))


def publish_and_cache(lab: Lab, owner: str, rdata: str) -> float:
    """Publish ``rdata`` alone at ``owner`` and have Unbound cache it; return when."""
    lab.publish(owner, "TLSA", rdata, ttl=FOREIGN_TTL)
    answer = lab.resolver_query(owner, "TLSA")
    assert any(rdata.split()[-1] in rrset.to_text() for rrset in answer.answer), answer
    return time.time()


class LinksWatch:
    """Polls the dane directory every 10 ms; starts the DANE probe the moment the
    links exist (a service and its clients that start as soon as they can)."""

    def __init__(self, dep: CliDeployment, port: int) -> None:
        self.dep = dep
        self.prober = Prober(dep.host, port, dep.lab.resolver, dep.owner, interval_ms=200)
        self.appeared: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        links = self.dep.dane_dir() / "fullchain.pem"
        while not self._stop.is_set():
            if links.exists():
                self.appeared = time.time()
                self.prober.start()
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.prober.stop()


def dane_lines(done_stdout: str, host: str) -> list[str]:
    return [line for line in done_stdout.splitlines() if line.startswith(f"dane: {host}: ")]


def test_the_first_version_next_to_a_cached_record_waits_until_its_records_are_live(
    dep: CliDeployment,
) -> None:
    cached = publish_and_cache(dep.lab, dep.owner, OTHER_KEY)
    with DaneService(dep.dane_dir()) as service:
        watch = LinksWatch(dep, service.port)
        try:
            done = dep.issue()
            (line,) = dane_lines(done.stdout, dep.host)
            assert "already hold records this certificate does not match" in line
            assert f"the links in {dep.dane_dir()} appear only once its records are live" in line
            assert " in about " in line and " UTC)" in line, "says when"
            assert line.endswith(
                f"'certbot-dane check --wait --cert-name {dep.host}' waits for it"
            )
            assert watch.appeared is None and dep.served() is None

            row = dep.status()
            assert (row["served"], row["links"], row["pending"]) == (None, None, 1)
            assert row["waiting_for"] == "hold" and row["until"] is not None
            assert row["until"] >= cached + FOREIGN_TTL, "the cached record's TTL counts"
            assert f"(now: {row['state']})" in line
            check = dep.check()
            assert check.stdout == f"{dep.host}: nothing to do; waiting: {row['state']}\n"
            assert dep.authoritative_records() >= {OTHER_KEY}, "the other record stays"

            waited = dep.cli("check", "--wait", "--cert-name", dep.host, "--timeout", "120")
            assert waited.returncode == 0, waited.stderr
            assert waited.stdout.splitlines()[-1] == f"{dep.host}: switched to version 1"
            assert watch.appeared is not None and watch.appeared >= row["until"]
            assert watch.appeared >= cached + FOREIGN_TTL
            time.sleep(2.0)
        finally:
            watch.stop()
    assert watch.prober.successes, "the probe never ran"
    assert watch.prober.failures == [], watch.prober.failures[:3]
    assert dep.status()["state"] == "settled"


def test_the_first_version_on_owners_without_records_is_served_at_once(
    dep: CliDeployment,
) -> None:
    assert dep.authoritative_records() == set()
    done = dep.issue()
    assert dep.served() == 1
    (line,) = dane_lines(done.stdout, dep.host)
    assert line.startswith(f"dane: {dep.host}: services should read {dep.dane_dir()}")


def test_the_first_version_matching_a_record_already_there_is_served_at_once(
    dep: CliDeployment, tmp_path: Path
) -> None:
    """A 2 1 1 record of the issuing CA, published and cached before the first
    certificate exists: that certificate matches it, so nothing needs to wait."""
    # Pebble's root, then the intermediate that issues the certificates.
    begin = "-----BEGIN CERTIFICATE-----"
    _, issuer = (begin + block for block in dep.lab.pebble_roots().split(begin)[1:])
    intermediate = tmp_path / "intermediate.pem"
    intermediate.write_text(issuer)
    issuer_record = f"2 1 1 {spki_sha256(intermediate)}"
    publish_and_cache(dep.lab, dep.owner, issuer_record)
    done = dep.certbot("run", *dep.dns_args(), *dep.dane_args("211:25"), "-d", dep.host)
    assert dep.served() == 1
    (line,) = dane_lines(done.stdout, dep.host)
    assert line.startswith(f"dane: {dep.host}: services should read {dep.dane_dir()}")
    assert dep.authoritative_records() == {issuer_record}
    assert dep.status()["state"] == "settled"
