"""What a check costs, counted: DNS queries, store uses, state writes, workers.

The figures behind docs/benchmarks.md, asserted as counts over the in-memory
DNS of the engine tests. Wall time is measured by the scripts in bench/ and
never asserted here.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from certbot_dane import state
from certbot_dane.dns import StoreError
from certbot_dane.engine import EngineError, Result
from certbot_dane.tlsa import Record
from tests.fakes import FakeObserver, FakeStore
from tests.farm import Farm


@pytest.fixture
def farm(tmp_path: Path) -> Farm:
    return Farm(tmp_path)


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lineage of every state write, in order."""
    written: list[str] = []
    real = state.save
    lock = threading.Lock()

    def counting(config_dir: object, data: state.LineageFile) -> None:
        with lock:
            written.append(data.lineage)
        real(config_dir, data)  # type: ignore[arg-type]

    real_many = state.save_many

    def counting_many(config_dir: object, datas: list[state.LineageFile]) -> None:
        with lock:
            written.extend(data.lineage for data in datas)
        real_many(config_dir, datas)  # type: ignore[arg-type]

    monkeypatch.setattr(state, "save", counting)
    monkeypatch.setattr(state, "save_many", counting_many)
    return written


def test_settled_lineages_cost_no_dns_and_no_write(farm: Farm, saves: list[str]) -> None:
    farm.install_all()
    farm.reset()
    saves.clear()
    farm.now += 60
    results = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and r.settled for r in results.values())
    assert farm.queries() == 0
    assert farm.observers == [] and farm.stores == []
    assert saves == []


def test_install_with_the_same_settings_writes_nothing(farm: Farm, saves: list[str]) -> None:
    """certbot renew calls install (the dane_* options are in the renewal conf)."""
    farm.install_all()
    farm.reset()
    saves.clear()
    engine = farm.engine()
    for name in farm.names:
        assert engine.install(name, farm.settings()).settled
    assert saves == [] and farm.queries() == 0 and farm.stores == []
    changed = farm.settings()
    changed.hold_margin = 20
    engine.install(farm.names[0], changed)
    assert saves == [farm.names[0]]
    data = state.load(farm.config, farm.names[0])
    assert data is not None and data.settings.hold_margin == 20


def _age_stamps(farm: Farm) -> None:
    for name in farm.names:
        os.utime(state.state_dir(farm.config) / f"{name}.lock", (1000, 1000))


def test_a_check_that_changes_nothing_stamps_its_time_without_a_write(
    farm: Farm, saves: list[str]
) -> None:
    farm.install_all()
    saves.clear()
    _age_stamps(farm)
    farm.now += 60
    farm.engine().check_many(farm.names)
    assert saves == []
    for name in farm.names:
        checked = state.checked_at(farm.config, name)
        assert checked is not None and checked > 1000


def test_a_single_check_stamps_its_lineage_only(farm: Farm, saves: list[str]) -> None:
    farm.install_all()
    saves.clear()
    _age_stamps(farm)
    farm.engine().check(farm.names[0])
    assert saves == []
    stamps = {name: state.checked_at(farm.config, name) for name in farm.names}
    assert stamps[farm.names[0]] > 1000  # type: ignore[operator]
    assert all(stamps[name] == 1000 for name in farm.names[1:])


def test_an_audit_asks_once_for_every_lineage(
    farm: Farm, saves: list[str], counted: list[tuple[str, int]]
) -> None:
    """The timer's check audits settled lineages at their interval: one batched audit."""
    farm.install_all()
    farm.reset()
    counted.clear()
    saves.clear()
    farm.now += farm.settings().audit_interval
    results = farm.engine(audit=True).check_many(farm.names)
    assert all(isinstance(r, Result) and r.settled for r in results.values())
    assert counted == [("audit_many", len(farm.names))]
    assert sorted(saves) == sorted(farm.names)  # when each was audited
    counted.clear()
    saves.clear()
    farm.now += 60
    farm.engine(audit=True).check_many(farm.names)
    assert counted == [] and saves == []


def test_pending_checks_write_only_what_changed(farm: Farm, saves: list[str]) -> None:
    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()
    farm.reset()
    saves.clear()
    first = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and r.waiting and "hold" in r.waiting
               for r in first.values())
    assert len(saves) >= len(farm.names)  # claimed, then published and visible
    # Lineages with the same settings share one observer and one store; each
    # lineage still asks its own questions (prior TTL, then the observation).
    assert len(farm.observers) == 1 and len(farm.stores) == 1
    assert farm.queries() == 2 * len(farm.names)
    farm.reset()
    saves.clear()
    farm.now += 30  # inside the hold: the observation changes nothing
    again = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and r.waiting for r in again.values())
    assert farm.queries() == len(farm.names) and farm.stores == []
    assert saves == []
    farm.reset()
    farm.now += 100
    done = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and r.settled for r in done.values())
    assert farm.queries() == len(farm.names)


def test_check_many_keeps_the_order_and_isolates_failures(farm: Farm) -> None:
    farm.install_all()
    names = [*farm.names[:3], "unknown.example.com", *farm.names[3:]]
    results = farm.engine().check_many(names, workers=4)
    assert list(results) == names
    assert isinstance(results["unknown.example.com"], EngineError)
    assert all(isinstance(results[n], Result) for n in farm.names)
    sequential = farm.engine().check_many(names, workers=1)
    assert list(sequential) == names
    assert isinstance(sequential["unknown.example.com"], EngineError)


