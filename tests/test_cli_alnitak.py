"""``certbot-dane import-alnitak``: alnitak configs become certbot commands, nothing else."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from certbot_dane import alnitak, tlsa
from certbot_dane.installer import Installer
from tests.cli_support import one_error_line, run

EXEC_CONF = """\
# alnitak.conf with a global exec api
dane_directory = /etc/alnitak/dane
ttl = 86400
log_level = verbose
api = exec /usr/local/bin/dns-manager --zone "example.com"

[ mail.example.com ]   # the mail server
tlsa = 311 25
tlsa = 201 25 mail.example.com
tlsa = 311 tcp 465

[www.example.com]
tlsa = 312 443
tlsa = 300 udp 8443
tlsa = 211 www.example.com 443 tcp
"""

CLOUDFLARE_CONF = """\
letsencrypt_directory = /srv/letsencrypt
api = cloudflare email:admin@example.com key:SEKRIT-GLOBAL-KEY

[mx1.example.net]
tlsa = 311 25
api = cloudflare /etc/alnitak/cloudflare.login

[mx2.example.net]
tlsa = 311 25
"""

UID_CONF = """\
[smtp.example.org]
tlsa = 311 25
api = exec uid:nobody /usr/local/bin/nsupdate-tlsa -k /etc/tsig.key
"""


def cli(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "alnitak.conf"
    conf.write_text(text)
    return run(tmp_path / "config", tmp_path / "logs", "import-alnitak", str(conf))


def commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if line.startswith("certbot ")]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def plugin_options() -> set[str]:
    names: set[str] = set()

    def add(name: str, **_: Any) -> None:
        names.add(f"--dane-{name}")

    Installer.add_parser_arguments(add)
    return names


def test_exec_api(tmp_path: Path) -> None:
    done = cli(tmp_path, EXEC_CONF)
    assert done.returncode == 0, done.stderr
    argvs = commands(done.stdout)
    assert [a[:4] for a in argvs] == [
        ["certbot", "install", "--cert-name", "mail.example.com"],
        ["certbot", "reconfigure", "--cert-name", "mail.example.com"],
        ["certbot", "install", "--cert-name", "www.example.com"],
        ["certbot", "reconfigure", "--cert-name", "www.example.com"],
    ]
    mail, _, www, _ = argvs
    assert option(mail, "--dane-tlsa") == (
        "311:25@mail.example.com,201:25@mail.example.com,311:465@mail.example.com"
    )
    assert option(www, "--dane-tlsa") == (
        "312:443@www.example.com,300:8443/udp@www.example.com,211:443@www.example.com"
    )
    for argv in argvs:
        assert argv[argv.index("-i") + 1] == "dane"
        assert option(argv, "--dane-dns") == "exec"
        assert shlex.split(option(argv, "--dane-exec")) == [
            "/usr/local/bin/dns-manager", "--zone", "example.com",
        ]
        assert "--config-dir" not in argv, "the default letsencrypt directory"
        tlsa.parse_specs(option(argv, "--dane-tlsa"))
        given = {a for a in argv if a.startswith("--dane-")}
        assert given <= plugin_options()
    notes = done.stdout.split("# Notes")[1]
    assert "alnitak's 'ttl = 86400' has no counterpart" in notes
    assert "computed from the TTLs" in notes
    assert "/etc/letsencrypt/dane/NAME/combined.pem" in notes
    assert "/etc/alnitak/dane/NAME" in notes
    assert "pre_hook" in notes and "renew_hook" in notes


def test_cloudflare_apis_and_no_secret_echoed(tmp_path: Path) -> None:
    done = cli(tmp_path, CLOUDFLARE_CONF)
    assert done.returncode == 0, done.stderr
    assert "SEKRIT" not in done.stdout + done.stderr
    mx1, mx1_reconf, mx2, _ = commands(done.stdout)
    for argv in (mx1, mx1_reconf, mx2):
        assert option(argv, "--config-dir") == "/srv/letsencrypt"
        assert option(argv, "--dane-dns") == "cloudflare"
    assert option(mx1, "--dane-credentials") == "/etc/alnitak/cloudflare.login"
    assert option(mx2, "--dane-credentials") == "/srv/letsencrypt/cloudflare-mx2.example.net.ini"
    assert "dns_cloudflare_api_token" in done.stdout
    assert "is in alnitak's format" in done.stdout
    assert "/srv/letsencrypt/dane/NAME/combined.pem" in done.stdout


def test_exec_as_another_user(tmp_path: Path) -> None:
    done = cli(tmp_path, UID_CONF)
    assert done.returncode == 0, done.stderr
    install, _ = commands(done.stdout)
    assert option(install, "--dane-exec") == "/usr/local/bin/nsupdate-tlsa -k /etc/tsig.key"
    assert "ran the exec program as 'nobody'" in done.stdout


def test_section_without_api(tmp_path: Path) -> None:
    done = cli(tmp_path, "[a.example.com]\ntlsa = 311 25\n")
    assert done.returncode == 0
    (install, _) = commands(done.stdout)
    assert "--dane-dns" not in install
    assert "[a.example.com] has no api line" in done.stdout


def test_global_tlsa_applies_to_later_sections(tmp_path: Path) -> None:
    done = cli(tmp_path, "api = exec /bin/true\ntlsa = 311 25\n[a.example.com]\n[b.example.com]\n")
    assert done.returncode == 0, done.stderr
    specs = [option(a, "--dane-tlsa") for a in commands(done.stdout)]
    assert specs == ["311:25@a.example.com"] * 2 + ["311:25@b.example.com"] * 2


def test_nothing_is_changed(tmp_path: Path) -> None:
    conf = tmp_path / "alnitak.conf"
    conf.write_text(EXEC_CONF)
    before = conf.stat().st_mtime_ns
    listing = sorted(p.name for p in tmp_path.iterdir())
    done = run(tmp_path / "config", tmp_path / "logs", "import-alnitak", str(conf))
    assert done.returncode == 0
    assert conf.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*listing, "logs"])
    assert not (tmp_path / "config").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a.example.com]\ntlsa = 411 25\n", "alnitak.conf:2: tlsa: '411' is not"),
        ("[a.example.com]\ntlsa = 311\n", "alnitak.conf:2: tlsa: no port given"),
        ("[a.example.com]\ntlsa = 311 25 tcp a.example.com extra\n", "superfluous input"),
        ("[a.example.com]\ntlsa = 311 25 !!\n", "cannot tell what '!!' is"),
        ("colour = blue\n[a.example.com]\ntlsa = 311 25\n", "alnitak.conf:1: unknown key 'colour'"),
        ("this is not a config\n", "alnitak.conf:1: not a [section] nor a key = value line"),
        ("[a.example.com]\n", "[a.example.com] has no tlsa line"),
        ("# only comments\n", "no [lineage] section"),
        ('[a.example.com]\ntlsa = 311 25\napi = exec "unclosed\n', "alnitak.conf:3: api:"),
    ],
)
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    done = cli(tmp_path, text)
    assert done.returncode == 2
    assert message in one_error_line(done)
    assert done.stdout == ""


def test_every_problem_is_listed(tmp_path: Path) -> None:
    done = cli(tmp_path, "[a.example.com]\ntlsa = 411 25\ntlsa = 311\n")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 2, done.stderr  # one line per bad tlsa line


def test_unreadable_file(tmp_path: Path) -> None:
    done = run(tmp_path / "config", tmp_path / "logs", "import-alnitak", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert f"cannot read {tmp_path / 'nope'}" in one_error_line(done)
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe\x00junk")
    done = run(tmp_path / "config", tmp_path / "logs", "import-alnitak", str(binary))
    assert done.returncode == 2
    assert "not a UTF-8 text file" in one_error_line(done)


def test_parse_matches_alnitak_reading() -> None:
    config = alnitak.parse(EXEC_CONF, "x.conf")
    assert config.ttl == 86400 and config.dane_directory == "/etc/alnitak/dane"
    assert list(config.sections) == ["mail.example.com", "www.example.com"]
    assert config.sections["www.example.com"].tlsa[2] == alnitak.Tlsa(
        "211", 443, "tcp", "www.example.com"
    )
