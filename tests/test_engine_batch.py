"""Many lineages in one run: crash safety and limits of the batched path.

The single-lineage crash test (tests/test_engine.py) goes through the same
code with one lineage; here several lineages travel together, so the batched
writes (state files made durable together, staged copies, link flips) and
the batched store calls are the steps a crash may fall between.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_dane import danedir, dnsio, durable, engine, state
from certbot_dane.engine import Engine, Result
from tests.fakes import Crash
from tests.farm import Farm, count_steps


def _instrument(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write the batched run makes counts as a step that may crash."""
    count_steps(
        farm.dns,
        monkeypatch,
        [
            (state, "save"),
            (state, "save_many"),
            (state, "atomic_write"),
            (danedir, "stage_many"),
            (danedir, "switch"),
            (danedir, "prune"),
            (durable, "flush"),
        ],
    )


def _rollover(farm: Farm) -> None:
    """Renew every lineage, check, wait out the hold, check."""
    farm.renew_all()
    farm.engine().check_many(farm.names)
    farm.now += 1000
    farm.engine().check_many(farm.names)


@pytest.mark.parametrize("count", [3, durable.BATCH_MIN])
def test_crash_between_every_two_steps_of_a_batched_rollover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """With fewer lineages than BATCH_MIN the files are fsynced one by one;
    with BATCH_MIN or more they are flushed together."""
    counting = Farm(tmp_path / "count", count)
    counting.install_all()
    _instrument(counting, monkeypatch)
    _rollover(counting)
    total: int = counting.dns.steps  # type: ignore[attr-defined]
    monkeypatch.undo()
    assert total > 4 * count
    for k in range(total):
        farm = Farm(tmp_path / f"crash{k}", count)
        farm.install_all()
        _instrument(farm, monkeypatch)
        farm.dns.crash_at = k
        with pytest.raises(Crash):
            _rollover(farm)
        for name in farm.names:
            served = farm.served(name)
            assert served is not None, f"crash at step {k}: {name} serves nothing"
            # The promise at the crash: each served version's records are in DNS.
            assert farm.records_of(name, served) <= farm.dns.records(), f"crash at step {k}"
        monkeypatch.undo()
        farm.now += 1000
        farm.settle()
        for name in farm.names:
            assert farm.served(name) == 2, f"crash at step {k}: {name}"
        wanted = set().union(*(farm.records_of(n, 2) for n in farm.names))
        assert farm.dns.records() == wanted, f"crash at step {k}: leftovers"


def test_lineages_are_checked_in_batches_bounded_by_the_descriptor_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    farm = Farm(tmp_path, 7)
    farm.install_all()
    farm.renew_all()
    monkeypatch.setattr(engine, "MAX_BATCH", 3)
    held: list[int] = []
    real_run = Engine._run

    def run(self: Engine, contexts: list) -> list[Result]:  # type: ignore[type-arg]
        held.append(len(contexts))
        return real_run(self, contexts)

    monkeypatch.setattr(Engine, "_run", run)
    results = farm.engine().check_many(farm.names)
    assert held == [3, 3, 1]
    assert all(isinstance(r, Result) and r.waiting for r in results.values())


def test_batch_size_follows_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnsio.resource, "getrlimit", lambda _which: (1024, 4096))
    assert engine.batch_size() == engine.MAX_BATCH
    monkeypatch.setattr(dnsio.resource, "getrlimit", lambda _which: (256, 4096))
    assert engine.batch_size() == 64
    monkeypatch.setattr(dnsio.resource, "getrlimit", lambda _which: (2, 4096))
    assert engine.batch_size() == 1


def test_a_staging_failure_stops_only_its_lineage(tmp_path: Path) -> None:
    farm = Farm(tmp_path, 4)
    farm.install_all()
    farm.renew_all()
    broken = farm.names[1]
    archive = farm.config / "archive" / broken
    (archive / "fullchain2.pem").unlink()
    results = farm.engine().check_many(farm.names)
    error = results[broken].error  # type: ignore[union-attr]
    assert error is not None and "lacks fullchain" in error
    others = [results[n] for n in farm.names if n != broken]
    assert all(isinstance(r, Result) and r.error is None and r.waiting for r in others)
    assert farm.served(broken) == 1
