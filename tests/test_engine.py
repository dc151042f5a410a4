"""The engine shell over an in-memory DNS: ordering, faults and crashes."""
from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from certbot_dane import danedir, state, tlsa
from certbot_dane.dns import StoreError
from certbot_dane.engine import Engine
from certbot_dane.observe import Alias
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.certs import FakeLineage, TinyCA, new_key, pem
from tests.fakes import Crash, FakeDNS, FakeObserver, FakeStore
from tests.farm import count_steps, records_of

NAME = "mail.example.com"
OWNER = "_25._tcp.mail.example.com."


class Env:
    def __init__(self, root: Path, reload: str | None = None) -> None:
        self.config = root / "le"
        self.dns = FakeDNS()
        self.now = 1_000_000.0
        self.lineage = FakeLineage(self.config, NAME, [NAME])
        self.settings = Settings(
            targets="311:25",
            directory=str(self.config / "dane"),
            store="fake",
            hold_margin=10,
            record_ttl=60,
            reload=reload,
        )
        self.observers: list[FakeObserver] = []

    def engine(self, audit: bool = False) -> Engine:
        def observer(_settings: Settings) -> FakeObserver:
            obs = FakeObserver(self.dns)
            self.observers.append(obs)
            return obs

        return Engine(
            self.config,
            clock=lambda: self.now,
            store_factory=lambda _s, _c: FakeStore(self.dns),
            observer_factory=observer,  # type: ignore[arg-type]
            lock_timeout=5,
            audit=audit,
        )

    def served(self) -> int | None:
        return danedir.served_version(self.settings.directory, NAME)

    def served_pem(self) -> bytes:
        return (Path(self.settings.directory) / NAME / "fullchain.pem").read_bytes()

    def records_of(self, n: int) -> set[Record]:
        return records_of(self.config, NAME, n)

    def settle(self, checks: int = 10) -> None:
        """Checks with time passing until nothing is pending."""
        for _ in range(checks):
            result = self.engine().check(NAME)
            if result.settled:
                return
            self.now += 100
        raise AssertionError(f"not settled: {result}")


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    e.lineage.renew()
    return e


def test_install_publishes_and_pins(env: Env) -> None:
    result = env.engine().install(NAME, env.settings)
    assert result.error is None and result.settled
    assert env.served() == 1
    assert env.served_pem() == (env.lineage.archive / "fullchain1.pem").read_bytes()
    assert env.records_of(1) == env.dns.records()
    assert len(env.dns.records()) == 1
    mode = os.stat(Path(env.settings.directory) / NAME).st_mode & 0o777
    assert mode == 0o700


