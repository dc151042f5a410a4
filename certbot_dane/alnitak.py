"""``certbot-dane import-alnitak``: turn an alnitak config into certbot commands.

It only reads the file and prints: the administrator runs the commands when
the services are ready to read the new dane directory, because switching a
service to another certificate path is a change only they can make. The
parser follows alnitak's own reading of ``/etc/alnitak.conf``: global keys,
``[lineage]`` sections, ``tlsa = UST PORT [PROTO] [DOMAIN]`` in any order
after UST, and ``api`` lines where the last one in a context wins. Secrets
written inline in the config are never echoed.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from . import tlsa

DEFAULT_LE_DIR = "/etc/letsencrypt"
DEFAULT_DANE_DIR = "/etc/alnitak/dane"
DEFAULT_TTL = 86400

_SECTION = re.compile(r"^\s*\[\s*(?P<name>[^\]\s]+)\s*\]\s*(#.*)?$")
_PARAM = re.compile(r"^\s*(?P<key>\w+)\s*=\s*(?P<value>[^#]*)(#.*)?$")
_BLANK = re.compile(r"^\s*(#.*)?$")
_UST = re.compile(r"^[23][01][012]$")
_PROTO = re.compile(r"^(tcp|udp|sctp|dccp)$", re.IGNORECASE)
_DOMAIN = re.compile(r"^([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]+\.?$")
GLOBAL_KEYS = ("dane_directory", "letsencrypt_directory", "ttl", "log_level")


class AlnitakConfigError(Exception):
    """The file cannot be read or parsed; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Tlsa:
    ust: str
    port: int
    proto: str
    domain: str | None

    def spec(self, section: str) -> str:
        text = f"{self.ust}:{self.port}"
        if self.proto != "tcp":
            text += f"/{self.proto}"
        return f"{text}@{(self.domain or section).rstrip('.').lower()}"


@dataclass
class Section:
    name: str
    tlsa: list[Tlsa] = field(default_factory=list)
    api: list[str] | None = None
    #: A tlsa line was there, valid or not: a bad one is reported on its own.
    tlsa_lines: int = 0


@dataclass
class AlnitakConfig:
    path: str
    dane_directory: str = DEFAULT_DANE_DIR
    letsencrypt_directory: str = DEFAULT_LE_DIR
    ttl: int | None = None
    api: list[str] | None = None
    sections: dict[str, Section] = field(default_factory=dict)


def _tlsa(inputs: list[str]) -> Tlsa:
    if not inputs:
        raise ValueError("tlsa: no record given")
    if len(inputs) > 4:
        raise ValueError(f"tlsa: superfluous input {' '.join(inputs[4:])!r}")
    if not _UST.match(inputs[0]):
        raise ValueError(f"tlsa: {inputs[0]!r} is not usage/selector/matching type [23][01][012]")
    port: int | None = None
    proto: str | None = None
    domain: str | None = None
    for item in inputs[1:]:
        if port is None and item.isdigit() and 0 < int(item) < 65536:
            port = int(item)
        elif proto is None and _PROTO.match(item):
            proto = item.lower()
        elif domain is None and _DOMAIN.match(item):
            domain = item
        else:
            raise ValueError(f"tlsa: cannot tell what {item!r} is (port, protocol or domain)")
    if port is None:
        raise ValueError("tlsa: no port given")
    return Tlsa(inputs[0], port, proto or "tcp", domain)


def parse(text: str, path: str) -> AlnitakConfig:
    """Parse the config; every problem is collected, then raised together."""
    config = AlnitakConfig(path)
    errors: list[str] = []
    section: Section | None = None
    default_tlsa: list[Tlsa] = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        if _BLANK.match(line):
            continue
        match = _SECTION.match(line)
        if match:
            name = match["name"].lower()
            section = config.sections.setdefault(name, Section(name))
            if not section.tlsa:
                section.tlsa.extend(default_tlsa)
            continue
        match = _PARAM.match(line)
        if not match:
            errors.append(f"{where}: not a [section] nor a key = value line: {line.strip()[:40]!r}")
            continue
        key = match["key"]
        if key == "tlsa" and section is not None:
            section.tlsa_lines += 1
        try:
            inputs = shlex.split(match["value"])
        except ValueError as err:
            errors.append(f"{where}: {key}: {err}")
            continue
        try:
            _apply(config, section, default_tlsa, key, inputs)
        except ValueError as err:
            errors.append(f"{where}: {err}")
    for name, sec in config.sections.items():
        if not sec.tlsa and not sec.tlsa_lines:
            errors.append(f"{path}: [{name}] has no tlsa line")
    if not config.sections and not errors:
        errors.append(f"{path}: no [lineage] section: there is nothing to migrate")
    if errors:
        raise AlnitakConfigError(errors)
    return config


def _apply(
    config: AlnitakConfig,
    section: Section | None,
    default_tlsa: list[Tlsa],
    key: str,
    inputs: list[str],
) -> None:
    if key == "tlsa":
        record = _tlsa(inputs)
        (section.tlsa if section is not None else default_tlsa).append(record)
    elif key == "api":
        if not inputs:
            raise ValueError("api: no scheme given")
        if section is not None:
            section.api = inputs
        else:
            config.api = inputs
    elif key in GLOBAL_KEYS:
        if len(inputs) != 1:
            raise ValueError(f"{key}: expected one value, got {len(inputs)}")
        if key == "ttl":
            if not inputs[0].isdigit():
                raise ValueError(f"ttl: {inputs[0]!r} is not a whole number of seconds")
            config.ttl = int(inputs[0])
        elif key == "dane_directory":
            config.dane_directory = inputs[0]
        elif key == "letsencrypt_directory":
            config.letsencrypt_directory = inputs[0]
    else:
        raise ValueError(f"unknown key {key!r}")


