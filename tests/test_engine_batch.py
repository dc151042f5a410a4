"""Many lineages in one run: crash safety and limits of the batched path.

The single-lineage crash test (tests/test_engine.py) goes through the same
code with one lineage; here several lineages travel together, so the batched
writes (state files made durable together, staged copies, link flips) and
the batched store calls are the steps a crash may fall between.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_dane import danedir, durable, engine, state
from certbot_dane.engine import Engine, Result
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.certs import FakeLineage
from tests.fakes import Crash, FakeDNS, FakeObserver, FakeStore


class Hosts:
    """``count`` lineages under one config dir, on one in-memory DNS."""

    def __init__(self, root: Path, count: int) -> None:
        self.config = root / "le"
        self.dns = FakeDNS()
        self.now = 1_000_000.0
        self.names = [f"h{i}.example.com" for i in range(count)]
        self.lineages = {n: FakeLineage(self.config, n, [n]) for n in self.names}
        for lineage in self.lineages.values():
            lineage.renew()
        self.settings = Settings(
            targets="311:25",
            directory=str(self.config / "dane"),
            store="fake",
            hold_margin=10,
            record_ttl=60,
        )

    def engine(self) -> Engine:
        return Engine(
            self.config,
            clock=lambda: self.now,
            store_factory=lambda _s: FakeStore(self.dns),
            observer_factory=lambda _s: FakeObserver(self.dns),  # type: ignore[arg-type,return-value]
            lock_timeout=5,
        )

    def install(self) -> None:
        eng = self.engine()
        for name in self.names:
            eng.install(name, self.settings)

    def renew(self) -> None:
        for lineage in self.lineages.values():
            lineage.renew()

    def served(self, name: str) -> int | None:
        return danedir.served_version(self.settings.directory, name)

    def records_of(self, name: str, number: int) -> set[Record]:
        data = state.load(self.config, name)
        assert data is not None
        for version in (data.rollover.served, data.rollover.pending):
            if version is not None and version.number == number:
                return set(version.records)
        raise AssertionError(f"{name}: version {number} unknown")

    def settle(self, checks: int = 10) -> None:
        for _ in range(checks):
            results = self.engine().check_many(self.names)
            if all(isinstance(r, Result) and r.settled for r in results.values()):
                return
            self.now += 100
        raise AssertionError(f"not settled: {results}")


def _instrument(hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write the batched run makes counts as a step that may crash."""
    hosts.dns.steps = 0  # type: ignore[attr-defined]
    real_tick = hosts.dns.tick

    def tick(what: str) -> None:
        hosts.dns.steps += 1  # type: ignore[attr-defined]
        real_tick(what)

    hosts.dns.tick = tick  # type: ignore[method-assign]

    def counted(module: object, name: str) -> None:
        real = getattr(module, name)

        def step(*args: object, **kwargs: object) -> object:
            tick(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, step)

    for module, name in (
        (state, "save"),
        (state, "save_many"),
        (state, "atomic_write"),
        (danedir, "stage_many"),
        (danedir, "switch"),
        (danedir, "prune"),
        (durable, "flush"),
    ):
        counted(module, name)


def _rollover(hosts: Hosts) -> None:
    """Renew every lineage, check, wait out the hold, check."""
    hosts.renew()
    hosts.engine().check_many(hosts.names)
    hosts.now += 1000
    hosts.engine().check_many(hosts.names)


@pytest.mark.parametrize("count", [3, durable.BATCH_MIN])
def test_crash_between_every_two_steps_of_a_batched_rollover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """With fewer lineages than BATCH_MIN the files are fsynced one by one;
    with BATCH_MIN or more they are flushed together."""
    counting = Hosts(tmp_path / "count", count)
    counting.install()
    _instrument(counting, monkeypatch)
    _rollover(counting)
    total: int = counting.dns.steps  # type: ignore[attr-defined]
    monkeypatch.undo()
    assert total > 4 * count
    for k in range(total):
        hosts = Hosts(tmp_path / f"crash{k}", count)
        hosts.install()
        _instrument(hosts, monkeypatch)
        hosts.dns.crash_at = k
        with pytest.raises(Crash):
            _rollover(hosts)
        for name in hosts.names:
            served = hosts.served(name)
            assert served is not None, f"crash at step {k}: {name} serves nothing"
            # The promise at the crash: each served version's records are in DNS.
            assert hosts.records_of(name, served) <= hosts.dns.records(), f"crash at step {k}"
        monkeypatch.undo()
        hosts.now += 1000
        hosts.settle()
        for name in hosts.names:
            assert hosts.served(name) == 2, f"crash at step {k}: {name}"
        wanted = set().union(*(hosts.records_of(n, 2) for n in hosts.names))
        assert hosts.dns.records() == wanted, f"crash at step {k}: leftovers"


def test_lineages_are_checked_in_batches_bounded_by_the_descriptor_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = Hosts(tmp_path, 7)
    hosts.install()
    hosts.renew()
    monkeypatch.setattr(engine, "MAX_BATCH", 3)
    held: list[int] = []
    real_run = Engine._run

    def run(self: Engine, contexts: list) -> list[Result]:  # type: ignore[type-arg]
        held.append(len(contexts))
        return real_run(self, contexts)

    monkeypatch.setattr(Engine, "_run", run)
    results = hosts.engine().check_many(hosts.names)
    assert held == [3, 3, 1]
    assert all(isinstance(r, Result) and r.waiting for r in results.values())


def test_batch_size_follows_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.resource, "getrlimit", lambda _which: (1024, 4096))
    assert engine.batch_size() == engine.MAX_BATCH
    monkeypatch.setattr(engine.resource, "getrlimit", lambda _which: (256, 4096))
    assert engine.batch_size() == 64
    monkeypatch.setattr(engine.resource, "getrlimit", lambda _which: (2, 4096))
    assert engine.batch_size() == 1


def test_a_staging_failure_stops_only_its_lineage(tmp_path: Path) -> None:
    hosts = Hosts(tmp_path, 4)
    hosts.install()
    hosts.renew()
    broken = hosts.names[1]
    archive = hosts.config / "archive" / broken
    (archive / "fullchain2.pem").unlink()
    results = hosts.engine().check_many(hosts.names)
    error = results[broken].error  # type: ignore[union-attr]
    assert error is not None and "lacks fullchain" in error
    others = [results[n] for n in hosts.names if n != broken]
    assert all(isinstance(r, Result) and r.error is None and r.waiting for r in others)
    assert hosts.served(broken) == 1
