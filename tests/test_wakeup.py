"""A check armed at the end of a hold (certbot_dane.wakeup)."""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_dane import wakeup

FAKE = str(Path(__file__).parent / "bin" / "fake-systemd-run")


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake systemd-run's record of its command lines; its commands never run."""
    log = tmp_path / "systemd-run.log"
    monkeypatch.setenv(wakeup.ENVIRONMENT, FAKE)
    monkeypatch.setenv("FAKE_SYSTEMD_RUN_LOG", str(log))
    monkeypatch.setattr(wakeup, "certbot_dane", lambda: "/bin/true")
    return log


def test_nothing_is_armed_where_systemd_does_not_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(wakeup.ENVIRONMENT, raising=False)
    monkeypatch.setattr(wakeup, "SYSTEMD_DIR", tmp_path / "no-systemd")
    assert wakeup.program() is None
    assert wakeup.arm("mail.example.com", 1060.0, 1000.0, "/etc/letsencrypt", "/var/log") is False


def test_a_check_of_the_lineage_is_armed_for_the_end_of_its_hold(record: Path) -> None:
    assert wakeup.arm("mail.example.com", 1059.2, 1000.0, "/etc/le", "/var/log/le") is True
    (line,) = record.read_text().splitlines()
    assert line.split() == [
        "--quiet",
        "--collect",
        "--unit=certbot-dane-hold-mail.example.com-1059",
        "--on-active=61s",
        "--timer-property=AccuracySec=1s",
        "/bin/true",
        "--config-dir",
        "/etc/le",
        "--logs-dir",
        "/var/log/le",
        "--quiet",
        "check",
        "--cert-name",
        "mail.example.com",
    ]


def test_arming_the_same_hold_twice_is_refused_quietly(record: Path) -> None:
    assert wakeup.arm("mail.example.com", 1060.0, 1000.0, "/etc/le", "/var/log") is True
    assert wakeup.arm("mail.example.com", 1060.0, 1010.0, "/etc/le", "/var/log") is False
    assert len(record.read_text().splitlines()) == 2


def test_a_program_that_cannot_run_arms_nothing_and_raises_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(wakeup.ENVIRONMENT, str(tmp_path / "missing"))
    assert wakeup.arm("mail.example.com", 1060.0, 1000.0, "/etc/le", "/var/log") is False


def test_unit_names_keep_only_characters_systemd_allows() -> None:
    assert wakeup.unit_name("xn--bcher-kva.example/x y", 12.9) == (
        "certbot-dane-hold-xn--bcher-kva.example_x_y-12"
    )
