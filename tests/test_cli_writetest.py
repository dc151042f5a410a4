"""``certbot-dane verify --write-test``: the credentials add and delete a record, nothing else."""
from __future__ import annotations

import base64
import os
import re
import secrets
from pathlib import Path

import dns.rdatatype
import pytest

from certbot_dane import state
from tests.cli_support import CliDeployment, host_for, one_error_line, run
from tests.lab.lab import Lab
from tests.netfakes import misbehaving_server

ADDED = re.compile(r"^(?P<owner>\S+) (?P<ttl>\d+) IN TLSA 3 1 1 (?P<data>[0-9a-f]{64})$")


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    dep = CliDeployment(lab, tmp_path, host_for(request, "wrt"))
    dep.issue()
    return dep


def links(dep: CliDeployment) -> dict[str, str]:
    """Every symbolic link under the dane and live directories, and its target."""
    found = {}
    for top in (dep.config / "dane", dep.config / "live"):
        for path in top.rglob("*"):
            if path.is_symlink():
                found[str(path)] = os.readlink(path)
    return found


def serial(lab: Lab) -> int:
    response = lab.auth_query(lab.zone, "SOA")
    return next(rd.serial for rrset in response.answer
                if rrset.rdtype == dns.rdatatype.SOA for rd in rrset)


def set_nameservers(dep: CliDeployment, nameservers: str) -> None:
    """As if the lineage had been set up with --dane-nameservers NAMESERVERS."""
    data = state.load(dep.config, dep.host)
    assert data is not None
    data.settings.nameservers = nameservers
    state.save(dep.config, data)


@pytest.mark.lab
def test_adds_sees_deletes_and_changes_nothing_else(dep: CliDeployment, lab: Lab) -> None:
    before = dep.snapshot(), links(dep), dep.authoritative_records()
    first_serial = serial(lab)
    done = dep.cli("verify", "--write-test", "--cert-name", dep.host)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 5, lines
    assert all(line.startswith(f"{dep.host}: ") for line in lines)
    steps = [line.removeprefix(f"{dep.host}: ") for line in lines]
    assert steps[0] == f"store opened: rfc2136 (credentials {dep.ini})"
    added = ADDED.match(steps[1].removeprefix("added "))
    assert added, steps[1]
    assert added["owner"] == dep.owner
    # The TTL of the RRset already there, which the lineage published.
    assert int(added["ttl"]) == lab.record_ttl
    assert re.fullmatch(r"seen on 1/1 authoritative servers after \d+\.\d s", steps[2]), steps
    assert steps[3] == "deleted the test record"
    assert re.fullmatch(r"gone from 1/1 authoritative servers after \d+\.\d s", steps[4]), steps
    assert (dep.snapshot(), links(dep), dep.authoritative_records()) == before
    assert not any(added["data"] in r for r in dep.authoritative_records())
    # One update added it and one deleted it: the zone changed twice at least.
    assert serial(lab) >= first_serial + 2


@pytest.mark.lab
def test_refused_credentials(dep: CliDeployment, lab: Lab) -> None:
    wrong = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    text = dep.ini.read_text().replace(lab.tsig_secret, wrong)
    assert wrong in text
    dep.ini.write_text(text)
    before = dep.snapshot(), links(dep), dep.authoritative_records()
    first_serial = serial(lab)
    done = dep.cli("verify", "--write-test", "--cert-name", dep.host)
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith(
        f"certbot-dane: {dep.host}: write test failed adding the test record: rfc2136 store: "
    )
    # The store's message names the file and the key to fix, once.
    assert "(BADSIG)" in line and f"set dns_rfc2136_secret in {dep.ini} " in line
    assert line.count(str(dep.ini)) == 1
    opened = f"{dep.host}: store opened: rfc2136 (credentials {dep.ini})"
    assert done.stdout.splitlines() == [opened]
    log = (dep.logs / "certbot-dane.log").read_text()
    for secret in (wrong, lab.tsig_secret):
        assert secret not in done.stdout + done.stderr + log
    assert (dep.snapshot(), links(dep), dep.authoritative_records()) == before
    assert serial(lab) == first_serial


@pytest.mark.lab
def test_silent_authoritative_server(dep: CliDeployment, lab: Lab) -> None:
    with misbehaving_server(None) as silent:
        set_nameservers(dep, f"127.0.0.1:{lab.auth_port},127.0.0.1:{silent}")
        before = dep.snapshot(), links(dep), dep.authoritative_records()
        done = dep.cli("verify", "--write-test", "--cert-name", dep.host, "--timeout", "2")
    assert done.returncode == 1
    line = one_error_line(done)
    assert (
        f"{dep.host}: write test failed waiting for the test record: seen on 1/2 authoritative "
        "servers after 2 s: "
    ) in line
    assert f"at 127.0.0.1:{silent}: timed out" in line
    steps = [line.removeprefix(f"{dep.host}: ") for line in done.stdout.splitlines()]
    assert len(steps) == 4, steps
    assert steps[0].startswith("store opened: ")
    assert steps[1].startswith("added ")
    assert steps[2] == "deleted the test record"
    assert re.fullmatch(
        r"gone from the 1 of 2 authoritative servers that served it after \d+\.\d s", steps[3]
    ), steps
    data = ADDED.match(steps[1].removeprefix("added "))
    assert data
    assert (dep.snapshot(), links(dep), dep.authoritative_records()) == before
    assert not any(data["data"] in r for r in dep.authoritative_records())


@pytest.mark.lab
def test_missing_credentials_file(dep: CliDeployment) -> None:
    dep.ini.unlink()
    done = dep.cli("verify", "--write-test", "--cert-name", dep.host)
    assert done.returncode == 1
    line = one_error_line(done)
    assert f"{dep.host}: write test failed opening the store: rfc2136 store:" in line
    assert str(dep.ini) in line
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--write-test"], "--write-test tests one lineage: add --cert-name NAME"),
        (["--write-test", "--cert-name", "x.example", "--connect", "127.0.0.1:25"],
         "--write-test tests DNS only: drop --connect"),
        (["--write-test", "--cert-name", "x.example", "--json"],
         "--write-test tests DNS only: drop --json"),
    ],
)
def test_bad_usage(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "config").mkdir()
    done = run(tmp_path / "config", tmp_path / "logs", "verify", *args)
    assert done.returncode == 2
    assert one_error_line(done) == f"certbot-dane: {message}"
    assert done.stdout == ""

