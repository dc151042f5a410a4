"""``certbot-dane check``: the deferred step, --wait, --quiet, progress and the log file."""
from __future__ import annotations

import io
import re
import stat
import time
from pathlib import Path

import pytest

from certbot_dane import cli
from certbot_dane.engine import policy_of
from certbot_dane.rollover import hold_end
from tests.cli_support import (
    CliDeployment,
    host_for,
    keep_logging,  # noqa: F401 - a fixture, used by name
    one_error_line,
    run,
)
from tests.lab.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    return CliDeployment(lab, tmp_path, host_for(request))


def test_wait_runs_until_the_switch(dep: CliDeployment) -> None:
    dep.issue()
    dep.renew()
    assert dep.served() == 1
    began = time.monotonic()
    done = dep.cli("check", "--wait", "--interval", "1", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 30
    assert dep.served() == 2
    assert "switched to version 2" in done.stdout
    assert done.stderr == "", "no terminal: no progress line"
    row = dep.status()
    assert row["pending"] is None and row["state"] == "settled"
    # Repeated waiting lines are printed once, not at every check.
    assert done.stdout.count("waiting: hold") <= 1, done.stdout


def test_wait_gives_up_at_the_timeout(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dep = CliDeployment(lab, tmp_path, host_for(request), margin=120)
    dep.issue()
    dep.renew()
    began = time.monotonic()
    done = dep.cli("check", "--wait", "--interval", "1", "--timeout", "3")
    assert done.returncode == 1
    assert time.monotonic() - began < 20
    line = one_error_line(done)
    assert "gave up waiting after 3 s" in line and dep.host in line
    assert re.search(r"hold: .*, \d+ s left", line), line
    assert dep.served() == 1, "a timeout changes nothing"


def test_wait_with_nothing_pending_returns_at_once(dep: CliDeployment) -> None:
    dep.issue()
    done = dep.cli("check", "--wait", "--timeout", "5")
    assert done.returncode == 0
    assert done.stdout.strip() == f"{dep.host}: nothing to do"


def test_finish_within_switches_at_the_hold_end_in_one_run(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dep = CliDeployment(lab, tmp_path, host_for(request), margin=10)
    dep.issue()
    dep.renew()
    data = dep.lineage_file
    end = hold_end(data.rollover, None, policy_of(data.settings))
    done = dep.cli("check", "--finish-within", "60")
    assert done.returncode == 0, done.stderr
    assert dep.served() == 2
    assert done.stdout.splitlines() == [
        f"{dep.host}: nothing to do; waiting: hold: caches may still have the old RRset",
        f"{dep.host}: switched to version 2, retired 1 record(s)",
    ]
    assert done.stderr == ""
    (switched,) = dep.events("switched")[-1:]
    assert switched >= end, "never before the hold's end"
    assert dep.status()["state"] == "settled"


def test_quiet_prints_nothing_when_all_is_well(dep: CliDeployment) -> None:
    dep.issue()
    dep.renew()
    done = dep.cli("check", "--quiet", "--wait", "--interval", "1", "--timeout", "60")
    assert done.returncode == 0
    assert done.stdout == "" and done.stderr == ""
    assert dep.served() == 2
    # Accepted before the subcommand too.
    done = run(dep.config, dep.logs, "-q", "check")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_quiet_still_prints_errors(dep: CliDeployment) -> None:
    dep.issue()
    dep.renew()
    dep.renew()
    dep.repoint(2)  # by hand, to a version neither served nor pending
    done = dep.cli("check", "-q")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "changed by hand" in one_error_line(done)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal(
    dep: CliDeployment, monkeypatch: pytest.MonkeyPatch, keep_logging: None  # noqa: F811
) -> None:
    dep.issue()
    dep.renew()
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    argv = ["--config-dir", str(dep.config), "--logs-dir", str(dep.logs)]
    code = cli.main([*argv, "check", "--wait", "--interval", "1", "--timeout", "60"])
    assert code == 0
    shown = terminal.getvalue()
    assert "\rcertbot-dane: next check in" in shown
    assert dep.host in shown
    assert shown.endswith("\r\x1b[K"), "the progress line is cleared at the end"
    assert dep.served() == 2


def test_log_file_in_certbot_format(dep: CliDeployment) -> None:
    dep.issue()
    assert not dep.logs.exists()
    done = dep.cli("check")
    assert done.returncode == 0
    assert stat.S_IMODE(dep.logs.stat().st_mode) == 0o700
    log = dep.logs / "certbot-dane.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    lines = log.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    pattern = re.compile(rf"^{stamp}:(INFO|DEBUG|WARNING|ERROR):[\w.]+:")
    assert lines and all(pattern.match(line) for line in lines), lines
    assert any(f"{dep.host}: nothing to do" in line for line in lines)


def test_unwritable_log_dir_falls_back_to_stderr(dep: CliDeployment, tmp_path: Path) -> None:
    dep.issue()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    done = run(dep.config, blocker / "logs", "check")
    assert done.returncode == 0
    line = one_error_line(done)
    assert "warning: cannot write" in line and "logging to stderr only" in line
    assert f"{dep.host}: nothing to do" in done.stdout
