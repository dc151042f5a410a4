"""Tests for certbot_dane.settings: options -> checked Settings, offline."""
from __future__ import annotations

import base64
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from certbot_dane.settings import (
    DEFAULT_HOLD_MARGIN,
    SettingsError,
    cli_args,
    from_options,
    renewal_params,
)
from certbot_dane.state import Settings

SECRET = base64.b64encode(b"made-up secret of 32 bytes......").decode("ascii")
NAME = "mail.example.com"


def write_ini(path: Path, server: str = "192.0.2.53") -> Path:
    path.write_text(
        f"dns_rfc2136_server = {server}\n"
        "dns_rfc2136_port = 53\n"
        "dns_rfc2136_name = made-up-key.\n"
        f"dns_rfc2136_secret = {SECRET}\n"
        "dns_rfc2136_algorithm = HMAC-SHA256\n",
        encoding="ascii",
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    return write_ini(tmp_path / "rfc2136.ini")


@pytest.fixture
def config(tmp_path: Path, ini: Path) -> SimpleNamespace:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    return SimpleNamespace(
        config_dir=str(config_dir),
        authenticator="dns-rfc2136",
        dns_rfc2136_credentials=str(ini),
    )


def write_renewal_conf(config: SimpleNamespace, **params: str) -> Path:
    renewal = Path(config.config_dir) / "renewal"
    renewal.mkdir(exist_ok=True)
    path = renewal / f"{NAME}.conf"
    lines = ["version = 2.11.0", f"archive_dir = /etc/letsencrypt/archive/{NAME}", "",
             "[renewalparams]"]
    lines += [f"{key} = {value}" for key, value in params.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Valid options ------------------------------------------------------------------


def test_defaults(config: SimpleNamespace, ini: Path) -> None:
    settings = from_options({"tlsa": "311:25"}, config, NAME)
    assert settings == Settings(
        targets="311:25",
        directory=str(Path(config.config_dir) / "dane"),
        store="rfc2136",
        credentials=str(ini),
        resolver=None,
        nameservers=None,
        reload=None,
        record_ttl=None,
        hold_margin=DEFAULT_HOLD_MARGIN,
    )


def test_all_options(
    config: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_ini(tmp_path / "other.ini")
    options = {
        "tlsa": " 312:443@Mail.Example.com. , 311:25,311:25, 301:853/UDP",
        "dns": "rfc2136",
        "credentials": "other.ini",
        "directory": "links",
        "resolver": "127.0.0.1:5353",
        "nameservers": " 192.0.2.1 , [2001:db8::1]:5300,",
        "reload": "true --reload 'some arg'",
        "record_ttl": "300",
        "hold_margin": "0",
    }
    settings = from_options(options, config, NAME)
    assert settings.targets == "301:853/udp,311:25,312:443@mail.example.com"
    assert settings.directory == str(tmp_path / "links")
    assert Path(settings.directory).is_absolute()
    assert settings.credentials == str(tmp_path / "other.ini")
    assert settings.store == "rfc2136"
    assert settings.resolver == "127.0.0.1:5353"
    assert settings.nameservers == "192.0.2.1,[2001:db8::1]:5300"
    assert settings.reload == "true --reload 'some arg'"
    assert settings.record_ttl == 300
    assert settings.hold_margin == 0


def test_credentials_path_with_tilde(
    config: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = from_options({"tlsa": "311:25", "credentials": "~/rfc2136.ini"}, config, NAME)
    assert settings.credentials == str(tmp_path / "rfc2136.ini")


def test_credentials_from_renewal_conf(config: SimpleNamespace, ini: Path) -> None:
    """At renewal or `certbot install`, the config may lack the authenticator's
    options: they come from renewal/NAME.conf."""
    del config.dns_rfc2136_credentials
    config.authenticator = None
    write_renewal_conf(config, authenticator="dns-rfc2136", dns_rfc2136_credentials=str(ini))
    assert renewal_params(config.config_dir, NAME)["dns_rfc2136_credentials"] == str(ini)
    settings = from_options({"tlsa": "311:25"}, config, NAME)
    assert settings.store == "rfc2136"
    assert settings.credentials == str(ini)


def test_config_wins_over_renewal_conf(config: SimpleNamespace, ini: Path, tmp_path: Path) -> None:
    write_renewal_conf(config, authenticator="dns-rfc2136",
                       dns_rfc2136_credentials=str(tmp_path / "stale.ini"))
    assert from_options({"tlsa": "311:25"}, config, NAME).credentials == str(ini)


def test_renewal_params_absent_or_broken(config: SimpleNamespace) -> None:
    assert renewal_params(config.config_dir, None) == {}
    assert renewal_params(config.config_dir, NAME) == {}
    path = write_renewal_conf(config)
    path.write_text("[renewalparams\nbroken = = =\n")
    assert renewal_params(config.config_dir, NAME) == {}


def test_explicit_store_with_other_authenticator(config: SimpleNamespace, ini: Path) -> None:
    config.authenticator = "standalone"
    del config.dns_rfc2136_credentials
    settings = from_options(
        {"tlsa": "311:25", "dns": "rfc2136", "credentials": str(ini)}, config, NAME
    )
    assert (settings.store, settings.credentials) == ("rfc2136", str(ini))


# Bad options --------------------------------------------------------------------


def error_of(options: dict[str, Any], config: SimpleNamespace) -> str:
    with pytest.raises(SettingsError) as info:
        from_options({"tlsa": "311:25", **options}, config, NAME)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"tlsa": "411:25"}, ["--dane-tlsa", "usage 4 is not 2 (DANE-TA) or 3 (DANE-EE)"]),
        ({"tlsa": "311"}, ["--dane-tlsa", "expected UST:PORT[/PROTO][@HOST]"]),
        ({"tlsa": "311:0"}, ["--dane-tlsa", "port 0"]),
        ({"tlsa": ""}, ["--dane-tlsa", "pass --dane-tlsa"]),
        ({"tlsa": "311:25@*.example.com"}, ["--dane-tlsa", "wildcard"]),
        ({"dns": "pigeon"}, ["--dane-dns 'pigeon' is not a known store", "rfc2136"]),
        ({"credentials": "/nonexistent/creds.ini"},
         ["credentials file /nonexistent/creds.ini does not exist", "--dane-credentials"]),
        ({"resolver": "127.0.0.1:99999"}, ["--dane-resolver", "expected ADDR or ADDR:PORT"]),
        ({"resolver": "127.0.0.1:dns"}, ["--dane-resolver", "'127.0.0.1:dns'"]),
        ({"nameservers": "192.0.2.1,192.0.2.2:0"},
         ["--dane-nameservers", "'192.0.2.2:0'", "expected ADDR or ADDR:PORT"]),
        ({"reload": "no-such-program-for-dane --now"},
         ["--dane-reload", "'no-such-program-for-dane'", "give its full path"]),
        ({"reload": "systemctl 'reload"}, ["--dane-reload", "cannot split"]),
        ({"record_ttl": 0}, ["--dane-record-ttl", "0 is out of range (1 to 2147483647)"]),
        ({"record_ttl": "-5"}, ["--dane-record-ttl", "-5 is out of range"]),
        ({"record_ttl": "2147483648"}, ["--dane-record-ttl", "out of range"]),
        ({"record_ttl": "five"}, ["--dane-record-ttl", "'five' is not a whole number"]),
        ({"record_ttl": "1.5"}, ["--dane-record-ttl", "not a whole number"]),
        ({"hold_margin": -1}, ["--dane-hold-margin", "-1 is out of range (0 to"]),
        ({"hold_margin": "soon"}, ["--dane-hold-margin", "not a whole number"]),
    ],
)
def test_bad_option(config: SimpleNamespace, options: dict[str, Any], expected: list[str]) -> None:
    message = error_of(options, config)
    for part in expected:
        assert part in message