class CountingObserver(FakeObserver):
    """Records how many lineages each batched question carried."""

    calls: list[tuple[str, int]] = []

    def prior_ttl_many(self, groups):  # type: ignore[no-untyped-def]
        self.calls.append(("prior_ttl_many", len(groups)))
        return super().prior_ttl_many(groups)

    def observe_many(self, groups, names=None):  # type: ignore[no-untyped-def]
        self.calls.append(("observe_many", len(groups)))
        return super().observe_many(groups, names)

    def audit_many(self, groups):  # type: ignore[no-untyped-def]
        self.calls.append(("audit_many", len(groups)))
        return super().audit_many(groups)


class CountingStore(FakeStore):
    calls: list[tuple[str, int]] = []

    def list_many(self, owners):  # type: ignore[no-untyped-def]
        self.calls.append(("list_many", len(owners)))
        return super().list_many(owners)

    def add_many(self, items):  # type: ignore[no-untyped-def]
        self.calls.append(("add_many", len(items)))
        return super().add_many(items)

    def delete_many(self, items):  # type: ignore[no-untyped-def]
        self.calls.append(("delete_many", len(items)))
        return super().delete_many(items)


@pytest.fixture
def counted(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every batched store and observer call, with the number of items it carried."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(CountingObserver, "calls", calls)
    monkeypatch.setattr(CountingStore, "calls", calls)
    farm.observer_class = CountingObserver
    farm.store_class = CountingStore
    return calls


def test_a_check_of_many_lineages_is_one_batch_per_step(
    farm: Farm, counted: list[tuple[str, int]]
) -> None:
    """All pending lineages travel together: each step is one call for all of them."""
    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()
    counted.clear()
    n = len(farm.names)
    first = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and r.waiting for r in first.values())
    assert counted == [
        ("prior_ttl_many", n), ("list_many", n), ("add_many", n), ("observe_many", n)
    ]
    counted.clear()
    farm.now += 100
    done = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and r.settled for r in done.values())
    assert counted == [("observe_many", n), ("delete_many", n)]


def test_one_failing_lineage_in_a_batch_fails_alone(
    farm: Farm, counted: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()
    bad = f"_25._tcp.{farm.names[2]}."

    def add_many(self, items):  # type: ignore[no-untyped-def]
        return [
            StoreError("fake store: cannot add: REFUSED")
            if any(r.owner == bad for r in records)
            else FakeStore.add(self, records, ttl)
            for records, ttl in items
        ]

    monkeypatch.setattr(CountingStore, "add_many", add_many)
    results = farm.engine().check_many(farm.names)
    failed = {n for n, r in results.items() if isinstance(r, Result) and r.error}
    assert failed == {farm.names[2]}
    assert "REFUSED" in str(results[farm.names[2]].error)  # type: ignore[union-attr]
    others = [n for n in farm.names if n not in failed]
    for name in others:
        data = state.load(farm.config, name)
        assert data is not None and data.rollover.visible_since is not None
    data = state.load(farm.config, farm.names[2])
    assert data is not None and data.rollover.last_error and "REFUSED" in data.rollover.last_error


def test_a_store_call_that_raises_fails_only_its_batch(
    farm: Farm, counted: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error raised (not returned) by a batched call stops the lineages in that call."""
    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()

    def broken(self, owners):  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(CountingStore, "list_many", broken)
    before = list(farm.dns.operations)
    results = farm.engine().check_many(farm.names)
    assert all(
        isinstance(r, Result) and r.error and "Input/output error" in r.error
        for r in results.values()
    )
    assert farm.dns.operations == before  # nothing added


def test_a_lineage_locked_elsewhere_is_checked_once_its_lock_is_free(farm: Farm) -> None:
    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()
    busy = farm.names[0]
    taken = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with state.locked(farm.config, busy, 5):
            taken.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(5)
    threading.Timer(0.2, release.set).start()
    results = farm.engine().check_many(farm.names)
    holder.join()
    assert all(isinstance(r, Result) and r.waiting for r in results.values())
    data = state.load(farm.config, busy)
    assert data is not None and data.rollover.visible_since is not None


def test_a_shared_reload_command_runs_once_after_every_switch(farm: Farm, tmp_path: Path) -> None:
    """Lineages that switch in one check and share a reload command reload once,
    after all their links moved."""
    log = tmp_path / "reloads"
    settings = farm.settings()
    settings.reload = f"sh -c 'readlink {farm.config}/dane/*/current >> {log}; echo >> {log}'"
    engine = farm.engine()
    for name in farm.names:
        assert engine.install(name, settings).settled
    log.unlink(missing_ok=True)
    for lineage in farm.lineages.values():
        lineage.renew()
    farm.engine().check_many(farm.names)
    assert not log.exists()  # nothing switched yet: the hold
    farm.now += 100
    results = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and "reloaded" in r.steps for r in results.values())
    runs = [block.split() for block in log.read_text().split("\n\n") if block.strip()]
    assert len(runs) == 1
    assert len(runs[0]) == len(farm.names)
    assert len(set(runs[0])) == 1 and runs[0][0].endswith("/2")


def test_records_of_each_lineage_are_its_own(farm: Farm) -> None:
    """The concurrent run published one record per lineage, none twice."""
    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()
    farm.engine().check_many(farm.names, workers=4)
    adds = [r for op, r in farm.dns.operations if op == "add"]
    assert len(adds) == len(set(adds)) == 2 * len(farm.names)
    owners = {r.owner for r in adds}
    assert owners == {f"_25._tcp.{n}." for n in farm.names}
    assert all(isinstance(r, Record) for r in adds)
