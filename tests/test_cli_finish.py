"""``certbot-dane check --finish-within``: the timer's check that finishes holds ending soon.

Over the in-memory DNS of tests/farm.py, with the engine's clock in the
test's hands: the waits of the command advance it instead of sleeping. The
lab test of the same command is in tests/test_cli_check.py.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from certbot_dane import cli, state
from certbot_dane.engine import Engine, Result
from tests.cli_support import keep_logging  # noqa: F401 - a fixture, used by name
from tests.farm import Farm

HOLD = 70.0  # the farm's hold: record TTL 60 s plus margin 10 s


class Clock:
    """The farm's clock, moved by the command's waits; each wait is recorded."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.waits.append(seconds)
        self.farm.now += seconds


class CountingEngine:
    """The farm's engine, with the lineages of each check_many recorded."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.clock = engine.clock
        self.batches: list[list[str]] = []

    def check_many(self, names: list[str]) -> dict[str, Result | Exception]:
        self.batches.append(list(names))
        return self.engine.check_many(names)


def args(finish_within: float, quiet: bool = False) -> argparse.Namespace:
    return argparse.Namespace(
        finish_within=finish_within, quiet=quiet, config_dir="/le", logs_dir="/logs"
    )


@pytest.fixture
def farm(tmp_path: Path) -> Farm:
    farm = Farm(tmp_path, count=3)
    farm.install_all()
    return farm


def finish(
    farm: Farm, names: list[str], within: float, quiet: bool = False
) -> tuple[int, Clock, CountingEngine]:
    clock = Clock(farm)
    engine = CountingEngine(farm.engine(audit=True))
    code = cli._check_finishing(
        args(within, quiet), engine, names, sleep=clock.sleep  # type: ignore[arg-type]
    )
    return code, clock, engine


def switched_at(farm: Farm, name: str) -> float:
    data = state.load(farm.config, name)
    assert data is not None
    return max(e.time for e in data.timeline if e.what == "switched")


def hold_end(farm: Farm, name: str) -> float:
    data = state.load(farm.config, name)
    assert data is not None and data.rollover.visible_since is not None
    return data.rollover.visible_since + HOLD


def publish(farm: Farm, names: list[str]) -> None:
    """The renewals' first check (as certbot renew's plugin run): records out, hold begun."""
    for name in names:
        farm.lineages[name].renew()
    results = farm.engine().check_many(names)
    for name in names:
        outcome = results[name]
        assert isinstance(outcome, Result) and outcome.waiting_for == "hold", outcome


def test_a_hold_ending_within_the_time_is_finished_at_its_end(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    name = farm.names[0]
    publish(farm, [name])
    end = hold_end(farm, name)
    farm.now += 30  # the timer's run comes 30 s into the hold
    code, clock, engine = finish(farm, [name], within=240)
    assert code == 0
    assert farm.served(name) == 2
    assert end <= switched_at(farm, name) <= end + 1
    assert clock.waits == [pytest.approx(HOLD - 30 + cli.HOLD_END_SLACK)]
    assert engine.batches == [[name], [name]]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{name}: nothing to do; waiting: hold")
    assert lines[1].startswith(f"{name}: switched to version 2")
    assert len(lines) == 2


def test_a_hold_ending_after_the_time_is_left_to_the_next_run(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    name = farm.names[0]
    publish(farm, [name])
    code, clock, engine = finish(farm, [name], within=HOLD - 1)
    assert code == 0
    assert clock.waits == [] and engine.batches == [[name]]
    assert farm.served(name) == 1
    assert "waiting: hold" in capsys.readouterr().out


def test_a_hold_ending_after_the_time_gets_a_check_armed_at_its_end(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed: list[tuple[str, float, float]] = []
    monkeypatch.setattr(
        cli.wakeup, "arm", lambda name, at, now, *_: armed.append((name, at, now)) or True
    )
    name = farm.names[0]
    publish(farm, [name])
    code, clock, _ = finish(farm, [name], within=HOLD - 1)
    assert code == 0 and clock.waits == []
    assert armed == [(name, hold_end(farm, name), farm.now)]


def test_a_hold_ending_exactly_at_the_time_is_finished(farm: Farm) -> None:
    name = farm.names[0]
    publish(farm, [name])
    code, clock, _ = finish(farm, [name], within=HOLD)
    assert code == 0 and farm.served(name) == 2 and len(clock.waits) == 1


class Stdout(io.StringIO):
    """Records how much had been flushed when the command first waited."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()
        super().flush()