def test_reload_program_not_executable(config: SimpleNamespace, tmp_path: Path) -> None:
    script = tmp_path / "reload.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    message = error_of({"reload": str(script)}, config)
    assert "--dane-reload" in message and "not found or not executable" in message
    script.chmod(0o755)
    assert from_options({"tlsa": "311:25", "reload": str(script)}, config, NAME).reload == str(
        script
    )


def test_authenticator_without_store(config: SimpleNamespace) -> None:
    config.authenticator = "standalone"
    message = error_of({}, config)
    assert "authenticator 'standalone' has no matching store" in message
    assert "--dane-dns rfc2136 --dane-credentials PATH" in message


def test_no_authenticator_at_all(config: SimpleNamespace) -> None:
    config.authenticator = None
    message = error_of({}, config)
    assert "authenticator None" in message and "--dane-dns" in message


def test_no_credentials_anywhere(config: SimpleNamespace) -> None:
    del config.dns_rfc2136_credentials
    message = error_of({}, config)
    assert "no credentials file" in message
    assert "--dane-credentials PATH" in message


def test_credentials_file_from_renewal_conf_is_gone(
    config: SimpleNamespace, tmp_path: Path
) -> None:
    del config.dns_rfc2136_credentials
    gone = tmp_path / "removed.ini"
    write_renewal_conf(config, authenticator="dns-rfc2136", dns_rfc2136_credentials=str(gone))
    message = error_of({}, config)
    assert f"credentials file {gone} does not exist" in message


def test_bad_credentials_content(config: SimpleNamespace, tmp_path: Path) -> None:
    bad = write_ini(tmp_path / "bad.ini", server="ns1.example.com")
    message = error_of({"credentials": str(bad)}, config)
    assert "dns_rfc2136_server" in message and "must be an IP address" in message
    assert SECRET not in message


def test_same_target_with_and_without_host(config: SimpleNamespace) -> None:
    settings = from_options({"tlsa": "311:25,311:25@mail.example.com"}, config, NAME)
    assert settings.targets == "311:25,311:25@mail.example.com"


def test_resolver_must_be_an_address(config: SimpleNamespace) -> None:
    message = error_of({"resolver": "resolver.example.net:53"}, config)
    assert "--dane-resolver" in message


# cli_args -----------------------------------------------------------------------


def test_cli_args() -> None:
    assert cli_args({}) == ""
    assert cli_args(
        {
            "tlsa": "311:25,312:443@mail.example.com",
            "dns": None,
            "reload": "systemctl reload postfix",
            "record_ttl": 300,
            "hold_margin": 0,
            "credentials": "/etc/my creds.ini",
        }
    ) == (
        "--dane-tlsa 311:25,312:443@mail.example.com "
        "--dane-reload 'systemctl reload postfix' "
        "--dane-record-ttl 300 "
        "--dane-hold-margin 0 "
        "--dane-credentials '/etc/my creds.ini'"
    )


def test_cli_args_round_trip(config: SimpleNamespace, ini: Path) -> None:
    """The printed arguments parse back (shell-split) to the same options."""
    import shlex

    options = {"tlsa": "311:25", "reload": "true 'a b'", "credentials": str(ini)}
    words = shlex.split(cli_args(options))
    parsed = {words[i][len("--dane-"):].replace("-", "_"): words[i + 1]
              for i in range(0, len(words), 2)}
    assert parsed == options
    assert from_options(parsed, config, NAME).reload == "true 'a b'"


def test_reload_found_on_path(config: SimpleNamespace) -> None:
    assert shutil.which("true") is not None
    assert from_options({"tlsa": "311:25", "reload": "true"}, config, NAME).reload == "true"
