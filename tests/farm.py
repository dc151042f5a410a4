"""Several lineages on one in-memory DNS, for tests of the engine shell.

Shared by the engine tests: counts (tests/test_engine_perf_counts.py), the
batched path (tests/test_engine_batch.py), and the crash instrumentation
they and tests/test_engine.py use.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from certbot_dane import danedir, state
from certbot_dane.engine import Engine, Result
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.certs import FakeLineage
from tests.fakes import FakeDNS, FakeObserver, FakeStore


class Farm:
    """``count`` lineages under one config dir, each renewed once."""

    def __init__(self, root: Path, count: int = 8, prefix: str = "l") -> None:
        self.config = root / "le"
        self.dns = FakeDNS()
        self.now = 1_000_000.0
        self.names = [f"{prefix}{i}.example.com" for i in range(count)]
        self.lineages = {n: FakeLineage(self.config, n, [n]) for n in self.names}
        self.renew_all()
        self.observers: list[FakeObserver] = []
        self.stores: list[FakeStore] = []
        self.observer_class: type[FakeObserver] = FakeObserver
        self.store_class: type[FakeStore] = FakeStore
        self._lock = threading.Lock()

    def settings(self) -> Settings:
        return Settings(
            targets="311:25",
            directory=str(self.config / "dane"),
            store="fake",
            hold_margin=10,
            record_ttl=60,
        )

    def engine(self, audit: bool = False) -> Engine:
        def observer(_settings: Settings) -> FakeObserver:
            obs = self.observer_class(self.dns)
            with self._lock:
                self.observers.append(obs)
            return obs

        def store(_settings: Settings, _config_dir: str) -> FakeStore:
            opened = self.store_class(self.dns)
            with self._lock:
                self.stores.append(opened)
            return opened

        return Engine(
            self.config,
            clock=lambda: self.now,
            store_factory=store,
            observer_factory=observer,  # type: ignore[arg-type]
            lock_timeout=5,
            audit=audit,
        )

    def install_all(self) -> None:
        engine = self.engine()
        for name in self.names:
            assert engine.install(name, self.settings()).settled

    def renew_all(self) -> None:
        for lineage in self.lineages.values():
            lineage.renew()

    def queries(self) -> int:
        return sum(o.queries for o in self.observers)

    def reset(self) -> None:
        self.observers.clear()
        self.stores.clear()

    def served(self, name: str) -> int | None:
        return danedir.served_version(self.config / "dane", name)

    def records_of(self, name: str, number: int) -> set[Record]:
        return records_of(self.config, name, number)

    def settle(self, checks: int = 10) -> None:
        """Checks with time passing until nothing is pending."""
        for _ in range(checks):
            results = self.engine().check_many(self.names)
            if all(isinstance(r, Result) and r.settled for r in results.values()):
                return
            self.now += 100
        raise AssertionError(f"not settled: {results}")


def records_of(config: Path, name: str, number: int) -> set[Record]:
    """The records of a lineage's served or pending version, from its state."""
    data = state.load(config, name)
    assert data is not None
    for version in (data.rollover.served, data.rollover.pending):
        if version is not None and version.number == number:
            return set(version.records)
    raise AssertionError(f"{name}: version {number} unknown")


def count_steps(
    dns: FakeDNS, monkeypatch: pytest.MonkeyPatch, writes: Iterable[tuple[object, str]]
) -> None:
    """Make each call of the named functions a step that may crash.

    Store operations already are (FakeDNS.tick); ``dns.steps`` counts them all.
    """
    dns.steps = 0  # type: ignore[attr-defined]
    real_tick = dns.tick

    def tick(what: str) -> None:
        dns.steps += 1  # type: ignore[attr-defined]
        real_tick(what)

    dns.tick = tick  # type: ignore[method-assign]
    def counted(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def step(*args: object, **kwargs: object) -> object:
            tick(name)
            return real(*args, **kwargs)

        return step

    for module, name in writes:
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
