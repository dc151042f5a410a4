"""The endpoint gate against a real Postfix: real certbot, Pebble, BIND 9, Unbound.

Postfix's smtpd serves ``combined.pem`` from the dane directory over SMTP
STARTTLS, and the DANE probe checks it as a sending MTA does, every 300 ms,
against the TLSA RRset the validating resolver returns. One smtpd serves
every session (``process_limit=1``) and is never replaced by itself
(``max_use`` high): only a reload or a restart makes Postfix present a new
certificate. With ``--dane-endpoints`` the old record must stay in DNS until
Postfix presents the new certificate, however late that is.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from tests.deployment import Deployment
from tests.lab import pki
from tests.lab.lab import Lab
from tests.lab.postfix import Postfix
from tests.lab.probe import Prober, dane_check
from tests.lab.process import free_port
from tests.lab.service import DaneService
from tests.lab.smtp import StartTLSError

pytestmark = pytest.mark.lab

CHECK_INTERVAL = 1.0
#: Sessions one smtpd serves before Postfix replaces it: far more than a test
#: makes, so that only a reload or a restart loads the certificate anew.
MAX_USE = 100_000
TRUE = "/bin/true"


def host_for(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return f"ep-{slug}.dane.test"


def spki(cert: x509.Certificate) -> str:
    return pki.spki_sha256(cert)


def version_spki(dep: Deployment, number: int) -> str:
    """The SPKI digest of a version's certificate, from certbot's archive."""
    path = dep.config / "archive" / dep.host / f"cert{number}.pem"
    return spki(x509.load_pem_x509_certificate(path.read_bytes()))


@dataclass
class Watcher:
    """What a service presents, sampled in the background: (wall time, SPKI)."""

    presented: Callable[[], x509.Certificate]
    interval: float = 0.2
    samples: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watcher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.time()
            try:
                self.samples.append((began, spki(self.presented())))
            except (StartTLSError, OSError):
                pass  # the service is being restarted
            self._stop.wait(self.interval)

    def first(self, digest: str) -> float:
        """When the service was first seen presenting ``digest``."""
        return min(t for t, d in self.samples if d == digest)

    def at(self, when: float) -> str:
        """What the service was last seen presenting before ``when``."""
        return max((s for s in self.samples if s[0] <= when), key=lambda s: s[0])[1]


@dataclass
class Site:
    """A lineage whose service is a private Postfix, probed and watched."""

    dep: Deployment
    postfix: Postfix
    prober: Prober
    watcher: Watcher

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.postfix.port}/smtp"

    def restart_postfix(self) -> None:
        """Stop and start Postfix, as an administrator would by hand.

        The probe pauses while Postfix is down: a refused connection is a
        service down, not a DANE failure, and a sending MTA retries later.
        """
        self.prober.stop()
        self.postfix.stop()
        self.postfix.start()
        self.prober.start()


def wait_validated(dep: Deployment, port: int, starttls: str | None, limit: float = 30) -> None:
    """The first deploy pins at once; wait until its record validates."""
    deadline = time.monotonic() + limit
    while True:
        result = dane_check(dep.host, port, dep.lab.resolver, dep.owner, starttls=starttls)
        if result.ok:
            return
        assert time.monotonic() < deadline, f"first record never validated: {result.reason}"
        time.sleep(0.3)


@contextmanager
def postfix_site(
    lab: Lab,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    *,
    reload: str | None = None,
    gate: bool = True,
    extra: tuple[str, ...] = (),
    more_endpoints: tuple[str, ...] = (),
) -> Iterator[Site]:
    """Issue with ``-i dane``, serve the dane directory with Postfix, probe it.

    ``reload``: the ``--dane-reload`` command (default: Postfix's own);
    ``gate``: list Postfix in ``--dane-endpoints``, before ``more_endpoints``
    (which the caller serves).
    """
    dep = Deployment(lab, tmp_path, host_for(request))
    port = free_port(set())
    postfix = Postfix(
        tmp_path / "postfix",
        dep.dane_dir(),
        port=port,
        hostname=dep.host,
        max_use=MAX_USE,
        process_limit=1,
    )
    args = ["--dane-reload", reload or postfix.reload_command, *extra]
    listed = ([f"127.0.0.1:{port}/smtp"] if gate else []) + list(more_endpoints)
    if listed:
        args += ["--dane-endpoints", ",".join(listed)]
    dep.issue(*args)
    assert dep.served() == 1
    with ExitStack() as stack:
        stack.enter_context(postfix)
        wait_validated(dep, port, "smtp")
        prober = Prober(dep.host, port, lab.resolver, dep.owner, interval_ms=300, starttls="smtp")
        watcher = Watcher(lambda: postfix.presented())
        stack.enter_context(watcher)
        stack.enter_context(prober)
        yield Site(dep, postfix, prober, watcher)


def check_until_switched(dep: Deployment, version: int, limit: int = 60) -> str:
    """Check every second until the links serve ``version``; the switching check's output."""
    for _ in range(limit):
        done = dep.check()
        assert done.returncode == 0, done.stderr
        if dep.served() == version:
            return done.stdout
        time.sleep(CHECK_INTERVAL)
    raise AssertionError(f"no switch to version {version}: {dep.status()}")


def assert_no_probe_failures(prober: Prober) -> None:
    prober.stop()
    assert prober.successes, "the probe never ran"
    assert prober.failures == [], f"DANE probe failures: {prober.failures[:5]}"


def retired_at(dep: Deployment) -> float:
    (when,) = dep.events("retired")
    return when


def endpoint_rows(row: dict) -> dict[str, dict]:
    return {item["endpoint"]: item for item in row["endpoints"]}


# Postfix reloaded by certbot-dane ---------------------------------------------


def test_old_record_goes_only_once_postfix_presents_the_new_certificate(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with postfix_site(lab, tmp_path, request) as site:
        dep = site.dep
        old = dep.authoritative_records()
        dep.renew()
        assert len(dep.authoritative_records()) == 2
        check_until_switched(dep, 2)
        for _ in range(10):
            if dep.events("retired"):
                break
            time.sleep(CHECK_INTERVAL)
            assert dep.check().returncode == 0
        new = dep.authoritative_records()
        assert len(new) == 1 and not new & old
        row = dep.status()
        assert row["waiting_for"] is None and "settled" in row["state"]
        assert row["endpoints"] == [], "settled: nothing left to retire, no endpoint to probe"
        assert_no_probe_failures(site.prober)
    # Postfix presented the new certificate before the old record went.
    retired = retired_at(dep)
    assert site.watcher.first(version_spki(dep, 2)) < retired
    assert site.watcher.at(retired) == version_spki(dep, 2)
    assert max(dep.events("reloaded")) < retired


def test_without_endpoints_the_old_record_goes_right_after_the_reload(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with postfix_site(lab, tmp_path, request, gate=False) as site:
        dep = site.dep
        dep.renew()
        switching = check_until_switched(dep, 2)
        assert "switched to version 2, reloaded, retired 1 record(s)" in switching
        assert len(dep.authoritative_records()) == 1
        row = dep.status()
        assert row["endpoints"] == [] and "settled" in row["state"]
        assert_no_probe_failures(site.prober)


def test_without_endpoints_a_reload_that_does_nothing_breaks_dane(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The control for the gate: without it the old record goes while Postfix
    still presents the old certificate, and a DANE client fails."""
    with postfix_site(lab, tmp_path, request, reload=TRUE, gate=False) as site:
        dep = site.dep
        site.prober.stop()  # it is expected to fail here
        dep.renew()
        switching = check_until_switched(dep, 2)
        assert "retired 1 record(s)" in switching
        assert spki(site.postfix.presented()) == version_spki(dep, 1)
        lab.flush_resolver(dep.owner)
        stale = dane_check(dep.host, site.postfix.port, lab.resolver, dep.owner, starttls="smtp")
        assert stale.reason == "no matching DANE TLSA records"


# Postfix behind: a reload command that does nothing ----------------------------


def test_old_record_stays_while_postfix_is_behind_until_restarted_by_hand(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with postfix_site(lab, tmp_path, request, reload=TRUE) as site:
        dep = site.dep
        old = dep.authoritative_records()
        dep.renew()
        switching = check_until_switched(dep, 2)
        assert "reloaded" in switching
        first = dep.status()
        assert first["waiting_for"] == "endpoint"
        behind = endpoint_rows(first)[site.endpoint]
        assert behind["ok"] is False and behind["presents"] == "version 1 (old)"
        since = behind["behind_since"]
        assert since is not None and since <= time.time()
        for _ in range(3):
            time.sleep(CHECK_INTERVAL)
            done = dep.check()
            assert done.returncode == 0, done.stderr
            assert (
                f"waiting: endpoint behind: {site.endpoint} presents version 1 (old); "
                "the old records stay" in done.stdout
            )
            assert old < dep.authoritative_records()
            row = dep.status()
            assert row["waiting_for"] == "endpoint" and row["served"] == 2
            assert endpoint_rows(row)[site.endpoint]["behind_since"] == since
        assert spki(site.postfix.presented()) == version_spki(dep, 1)

        restarted = time.time()
        site.restart_postfix()
        done = dep.check()
        assert done.returncode == 0, done.stderr
        assert "retired 1 record(s)" in done.stdout
        new = dep.authoritative_records()
        assert len(new) == 1 and not new & old
        assert "settled" in dep.status()["state"]
        assert_no_probe_failures(site.prober)
    retired = retired_at(dep)
    assert retired > restarted
    samples = site.watcher.samples
    assert {d for t, d in samples if t < restarted} == {version_spki(dep, 1)}
    assert {d for t, d in samples if t > retired} == {version_spki(dep, 2)}


def test_a_second_endpoint_that_catches_up_late_keeps_the_old_record(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Postfix is reloaded by certbot-dane; a second service loads its
    certificate only when it starts, and is restarted later by hand."""
    dep_dir = tmp_path / "config" / "dane" / host_for(request)
    late = DaneService(dep_dir, free_port(set()), per_connection=False)
    second = f"127.0.0.1:{late.port}"
    with postfix_site(lab, tmp_path, request, more_endpoints=(second,)) as site:
        dep = site.dep
        assert dep.dane_dir() == dep_dir
        with late, Prober(
            dep.host, late.port, lab.resolver, dep.owner, interval_ms=300
        ) as late_prober:
            old = dep.authoritative_records()
            dep.renew()
            check_until_switched(dep, 2)
            for _ in range(3):
                time.sleep(CHECK_INTERVAL)
                done = dep.check()
                assert done.returncode == 0, done.stderr
                assert old < dep.authoritative_records()
            row = dep.status()
            assert row["waiting_for"] == "endpoint"
            rows = endpoint_rows(row)
            assert rows[site.endpoint]["ok"] is True
            assert rows[site.endpoint]["presents"] == "version 2 (served)"
            assert rows[second]["ok"] is False
            assert rows[second]["presents"] == "version 1 (old)"
            assert f"endpoint behind: {second} presents version 1 (old)" in row["state"]

            late.restart()
            done = dep.check()
            assert done.returncode == 0, done.stderr
            assert "retired 1 record(s)" in done.stdout
            new = dep.authoritative_records()
            assert len(new) == 1 and not new & old
            assert_no_probe_failures(late_prober)
        assert_no_probe_failures(site.prober)
    assert late.restarts == 1 and late.load_errors == 0


# Past the endpoint timeout ------------------------------------------------------


def test_past_the_endpoint_timeout_the_check_fails_and_the_old_record_stays(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    timeout = 3
    extra = ("--dane-endpoint-timeout", str(timeout))
    with postfix_site(lab, tmp_path, request, reload=TRUE, extra=extra) as site:
        dep = site.dep
        old = dep.authoritative_records()
        dep.renew()
        check_until_switched(dep, 2)
        since = endpoint_rows(dep.status())[site.endpoint]["behind_since"]
        assert since is not None
        time.sleep(max(0.0, since + timeout - time.time()) + 0.5)

        for _ in range(2):
            done = dep.check()
            assert done.returncode == 1
            assert done.stdout == ""
            lines = done.stderr.splitlines()
            assert len(lines) == 1, done.stderr
            assert lines[0].startswith(f"certbot-dane: {dep.host}: endpoint not caught up after ")
            assert f"{site.endpoint} presents version 1 (old)" in lines[0]
            assert "the old records stay" in lines[0]
            assert old < dep.authoritative_records()
            lab.flush_resolver(dep.owner)
            assert dane_check(
                dep.host, site.postfix.port, lab.resolver, dep.owner, starttls="smtp"
            ).ok

        renew = dep.certbot("renew", "--no-random-sleep-on-renew", ok=False)
        output = renew.stdout + renew.stderr
        assert renew.returncode != 0
        assert f"Failed to renew certificate {dep.host} with error: dane: lineage " in output
        assert f"{site.endpoint} presents version 1 (old)" in output
        assert "1 renew failure(s)" in output
        assert old < dep.authoritative_records()
        row = dep.status()
        assert row["waiting_for"] == "endpoint"
        assert "endpoint not caught up" in row["last_error"]

        # Fixed by hand: the next check retires the old record and succeeds.
        site.restart_postfix()
        done = dep.check()
        assert done.returncode == 0, done.stderr
        assert "retired 1 record(s)" in done.stdout
        assert dep.status()["last_error"] is None
        assert_no_probe_failures(site.prober)
