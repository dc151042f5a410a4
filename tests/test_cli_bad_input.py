"""Bad input to every ``certbot-dane`` subcommand: one clear line, the right code, no change.

Exit 2 for usage, an unknown lineage or an unreadable config dir; exit 1 for
a damaged state file (it names the file and the way out, and is never reset).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_dane import state
from tests.cli_support import CliDeployment, host_for, one_error_line, run
from tests.lab.lab import Lab

pytestmark = pytest.mark.lab

NEEDS_LINEAGE = [
    ["check", "--cert-name", "{x}"],
    ["status", "--cert-name", "{x}"],
    ["verify", "--cert-name", "{x}"],
    ["reset", "--cert-name", "{x}"],
    ["print", "--cert-name", "{x}"],
    ["print", "{x}"],
]
NEEDS_CONFIG = [["check"], ["status"], ["verify"], ["reset", "--cert-name", "x"], ["print"]]


@pytest.fixture(scope="module")
def dep(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> CliDeployment:
    """One issued lineage shared by the tests here; none of them may change it."""
    root = tmp_path_factory.mktemp("bad-input")
    dep = CliDeployment(lab, root, "cli-bad-input.dane.test")
    dep.issue()
    return dep


def unchanged(dep: CliDeployment) -> tuple[tuple[bytes, int | None, list[str]], set[str]]:
    return dep.snapshot(), dep.authoritative_records()


@pytest.mark.parametrize("command", NEEDS_LINEAGE, ids=lambda c: " ".join(c[:-1]))
def test_unknown_lineage(dep: CliDeployment, command: list[str]) -> None:
    before = unchanged(dep)
    done = dep.cli(*[c.format(x="nope.dane.test") for c in command])
    assert done.returncode == 2
    line = one_error_line(done)
    assert "'nope.dane.test'" in line and "managed" in line
    assert done.stdout == ""
    assert unchanged(dep) == before


@pytest.mark.parametrize("command", NEEDS_CONFIG, ids=lambda c: c[0])
def test_config_dir_missing_or_not_a_directory(tmp_path: Path, command: list[str]) -> None:
    missing = run(tmp_path / "nowhere", tmp_path / "logs", *command)
    assert missing.returncode == 2
    assert "does not exist; pass --config-dir" in one_error_line(missing)
    a_file = tmp_path / "file"
    a_file.write_text("")
    done = run(a_file, tmp_path / "logs", *command)
    assert done.returncode == 2
    assert f"config dir {a_file} is not a directory" in one_error_line(done)


@pytest.mark.parametrize(
    "command",
    [["check"], ["status"], ["verify"], ["reset", "--cert-name", "{x}"], ["print", "{x}"]],
    ids=lambda c: c[0],
)
def test_damaged_state_is_reported_never_reset(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest, command: list[str]
) -> None:
    dep = CliDeployment(lab, tmp_path, host_for(request, "dmg"))
    dep.issue()
    path = state.state_path(dep.config, dep.host)
    path.write_text('{"format": 1, "lineage": ')
    before = path.read_bytes(), dep.served(), dep.authoritative_records()
    done = dep.cli(*[c.format(x=dep.host) for c in command])
    assert done.returncode == 1, done
    line = one_error_line(done)
    assert str(path) in line and "move it aside" in line
    assert (path.read_bytes(), dep.served(), dep.authoritative_records()) == before


def test_unreadable_certificate_file(dep: CliDeployment, tmp_path: Path) -> None:
    done = dep.cli("print", f"311:25:{tmp_path / 'absent.pem'}")
    assert done.returncode == 2
    assert f"cannot read certificate {tmp_path / 'absent.pem'}: no such file" in one_error_line(
        done
    )


def test_connect_target_that_does_not_answer(dep: CliDeployment) -> None:
    before = unchanged(dep)
    done = dep.cli("verify", "--cert-name", dep.host, "--connect", "127.0.0.1:9", "--timeout", "2")
    assert done.returncode == 1
    assert "endpoint 127.0.0.1:9 does not answer" in one_error_line(done)
    assert unchanged(dep) == before


def test_bad_numbers_are_usage_errors(dep: CliDeployment) -> None:
    for args in (["check", "--wait", "--timeout", "0"], ["print", "--ttl", "-5", dep.host]):
        done = dep.cli(*args)
        assert done.returncode == 2
        assert "error:" in done.stderr


def test_unknown_subcommand(dep: CliDeployment) -> None:
    done = dep.cli("frobnicate")
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr
