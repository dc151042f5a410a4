"""What a check costs, counted: DNS queries, store uses, state writes, workers.

The figures behind docs/benchmarks.md, asserted as counts over the in-memory
DNS of the engine tests. Wall time is measured by the scripts in bench/ and
never asserted here.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from certbot_dane import state
from certbot_dane.engine import LAST_CHECK_REFRESH, Engine, EngineError, Result
from certbot_dane.observe import Observation
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.certs import FakeLineage
from tests.fakes import FakeDNS, FakeObserver, FakeStore

COUNT = 8


class Farm:
    """Several lineages under one config dir, on one in-memory DNS."""

    def __init__(self, root: Path, count: int = COUNT) -> None:
        self.config = root / "le"
        self.dns = FakeDNS()
        self.now = 1_000_000.0
        self.names = [f"l{i}.example.com" for i in range(count)]
        self.lineages = {n: FakeLineage(self.config, n, [n]) for n in self.names}
        for lineage in self.lineages.values():
            lineage.renew()
        self.observers: list[FakeObserver] = []
        self.stores: list[FakeStore] = []
        self.observer_class: type[FakeObserver] = FakeObserver
        self._lock = threading.Lock()

    def settings(self) -> Settings:
        return Settings(
            targets="311:25",
            directory=str(self.config / "dane"),
            store="fake",
            hold_margin=10,
            record_ttl=60,
        )

    def engine(self) -> Engine:
        def observer(_settings: Settings) -> FakeObserver:
            obs = self.observer_class(self.dns)
            with self._lock:
                self.observers.append(obs)
            return obs

        def store(_settings: Settings) -> FakeStore:
            opened = FakeStore(self.dns)
            with self._lock:
                self.stores.append(opened)
            return opened

        return Engine(
            self.config,
            clock=lambda: self.now,
            store_factory=store,
            observer_factory=observer,  # type: ignore[arg-type]
            lock_timeout=5,
        )

    def install_all(self) -> None:
        engine = self.engine()
        for name in self.names:
            assert engine.install(name, self.settings()).settled

    def queries(self) -> int:
        return sum(o.queries for o in self.observers)

    def reset(self) -> None:
        self.observers.clear()
        self.stores.clear()


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

    monkeypatch.setattr(state, "save", counting)
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


def test_last_check_is_written_once_per_refresh_interval(farm: Farm, saves: list[str]) -> None:
    farm.install_all()
    saves.clear()
    farm.now += LAST_CHECK_REFRESH - 1
    farm.engine().check_many(farm.names)
    assert saves == []
    farm.now += 2
    farm.engine().check_many(farm.names)
    assert sorted(saves) == sorted(farm.names)
    for name in farm.names:
        data = state.load(farm.config, name)
        assert data is not None and data.last_check == farm.now
    saves.clear()
    farm.now += 60
    farm.engine().check_many(farm.names)
    assert saves == []


def test_a_clock_set_back_refreshes_last_check(farm: Farm, saves: list[str]) -> None:
    farm.install_all()
    saves.clear()
    farm.now -= 10
    farm.engine().check(farm.names[0])
    assert saves == [farm.names[0]]


def test_pending_checks_write_only_what_changed(farm: Farm, saves: list[str]) -> None:
    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()
    farm.reset()
    saves.clear()
    first = farm.engine().check_many(farm.names)
    assert all(isinstance(r, Result) and r.waiting and "hold" in r.waiting
               for r in first.values())
    assert len(saves) >= len(farm.names)  # renewed, claimed, published, visible
    # One observer per lineage: prior TTL, then the observation.
    assert len(farm.observers) == len(farm.names)
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


class _Gate:
    """Counts observations in flight; lets them through ``parties`` at a time."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0


def test_check_many_observes_concurrently_within_the_bound(farm: Farm) -> None:
    workers = 4
    gate = _Gate(workers)

    class GatedObserver(FakeObserver):
        def observe(self, records: object) -> Observation:
            with gate.lock:
                gate.inside += 1
                gate.most = max(gate.most, gate.inside)
            try:
                # Passes only when `workers` lineages observe at the same time:
                # a sequential check_many would break the barrier.
                gate.barrier.wait()
                return super().observe(records)  # type: ignore[arg-type]
            finally:
                with gate.lock:
                    gate.inside -= 1

    farm.install_all()
    for lineage in farm.lineages.values():
        lineage.renew()
    farm.observer_class = GatedObserver
    results = farm.engine().check_many(farm.names, workers=workers)
    assert all(isinstance(r, Result) and r.error is None for r in results.values())
    assert gate.most == workers
    assert not gate.barrier.broken


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
