"""certbot and certbot-dane commands as an administrator types them, good and bad.

Every bad input must give one clear line naming the problem and the fix, a
non-zero exit, and no change to DNS, links or state.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from certbot_dane import state
from certbot_dane.lineage import live_version
from tests.deployment import Deployment
from tests.lab.lab import Lab

pytestmark = pytest.mark.lab


def host_for(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    return f"{slug}.dane.test"


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Deployment:
    return Deployment(lab, tmp_path, host_for(request))


def assert_untouched(dep: Deployment) -> None:
    assert not (dep.config / "dane").exists(), "dane directory created"
    assert not (dep.config / "dane-state").exists() or not list(
        (dep.config / "dane-state").glob("*.json")
    ), "state written"
    assert dep.authoritative_records() == set(), "DNS changed"


BAD_RUN_OPTIONS = [
    (["--dane-tlsa", "411:25"], "usage 4 is not 2 (DANE-TA) or 3 (DANE-EE)"),
    (["--dane-tlsa", "311:99999"], "port 99999 is not in 1-65535"),
    (["--dane-tlsa", "311"], "expected UST:PORT"),
    (["--dane-credentials", "/nonexistent/rfc2136.ini"], "/nonexistent/rfc2136.ini does not exist"),
    (["--dane-resolver", "127.0.0.1:notaport"], "--dane-resolver"),
    (["--dane-nameservers", "127.0.0.1:53,:x"], "--dane-nameservers"),
    (["--dane-reload", "no-such-reload-program"], "not found or not executable"),
    (["--dane-record-ttl", "0"], "--dane-record-ttl: 0 is out of range"),
    (["--dane-dns", "carrier-pigeon"], "is not a known store"),
]


@pytest.mark.parametrize(("options", "message"), BAD_RUN_OPTIONS)
def test_bad_option_stops_before_anything_happens(
    dep: Deployment, options: list[str], message: str
) -> None:
    args = dep.dane_args()
    for i in range(0, len(options), 2):
        if options[i] in args:
            args[args.index(options[i]) + 1] = options[i + 1]
        else:
            args += options[i : i + 2]
    done = dep.certbot("run", *dep.dns_args(), *args, "-d", dep.host, ok=False)
    assert done.returncode != 0
    dane_lines = [line for line in done.stderr.splitlines() if "dane:" in line]
    assert len(dane_lines) == 1 and message in dane_lines[0], done.stderr
    assert not (dep.config / "live").exists(), "a certificate was issued despite the bad option"
    assert_untouched(dep)


def test_install_without_tlsa_is_refused(dep: Deployment) -> None:
    dep.certbot("certonly", *dep.dns_args(), "-d", dep.host)
    done = dep.certbot("install", "-i", "dane", "--cert-name", dep.host, ok=False)
    assert done.returncode != 0
    assert "no TLSA spec given: pass --dane-tlsa" in done.stderr
    assert_untouched(dep)


def test_install_then_the_advised_command_attaches_the_plugin(dep: Deployment) -> None:
    dep.certbot("certonly", *dep.dns_args(), "-d", dep.host)
    done = dep.certbot("install", "--cert-name", dep.host, *dep.dane_args())
    assert dep.served() == 1
    conf = dep.config / "renewal" / f"{dep.host}.conf"
    assert "installer = dane" not in conf.read_text()
    # certbot 2.3+ has reconfigure; older ones re-attach with a forced renew.
    advice = re.search(r"Run once: (certbot (?:reconfigure|renew) .*)", done.stdout)
    assert advice, done.stdout
    argv = shlex.split(advice.group(1))
    assert argv[1] in ("reconfigure", "renew")
    dep.certbot(*argv[1:])
    text = conf.read_text()
    assert "installer = dane" in text and "dane_tlsa = 311:25" in text
    dep.renew()
    # On certbot 2.1 the advised command was itself a renewal (version 2).
    live = live_version(dep.config, dep.host)[0]
    assert live == (2 if argv[1] == "reconfigure" else 3)
    assert dep.status()["pending"] == live, "renewals now call the plugin"
    dep.check_until_switched(live)


def test_prepare_problem_during_renew_keeps_the_installer(dep: Deployment, tmp_path: Path) -> None:
    own_ini = tmp_path / "dane-only.ini"
    own_ini.write_bytes(dep.ini.read_bytes())
    own_ini.chmod(0o600)
    dep.issue("--dane-credentials", str(own_ini))
    own_ini.unlink()
    done = dep.renew(ok=False)
    assert done.returncode != 0
    assert "dane-only.ini does not exist" in done.stderr
    conf = (dep.config / "renewal" / f"{dep.host}.conf").read_text()
    assert "installer = dane" in conf, "certbot dropped the installer"
    assert dep.served() == 1


def test_secrets_never_reach_logs_state_or_output(dep: Deployment, lab: Lab) -> None:
    outputs = [dep.issue(), dep.renew()]
    outputs.append(dep.check())
    outputs.append(dep.cli("status", "--json"))
    outputs.append(dep.cli("status"))
    secret = lab.tsig_secret
    for done in outputs:
        assert secret not in done.stdout + done.stderr
    scanned = 0
    for folder in (dep.config, dep.root / "logs", dep.root / "work"):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                assert secret.encode() not in path.read_bytes(), f"secret in {path}"
    assert scanned > 5
    assert secret.encode() in dep.ini.read_bytes(), "the scan would have found it"


def test_cli_unknown_lineage(dep: Deployment) -> None:
    dep.config.mkdir(parents=True)
    done = dep.cli("check", "--cert-name", "nope.example")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "'nope.example' is not managed" in done.stderr


def test_cli_missing_config_dir(dep: Deployment) -> None:
    done = dep.cli("status")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pass --config-dir" in done.stderr


def test_cli_damaged_state_is_reported_not_reset(dep: Deployment) -> None:
    dep.issue()
    path = state.state_path(dep.config, dep.host)
    path.write_text('{"format": 1, "lineage": ')
    before = path.read_bytes()
    links = dep.served()
    for command in (["check"], ["status"]):
        done = dep.cli(*command)
        assert done.returncode == 1, done
        assert done.stderr.count("\n") == 1
        assert str(path) in done.stderr and "move it aside" in done.stderr
    assert path.read_bytes() == before
    assert dep.served() == links