def test_other_lineages_are_printed_and_flushed_before_the_wait(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    holding, *others = farm.names
    publish(farm, [holding])
    out = Stdout()
    monkeypatch.setattr("sys.stdout", out)
    seen_at_wait: list[str] = []
    clock = Clock(farm)

    def sleep(seconds: float) -> None:
        seen_at_wait.append(out.flushed)
        clock.sleep(seconds)

    engine = farm.engine(audit=True)
    assert cli._check_finishing(args(240), engine, farm.names, sleep=sleep) == 0
    assert len(seen_at_wait) == 1
    before = seen_at_wait[0].splitlines()
    assert sorted(line.split(":")[0] for line in before) == sorted(farm.names)
    assert all(f"{name}: nothing to do" in before for name in others), before
    assert "switched" not in seen_at_wait[0]
    assert f"{holding}: switched to version 2" in out.getvalue()


def test_holds_are_finished_each_at_its_own_end_and_only_the_due_lineages_checked(
    farm: Farm,
) -> None:
    first, second, idle = farm.names
    publish(farm, [first])
    farm.now += 20
    publish(farm, [second])
    ends = {name: hold_end(farm, name) for name in (first, second)}
    code, clock, engine = finish(farm, farm.names, within=240)
    assert code == 0
    assert engine.batches == [[first, second, idle], [first], [second]]
    for name, end in ends.items():
        assert farm.served(name) == 2
        assert end <= switched_at(farm, name) <= end + 1
    assert farm.served(idle) == 1
    slack = cli.HOLD_END_SLACK
    assert clock.waits == [pytest.approx(HOLD - 20 + slack), pytest.approx(20.0)]


def test_quiet_prints_nothing_and_still_switches(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    name = farm.names[0]
    publish(farm, [name])
    code, _, _ = finish(farm, farm.names, within=240, quiet=True)
    assert code == 0 and farm.served(name) == 2
    assert capsys.readouterr() == ("", "")


def test_a_failure_at_the_hold_end_is_one_line_and_exit_1(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    name = farm.names[0]
    publish(farm, [name])
    clock = Clock(farm)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        farm.dns.down = True  # DNS fails when the hold ends

    engine = farm.engine(audit=True)
    code = cli._check_finishing(args(240, quiet=True), engine, [name], sleep=sleep)
    assert code == 1
    assert farm.served(name) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"certbot-dane: {name}: "), lines
    assert "timed out" in lines[0]


def test_a_failing_lineage_does_not_stop_the_others_from_finishing(
    farm: Farm, capsys: pytest.CaptureFixture[str]
) -> None:
    holding, broken, _ = farm.names
    publish(farm, [holding])
    state.state_path(farm.config, broken).write_text("{not json")
    code, _, _ = finish(farm, farm.names, within=240, quiet=True)
    assert code == 1
    assert farm.served(holding) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and broken in lines[0], lines


def test_the_wait_spans_the_hold_on_the_engine_clock_not_the_wall_clock(farm: Farm) -> None:
    """The farm's clock is far from the wall clock: a wait computed from time.time()
    would be hours long or none at all."""
    name = farm.names[0]
    publish(farm, [name])
    _, clock, _ = finish(farm, [name], within=240)
    assert clock.waits == [pytest.approx(HOLD + cli.HOLD_END_SLACK)]


def test_finish_within_and_wait_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_logging: None  # noqa: F811
) -> None:
    config = tmp_path / "le"
    config.mkdir()
    argv = ["--config-dir", str(config), "--logs-dir", str(tmp_path / "logs")]
    code = cli.main([*argv, "check", "--wait", "--finish-within", "240"])
    assert code == cli.EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "--finish-within" in lines[0] and "drop one of them" in lines[0]


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_finish_within_must_be_a_positive_number_of_seconds(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--config-dir", str(tmp_path), "check", "--finish-within", value])
    assert exit_.value.code == cli.EXIT_USAGE
    assert "--finish-within" in capsys.readouterr().err