def test_renewal_publishes_next_to_old_and_switches_after_hold(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    old = env.records_of(1)
    env.lineage.renew()
    first = env.engine().check(NAME)
    assert first.waiting is not None and "hold" in first.waiting
    new = env.records_of(2)
    assert env.dns.records() == old | new
    assert env.served() == 1
    # Hold: TTL before the publish (60) plus margin (10), from first visibility.
    env.now += 69
    assert env.engine().check(NAME).waiting is not None
    assert env.served() == 1
    env.now += 1
    result = env.engine().check(NAME)
    assert result.settled, result
    assert env.served() == 2
    assert env.dns.records() == new
    assert env.served_pem() == (env.lineage.archive / "fullchain2.pem").read_bytes()


def test_no_switch_without_validation(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.dns.validating = False
    env.engine().check(NAME)
    env.now += 1000
    result = env.engine().check(NAME)
    assert "AD" in (result.waiting or "")
    assert env.served() == 1
    env.dns.validating = True
    assert env.engine().check(NAME).settled
    assert env.served() == 2


def test_dns_down_keeps_links_and_reports(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.dns.down = True
    result = env.engine().check(NAME)
    assert result.error and ("timed out" in result.error or "refused" in result.error)
    assert env.served() == 1
    data = state.load(env.config, NAME)
    assert data is not None and data.rollover.last_error == result.error
    env.now += 1000
    assert env.engine().check(NAME).error is not None
    assert env.served() == 1
    env.dns.down = False
    env.settle()
    assert env.served() == 2
    data = state.load(env.config, NAME)
    assert data is not None and data.rollover.last_error is None


def test_key_reuse_switches_at_once(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.observers.clear()
    env.lineage.renew(reuse_key=True)
    result = env.engine().check(NAME)
    assert result.settled
    assert env.served() == 2
    assert env.observers == [] or all(o.queries == 0 for o in env.observers)


def test_a_renewal_signed_by_a_bundled_intermediate_switches_at_once(
    env: Env, tmp_path: Path
) -> None:
    """The bundle's 2 1 1 records are published and proven ahead of time: a new
    key from a bundled CA matches a live record, one from another CA waits."""
    bundled, stranger = TinyCA(), TinyCA()
    bundle = tmp_path / "issuers.pem"
    bundle.write_bytes(pem(bundled.cert))
    env.settings.targets = "211:25,311:25"
    env.settings.issuers = str(bundle)
    env.engine().install(NAME, env.settings)
    ahead = Record(OWNER, 2, 1, 1, tlsa.association(bundled.cert, 1, 1))
    assert ahead in env.dns.records(), "published before any certificate needs it"
    env.settle()
    env.lineage.ca = bundled
    env.lineage.renew()
    result = env.engine().check(NAME)
    assert env.served() == 2, result
    assert "switched to version 2" in result.steps
    env.settle()
    assert ahead in env.dns.records(), "kept while it is in the bundle"
    env.lineage.ca = stranger
    env.lineage.renew()
    result = env.engine().check(NAME)
    assert env.served() == 2 and result.waiting_for == "hold", result
    env.settle()
    assert env.served() == 3


def test_a_bundle_that_is_no_ca_certificate_fails_the_check_and_changes_nothing(
    env: Env, tmp_path: Path
) -> None:
    bundle = tmp_path / "issuers.pem"
    bundle.write_bytes(pem(TinyCA().cert))
    env.settings.targets = "211:25,311:25"
    env.settings.issuers = str(bundle)
    env.engine().install(NAME, env.settings)
    env.settle()
    before = (env.dns.records(), state.load(env.config, NAME))
    bundle.write_bytes(pem(env.lineage.ca.issue(["x.example.com"], new_key())))
    result = env.engine().check(NAME)
    assert result.error is not None and "\n" not in result.error
    assert result.error.startswith(f"--dane-issuers {bundle}: certificate 1 (")
    assert "is not a CA certificate" in result.error
    after = state.load(env.config, NAME)
    assert env.dns.records() == before[0]
    assert after is not None and before[1] is not None
    assert after.rollover.issuers == before[1].rollover.issuers


def test_the_timers_audit_publishes_a_served_record_deleted_by_hand(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    (served,) = env.records_of(1)
    env.dns.zone[OWNER].discard(served)  # someone else's hand edit
    env.now += 60
    assert env.engine(audit=True).check(NAME).steps == [], "not due yet"
    assert served not in env.dns.records()
    env.now += env.settings.audit_interval
    result = env.engine().check(NAME)
    assert result.steps == [] and served not in env.dns.records(), "certbot renew never audits"
    result = env.engine(audit=True).check(NAME)
    assert served in env.dns.records()
    assert result.steps[0] == "repaired 1 record(s) missing from DNS"
    data = state.load(env.config, NAME)
    assert data is not None and [e.what for e in data.timeline][-3:-1] == ["missing", "repaired"]
    assert env.served() == 1 and data.rollover.owned == {served}


def test_the_audit_brings_the_ttl_in_line_and_the_next_hold_counts_the_old_one(
    env: Env,
) -> None:
    env.settings.record_ttl = 3600
    env.engine().install(NAME, env.settings)
    assert env.dns.ttls[OWNER] == 3600
    env.now += 100
    env.settings.record_ttl = 60
    # certbot renew with the new setting: DNS follows in the same run
    result = env.engine().install(NAME, env.settings)
    assert env.dns.ttls[OWNER] == 60
    assert result.steps == ["changed the TTL at 1 owner name(s) to 60 s"]
    changed = env.now
    env.lineage.renew()
    env.now += 10
    env.engine(audit=True).check(NAME)
    result = env.engine(audit=True).check(NAME)
    assert result.waiting_for == "hold", result
    assert result.until == changed + 3600 + env.settings.hold_margin


def test_a_first_version_next_to_a_record_clients_may_have_cached_waits(env: Env) -> None:
    old = Record(OWNER, 3, 1, 1, "ee" * 32)
    env.dns.zone[OWNER] = {old}
    env.dns.ttls[OWNER] = 600
    result = env.engine().install(NAME, env.settings)
    assert result.served is None and env.served() is None, "no links yet"
    assert result.waiting_for == "hold" and result.until == env.now + 600 + 10
    env.now += 611
    result = env.engine().check(NAME)
    assert env.served() == 1 and "switched to version 1" in result.steps
    assert old in env.dns.records(), "not ours: never deleted"


def test_an_alias_pointed_elsewhere_moves_the_records_at_the_next_audit(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = "_25._tcp.first.example.net.", "_25._tcp.second.example.net."
    where = {OWNER: first}

    def aliases_many(self: FakeObserver, owners: object) -> dict:
        return {o: Alias(where.get(o, o)) for o in owners}  # type: ignore[attr-defined]

    monkeypatch.setattr(FakeObserver, "aliases_many", aliases_many)
    env.engine().install(NAME, env.settings)
    assert {r.owner for r in env.dns.records()} == {first}
    where[OWNER] = second  # the operator points the CNAME at another record set
    env.now += env.settings.audit_interval
    env.engine(audit=True).check(NAME)
    env.engine(audit=True).check(NAME)
    assert {r.owner for r in env.dns.records()} == {first, second}, (
        "the old target keeps its record until the new one's is live: caches may "
        "still hold the old CNAME"
    )
    for _ in range(5):
        env.now += 100
        env.engine(audit=True).check(NAME)
    assert {r.owner for r in env.dns.records()} == {second}
    data = state.load(env.config, NAME)
    assert data is not None and data.rollover.alias_map() == {OWNER: second}
    assert env.served() == 1


def test_second_renewal_before_switch_replaces_pending(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.engine().check(NAME)
    skipped = env.records_of(2)
    env.lineage.renew()
    env.now += 5
    env.engine().check(NAME)
    assert not skipped & env.dns.records(), "records of the skipped version stay"
    assert env.records_of(1) <= env.dns.records()
    assert env.served() == 1
    env.settle()
    assert env.served() == 3
    assert env.dns.records() == env.records_of(3)


def test_renewal_without_plugin_is_noticed(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()  # nobody told the plugin
    result = env.engine().check(NAME)
    assert "new version 2" in result.steps
    assert env.served() == 1


def test_foreign_records_are_never_deleted(env: Env) -> None:
    foreign = Record(OWNER, 3, 1, 1, "ab" * 32)
    env.dns.zone[OWNER] = {foreign}
    env.dns.ttls[OWNER] = 60
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.settle()
    assert foreign in env.dns.records()
    assert ("delete", foreign) not in env.dns.operations


def test_archive_pruning_never_dangles_links(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.engine().check(NAME)
    env.lineage.prune(keep_from=2)
    assert env.served_pem()  # still readable: the plugin keeps its own copy
    env.settle()
    assert env.served() == 2


def test_reload_failure_keeps_old_records(tmp_path: Path) -> None:
    env = Env(tmp_path, reload="false")
    env.lineage.renew()
    env.engine().install(NAME, env.settings)
    old = env.records_of(1)
    env.lineage.renew()
    env.engine().check(NAME)
    env.now += 1000
    result = env.engine().check(NAME)
    assert env.served() == 2
    assert result.error and "reload command 'false' exited 1" in result.error
    assert old <= env.dns.records(), "old records must stay until the reload succeeded"
    env.settings.reload = "true"
    env.engine().install(NAME, env.settings)
    assert env.dns.records() == env.records_of(2)


def test_lost_state_adopts_the_served_links(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    state.state_path(env.config, NAME).unlink()
    env.engine().install(NAME, env.settings)
    assert env.served() == 1, "must not jump to live/ without a hold"
    env.settle()
    assert env.served() == 2


def test_concurrent_checks_do_not_interleave(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            env.engine().check(NAME)
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    adds = [r for op, r in env.dns.operations if op == "add"]
    assert len(adds) == len(set(adds)), "a record was added twice"


def _scenario(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.engine().check(NAME)
    env.now += 1000
    env.engine().check(NAME)


def _count_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    env = Env(tmp_path / "count")
    env.lineage.renew()
    _instrument(env, monkeypatch)
    _scenario(env)
    assert env.dns.crash_at is None
    return env.dns.steps  # type: ignore[attr-defined,no-any-return]


def _instrument(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make state saves and link flips count as steps that may crash."""
    count_steps(env.dns, monkeypatch, [(state, "save"), (danedir, "switch")])


def test_crash_between_every_two_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    total = _count_steps(tmp_path, monkeypatch)
    monkeypatch.undo()
    assert total > 10
    for k in range(total):
        env = Env(tmp_path / f"crash{k}")
        env.lineage.renew()
        _instrument(env, monkeypatch)
        env.dns.crash_at = k
        with pytest.raises(Crash):
            _scenario(env)
        served = env.served()
        if served is not None:
            # The promise at the crash: the served version's records are in DNS.
            assert env.records_of(served) <= env.dns.records(), f"crash at step {k}"
        monkeypatch.undo()
        env.now += 1000
        env.engine().install(NAME, env.settings)
        if env.lineage.version < 2:  # the crash came before the renewal
            env.lineage.renew()
        env.settle()
        assert env.served() == 2, f"crash at step {k}"
        assert env.dns.records() == env.records_of(2), f"crash at step {k}: leftovers"


def test_links_changed_by_hand_stop_the_rollover(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.engine().check(NAME)
    current = Path(env.settings.directory) / NAME / "current"
    current.unlink()
    current.symlink_to(".versions/7")  # neither served nor pending
    before = set(env.dns.records())
    env.now += 1000
    result = env.engine().check(NAME)
    assert result.error and "changed by hand" in result.error
    assert f"ln -sfn .versions/1 {current}" in result.error
    assert env.dns.records() == before, "nothing may change while the links are unexplained"


def test_links_moved_to_the_pending_version_by_hand_are_not_a_switch(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    env.engine().check(NAME)  # version 2 pending, in its hold
    current = Path(env.settings.directory) / NAME / "current"
    current.unlink()
    current.symlink_to(".versions/2")
    result = env.engine().check(NAME)
    assert result.error and "changed by hand" in result.error
    data = state.load(env.config, NAME)
    assert data is not None and data.rollover.served is not None
    assert data.rollover.served.number == 1, "a hand-made flip must not skip the hold"


def test_soft_store_error_is_retried_without_failing(env: Env) -> None:
    from certbot_dane.dns.base import SoftStoreError as Soft

    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    real_add = FakeStore.add

    def add_soft(self: FakeStore, records: object, ttl: int) -> None:
        raise Soft("exec store: publish of 1 record exited 128 (soft error, retried next run)")

    FakeStore.add = add_soft  # type: ignore[method-assign]
    try:
        result = env.engine().check(NAME)
    finally:
        FakeStore.add = real_add  # type: ignore[method-assign]
    assert result.error is None
    assert result.waiting and "soft error" in result.waiting
    data = state.load(env.config, NAME)
    assert data is not None and data.rollover.last_error and "128" in data.rollover.last_error
    env.settle()
    assert env.served() == 2


def test_a_repaired_record_is_logged_once(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """The audit finds a record deleted by hand and re-publishes it: one warning, not a
    'missing' line and then a 'repaired' line for the same record."""
    env.engine().install(NAME, env.settings)
    (record,) = env.records_of(1)
    env.dns.zone[OWNER].discard(record)
    env.now += env.settings.audit_interval
    engine = env.engine()
    engine.audit = True
    with caplog.at_level("INFO", logger="certbot_dane"):
        result = engine.check(NAME)
    assert result.steps == ["repaired 1 record(s) missing from DNS"]
    assert record in env.dns.records()
    lines = [r.getMessage() for r in caplog.records if record.data[:16] in r.getMessage()]
    assert len(lines) == 1 and "repaired: re-published 1 record(s)" in lines[0], lines


def test_a_changed_record_ttl_is_applied_by_the_same_run(env: Env) -> None:
    """certbot renew (no audits) with a lowered --dane-record-ttl: the run audits once,
    changes the TTL in DNS, and the next hold counts the old TTL."""
    env.engine().install(NAME, env.settings)
    assert env.dns.ttls[OWNER] == 60
    env.now += 10
    lowered = dataclasses.replace(env.settings, record_ttl=30)
    engine = env.engine()
    result = engine.install(NAME, lowered)
    assert result.steps == ["changed the TTL at 1 owner name(s) to 30 s"]
    assert env.dns.ttls[OWNER] == 30
    data = state.load(env.config, NAME)
    assert data is not None and data.settings.record_ttl == 30
    assert data.rollover.hold_floor == env.now + 60, "caches may hold the old TTL"
    assert [e.what for e in data.timeline][-1] == "ttl"
    audits_before = sum(o.queries for o in env.observers)
    env.engine().install(NAME, lowered)
    assert sum(o.queries for o in env.observers) == audits_before, "unchanged: no DNS"


def _shared_env(tmp_path: Path) -> tuple[Env, FakeLineage, Settings]:
    """Two lineages for one host name (as an RSA and an ECDSA certificate are),
    from one CA, with 311:25,211:25: one owner name, one shared 2 1 1 record."""
    env = Env(tmp_path)
    env.settings = replace(env.settings, targets="311:25,211:25")
    other = FakeLineage(env.config, "mail-second", [NAME])
    other.ca = env.lineage.ca
    env.lineage.renew()
    other.renew()
    return env, other, env.settings


def test_a_record_another_lineage_wants_is_not_deleted(tmp_path: Path) -> None:
    env, other, settings = _shared_env(tmp_path)
    env.engine().install(NAME, settings)
    env.engine().install("mail-second", settings)
    theirs = records_of(env.config, "mail-second", 1)
    assert theirs <= env.dns.records() and len(env.dns.records()) == 3
    env.lineage.ca = TinyCA()  # the first lineage's CA moves to another intermediate
    env.lineage.renew()
    env.settle()
    assert env.served() == 2
    assert theirs <= env.dns.records(), "the second lineage lost its 2 1 1 record"
    assert len(env.dns.records()) == 4


def test_a_shared_record_goes_with_the_last_lineage_that_wants_it(tmp_path: Path) -> None:
    env, other, settings = _shared_env(tmp_path)
    env.engine().install(NAME, settings)
    env.engine().install("mail-second", settings)
    shared = {r for r in env.dns.records() if r.usage == 2}
    for lineage in (env.lineage, other):
        lineage.ca = TinyCA()
    env.lineage.renew()
    env.settle()
    assert shared <= env.dns.records(), "the second lineage still serves a certificate of it"
    other.renew()
    for _ in range(10):
        env.engine().check("mail-second")
        env.now += 100
    assert not shared & env.dns.records(), "nobody wants it any more: it must go"
    assert len(env.dns.records()) == 4


def test_a_refused_add_claims_nothing(env: Env) -> None:
    env.engine().install(NAME, env.settings)
    env.lineage.renew()
    real_add = FakeStore.add

    def refused(self: FakeStore, records: object, ttl: int) -> None:
        raise StoreError("fake store: the server refused the update (REFUSED)")

    FakeStore.add = refused  # type: ignore[method-assign]
    try:
        result = env.engine().check(NAME)
    finally:
        FakeStore.add = real_add  # type: ignore[method-assign]
    assert result.error and "REFUSED" in result.error
    data = state.load(env.config, NAME)
    assert data is not None
    assert data.rollover.owned == frozenset(env.records_of(1)), "the refused records are not ours"
    env.settle()
    assert env.served() == 2 and env.dns.records() == env.records_of(2)