def load(path: str | Path) -> AlnitakConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise AlnitakConfigError([f"cannot read {path}: {err.strerror}"]) from None
    except UnicodeDecodeError:
        raise AlnitakConfigError([f"cannot read {path}: not a UTF-8 text file"]) from None
    return parse(text, str(path))


# Output -------------------------------------------------------------------


def _store_args(
    name: str, api: list[str] | None, notes: list[str], config_dir: str
) -> list[str]:
    if not api:
        notes.append(
            f"[{name}] has no api line: add --dane-dns and --dane-credentials for the store "
            "that can update its zone"
        )
        return []
    scheme, rest = api[0], api[1:]
    if scheme == "exec":
        if rest and rest[0].startswith("uid:"):
            notes.append(
                f"[{name}]: alnitak ran the exec program as {rest[0][4:]!r}; certbot-dane "
                "runs it as certbot's user: wrap it (e.g. 'runuser -u USER -- PROG') if it "
                "must not run as root"
            )
            rest = rest[1:]
        if not rest:
            notes.append(f"[{name}]: 'api = exec' names no program")
            return ["--dane-dns", "exec"]
        return ["--dane-dns", "exec", "--dane-exec", shlex.join(rest)]
    if scheme == "cloudflare":
        if len(rest) == 1 and ":" not in rest[0]:
            notes.append(
                f"[{name}]: {rest[0]} is in alnitak's format (email=, key=, zone=), but "
                "certbot-dane reads certbot-dns-cloudflare's INI: once alnitak is gone, "
                "replace its content with dns_cloudflare_api_token = TOKEN (a token that "
                "may edit the zone's DNS), mode 0600, or write a new file and change "
                "--dane-credentials"
            )
            return ["--dane-dns", "cloudflare", "--dane-credentials", rest[0]]
        ini = f"{config_dir}/cloudflare-{name}.ini"
        notes.append(
            f"[{name}]: the Cloudflare login written in the alnitak config is not repeated "
            f"here; create {ini} (mode 0600) with dns_cloudflare_api_token = TOKEN"
        )
        return ["--dane-dns", "cloudflare", "--dane-credentials", ini]
    notes.append(f"[{name}]: api scheme {scheme!r} has no certbot-dane counterpart; pick a store")
    return []


def commands(config: AlnitakConfig) -> str:
    """The migration as text: commands to run and notes to read; changes nothing."""
    notes: list[str] = []
    out = [
        f"# certbot-dane commands for the lineages in {config.path}",
        "# Nothing has been changed. Read the notes at the end before running them.",
    ]
    base = ["certbot"]
    config_dir = config.letsencrypt_directory.rstrip("/") or "/"
    if config_dir != DEFAULT_LE_DIR:
        base_opts = ["--config-dir", config_dir]
    else:
        base_opts = []
    for name, section in config.sections.items():
        specs = []
        for record in section.tlsa:
            spec = record.spec(name)
            try:
                tlsa.parse_spec(spec)
            except tlsa.SpecError as err:
                notes.append(f"[{name}]: skipped {spec}: {err}")
                continue
            if spec not in specs:
                specs.append(spec)
        if not specs:
            continue
        dane = ["-i", "dane", "--dane-tlsa", ",".join(specs)]
        dane += _store_args(name, section.api or config.api, notes, config_dir)
        out.append("")
        out.append(f"# {name}")
        for verb in ("install", "reconfigure"):
            argv = [*base, verb, *base_opts, "--cert-name", name, *dane]
            out.append(shlex.join(argv))
    dane_dir = f"{config_dir}/dane"
    notes += [
        "certbot 2.1 has no 'reconfigure': use 'certbot renew --cert-name NAME "
        "--force-renewal' with the same -i dane options instead (it issues a new "
        "certificate).",
        "Each --dane-tlsa spec ends in @HOST because alnitak published at the section "
        "name (or the tlsa line's domain) only; drop @HOST to publish for every DNS name "
        "of the certificate.",
        f"Services must read {dane_dir}/NAME/combined.pem (or fullchain.pem and "
        f"privkey.pem there) instead of {config.dane_directory}/NAME/...: change their "
        "configuration after 'certbot install' and reload them; add --dane-reload "
        "\"COMMAND\" so later switches reload them too.",
        "There is no fixed wait: the hold is computed from the TTLs seen in DNS (the old "
        "RRset's TTL, or the zone's negative TTL, plus --dane-hold-margin, 60 s by "
        "default)"
        + (f"; alnitak's 'ttl = {config.ttl}' has no counterpart." if config.ttl else "."),
        "Before pointing a service at the new directory, run 'certbot-dane verify "
        "--cert-name NAME' (with --connect once it serves from there): 'certbot install' "
        "pins the certificate live/ shows at once, and its record must be visible first.",
        "Visibility is checked through a DNSSEC-validating resolver (AD bit): add "
        "--dane-resolver ADDR if the system's resolver does not validate.",
        "Then remove alnitak's pre_hook and renew_hook from renewal/NAME.conf and its "
        "cron job, and let 'certbot-dane check' run from a timer instead. Never run both "
        "tools on one lineage.",
    ]
    out.append("")
    out.append("# Notes")
    out.extend(f"# - {note}" for note in notes)
    return "\n".join(out)
